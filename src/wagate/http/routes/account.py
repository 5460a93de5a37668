"""Settings and state of the instance's account."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from wagate.bootstrap import Runtime
from wagate.core.model import ChatId, ChatKind, Instance, InstanceState
from wagate.http.deps import authenticated, get_runtime, json_body_doc, json_response
from wagate.wire.avatar import fold_avatar
from wagate.wire.bodies import validate_body
from wagate.wire.requests import SetSettingsBody
from wagate.wire.settings import apply_settings, settings_view

router = APIRouter(tags=["account"])
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
PREFIX = "/waInstance{idInstance}"


@router.get(PREFIX + "/getSettings/{apiTokenInstance}", summary="Instance settings")
async def get_settings(
    instance: Annotated[Instance, Depends(authenticated("getSettings"))],
) -> Response:
    return json_response(settings_view(instance))


@router.post(
    PREFIX + "/setSettings/{apiTokenInstance}",
    openapi_extra=json_body_doc(SetSettingsBody),
    summary="Change instance settings; they take effect at once",
)
async def set_settings(
    request: Request,
    runtime: RuntimeDep,
    instance: Annotated[Instance, Depends(authenticated("setSettings"))],
) -> Response:
    body = validate_body(SetSettingsBody, await request.body())
    await runtime.settings_service.change(instance, apply_settings(instance.settings, body))
    return json_response({"saveSettings": True})


@router.get(PREFIX + "/getStateInstance/{apiTokenInstance}", summary="Authorization state")
async def get_state_instance(
    runtime: RuntimeDep,
    instance: Annotated[Instance, Depends(authenticated("getStateInstance"))],
) -> Response:
    state = await runtime.avatars.engine_for(instance).state(instance)
    return json_response({"stateInstance": state.value})


@router.get(PREFIX + "/getWaSettings/{apiTokenInstance}", summary="Own avatar, phone and state")
async def get_wa_settings(
    runtime: RuntimeDep,
    instance: Annotated[Instance, Depends(authenticated("getWaSettings"))],
) -> Response:
    state = await runtime.avatars.engine_for(instance).state(instance)
    avatar, phone = "", ""
    if state is InstanceState.AUTHORIZED:
        phone = instance.phone
        lookup = await runtime.avatars.lookup(instance, ChatId(ChatKind.PERSONAL, instance.phone))
        avatar = fold_avatar(lookup)["urlAvatar"]
    return json_response(
        {
            "avatar": avatar,
            "phone": phone,
            "stateInstance": state.value,
            "deviceId": "",
        }
    )


@router.get(PREFIX + "/reboot/{apiTokenInstance}", summary="Restart the instance")
async def reboot(
    instance: Annotated[Instance, Depends(authenticated("reboot"))],
) -> Response:
    return json_response({"isReboot": True})


@router.get(PREFIX + "/logout/{apiTokenInstance}", summary="Unlink the account")
async def logout(
    runtime: RuntimeDep,
    instance: Annotated[Instance, Depends(authenticated("logout"))],
) -> Response:
    await runtime.instances.set_state(instance.id, InstanceState.NOT_AUTHORIZED)
    return json_response({"isLogout": True})


@router.get(PREFIX + "/qr/{apiTokenInstance}", summary="QR code for linking an account")
async def qr(
    runtime: RuntimeDep,
    instance: Annotated[Instance, Depends(authenticated("qr"))],
) -> Response:
    state = await runtime.avatars.engine_for(instance).state(instance)
    if state is InstanceState.AUTHORIZED:
        return json_response(
            {"type": "alreadyLogged", "message": "instance account already authorized"}
        )
    # A sandbox account has no phone to scan with; the operator authorizes it instead.
    return json_response(
        {
            "type": "error",
            "message": f"sandbox instance: run `wagate instance state {instance.id} authorized`",
        }
    )
