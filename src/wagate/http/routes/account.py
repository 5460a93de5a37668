"""Settings and state of the instance's account."""

from __future__ import annotations

from fastapi import APIRouter, Response

from wagate.core.model import ChatId, ChatKind, InstanceState
from wagate.http.deps import json_response
from wagate.http.green_api import MethodCall, instance_method
from wagate.wire.avatar import fold_avatar
from wagate.wire.requests import SetSettingsBody
from wagate.wire.settings import apply_settings, settings_view

router = APIRouter(tags=["account"])


@instance_method(router, "GET", "getSettings", summary="Instance settings")
async def get_settings(call: MethodCall) -> Response:
    return json_response(settings_view(call.instance))


@instance_method(
    router,
    "POST",
    "setSettings",
    body=SetSettingsBody,
    summary="Change instance settings; they take effect at once",
)
async def set_settings(call: MethodCall) -> Response:
    runtime, instance = call.runtime, call.instance
    body = await call.body(SetSettingsBody)
    await runtime.settings_service.change(instance, apply_settings(instance.settings, body))
    return json_response({"saveSettings": True})


@instance_method(router, "GET", "getStateInstance", summary="Authorization state")
async def get_state_instance(call: MethodCall) -> Response:
    runtime, instance = call.runtime, call.instance
    state = await runtime.avatars.engine_for(instance).state(instance)
    return json_response({"stateInstance": state.value})


@instance_method(router, "GET", "getWaSettings", summary="Own avatar, phone and state")
async def get_wa_settings(call: MethodCall) -> Response:
    runtime, instance = call.runtime, call.instance
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


@instance_method(router, "GET", "reboot", summary="Restart the instance")
async def reboot(call: MethodCall) -> Response:
    return json_response({"isReboot": True})


@instance_method(router, "GET", "logout", summary="Unlink the account")
async def logout(call: MethodCall) -> Response:
    runtime, instance = call.runtime, call.instance
    await runtime.instances.set_state(instance.id, InstanceState.NOT_AUTHORIZED)
    return json_response({"isLogout": True})


@instance_method(router, "GET", "qr", summary="QR code for linking an account")
async def qr(call: MethodCall) -> Response:
    runtime, instance = call.runtime, call.instance
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
