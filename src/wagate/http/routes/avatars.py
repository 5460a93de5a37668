"""getAvatar, getAvatarAsync and the contact methods around them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response

from wagate.bootstrap import Runtime
from wagate.core.errors import BadRequestData, ValidationFailed
from wagate.core.model import ChatId, Instance
from wagate.http.deps import authenticated, get_runtime, json_body_doc, json_response
from wagate.wire.avatar import fold_avatar
from wagate.wire.bodies import validate_body
from wagate.wire.chat_id import parse_chat_id
from wagate.wire.requests import ChatIdBody, CheckWhatsappBody

router = APIRouter(tags=["avatars and contacts"])
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
PREFIX = "/waInstance{idInstance}"


async def _requested_chat(request: Request, runtime: Runtime, instance: Instance) -> ChatId:
    """The body's `chatId`, checked in the contract's order: the body (its schema, then the chatId
    format) before the instance's state."""
    body = validate_body(ChatIdBody, await request.body())
    chat = parse_chat_id(body.chatId, runtime.settings.phone_digits)
    runtime.avatars.require_authorized(instance)
    return chat


@router.post(
    PREFIX + "/getAvatar/{apiTokenInstance}",
    openapi_extra=json_body_doc(ChatIdBody),
    summary="Avatar of a correspondent or group chat",
)
async def get_avatar(
    request: Request,
    runtime: RuntimeDep,
    instance: Annotated[Instance, Depends(authenticated("getAvatar"))],
) -> Response:
    chat = await _requested_chat(request, runtime, instance)
    lookup = await runtime.avatars.lookup(instance, chat)
    return json_response(fold_avatar(lookup))


@router.post(
    PREFIX + "/getAvatarAsync/{apiTokenInstance}",
    openapi_extra=json_body_doc(ChatIdBody),
    summary="Avatar later, as an avatarInfo notification; empty 200 once recorded",
)
async def get_avatar_async(
    request: Request,
    runtime: RuntimeDep,
    instance: Annotated[Instance, Depends(authenticated("getAvatarAsync"))],
) -> Response:
    chat = await _requested_chat(request, runtime, instance)
    await runtime.avatars.accept(instance, chat)
    return Response(status_code=200)


@router.post(
    PREFIX + "/getContactInfo/{apiTokenInstance}",
    openapi_extra=json_body_doc(ChatIdBody),
    summary="Name and avatar of a correspondent",
)
async def get_contact_info(
    request: Request,
    runtime: RuntimeDep,
    instance: Annotated[Instance, Depends(authenticated("getContactInfo"))],
) -> Response:
    chat = await _requested_chat(request, runtime, instance)
    engine = runtime.avatars.engine_for(instance)
    name = await engine.contact_name(instance, chat) or ""
    lookup = await runtime.avatars.lookup(instance, chat)
    return json_response(
        {
            "avatar": fold_avatar(lookup)["urlAvatar"],
            "name": name,
            "contactName": name,
            "email": "",
            "category": "",
            "description": "",
            "products": [],
            "chatId": str(chat),
            "lastSeen": None,
            "isArchive": False,
            "isDisappearing": False,
            "isMute": False,
            "messageExpiration": 0,
            "muteExpiration": None,
            "isBusiness": False,
        }
    )


@router.post(
    PREFIX + "/checkWhatsapp/{apiTokenInstance}",
    openapi_extra=json_body_doc(CheckWhatsappBody),
    summary="Whether a phone number has WhatsApp",
)
async def check_whatsapp(
    request: Request,
    runtime: RuntimeDep,
    instance: Annotated[Instance, Depends(authenticated("checkWhatsapp"))],
) -> Response:
    body = validate_body(CheckWhatsappBody, await request.body())
    runtime.avatars.require_authorized(instance)
    phone = str(body.phoneNumber)
    low, high = runtime.settings.phone_digits
    if body.phoneNumber <= 0 or not low <= len(phone) <= high:
        raise BadRequestData(f"bad phone number, valid {low} or {high} digits")
    exists = await runtime.avatars.engine_for(instance).check_whatsapp(instance, phone)
    return json_response({"existsWhatsapp": exists})


@router.get(PREFIX + "/getContacts/{apiTokenInstance}", summary="Contacts and groups")
async def get_contacts(
    runtime: RuntimeDep,
    instance: Annotated[Instance, Depends(authenticated("getContacts"))],
    group: Annotated[bool | None, Query()] = None,
    count: Annotated[int | None, Query(description="At most this many, from 1")] = None,
) -> Response:
    if count is not None and count < 1:
        raise ValidationFailed("'count' must be greater than or equal to 1")
    runtime.avatars.require_authorized(instance)
    contacts = await runtime.avatars.engine_for(instance).contacts(instance)
    if group is not None:
        contacts = [c for c in contacts if c.is_group == group]
    if count is not None:
        contacts = contacts[:count]
    return json_response(
        [
            {
                "id": c.chat_id,
                "name": c.name,
                "contactName": c.name,
                "type": "group" if c.is_group else "user",
            }
            for c in contacts
        ]
    )
