"""getAvatar, getAvatarAsync and the contact methods around them."""

from __future__ import annotations

from fastapi import APIRouter, Response
from pydantic import TypeAdapter

from wagate.core.errors import BadRequestData, ValidationFailed
from wagate.core.model import ChatId
from wagate.http.deps import json_response
from wagate.http.green_api import MethodCall, instance_method, query_parameter
from wagate.wire.avatar import fold_avatar
from wagate.wire.bodies import lone_string_field
from wagate.wire.chat_id import parse_chat_id
from wagate.wire.requests import ChatIdBody, CheckWhatsappBody

router = APIRouter(tags=["avatars and contacts"])
_OPTIONAL_BOOL: TypeAdapter[bool | None] = TypeAdapter(bool | None)
_OPTIONAL_INT: TypeAdapter[int | None] = TypeAdapter(int | None)


async def _requested_chat(call: MethodCall) -> ChatId:
    """The body's `chatId`, checked in the contract's order: the body (its schema, then the chatId
    format) before the instance's state."""
    chat_id = lone_string_field(ChatIdBody, "chatId", await call.raw_body())
    chat = parse_chat_id(chat_id, call.runtime.settings.phone_digits)
    call.runtime.avatars.require_authorized(call.instance)
    return chat


@instance_method(
    router,
    "POST",
    "getAvatar",
    body=ChatIdBody,
    summary="Avatar of a correspondent or group chat",
)
async def get_avatar(call: MethodCall) -> Response:
    chat = await _requested_chat(call)
    lookup = await call.runtime.avatars.lookup(call.instance, chat)
    return json_response(fold_avatar(lookup))


@instance_method(
    router,
    "POST",
    "getAvatarAsync",
    body=ChatIdBody,
    summary="Avatar later, as an avatarInfo notification; empty 200 once recorded",
)
async def get_avatar_async(call: MethodCall) -> Response:
    chat = await _requested_chat(call)
    await call.runtime.avatars.accept(call.instance, chat)
    return Response(status_code=200)


@instance_method(
    router,
    "POST",
    "getContactInfo",
    body=ChatIdBody,
    summary="Name and avatar of a correspondent",
)
async def get_contact_info(call: MethodCall) -> Response:
    chat = await _requested_chat(call)
    engine = call.runtime.avatars.engine_for(call.instance)
    name = await engine.contact_name(call.instance, chat) or ""
    lookup = await call.runtime.avatars.lookup(call.instance, chat)
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


@instance_method(
    router,
    "POST",
    "checkWhatsapp",
    body=CheckWhatsappBody,
    summary="Whether a phone number has WhatsApp",
)
async def check_whatsapp(call: MethodCall) -> Response:
    body = await call.body(CheckWhatsappBody)
    runtime, instance = call.runtime, call.instance
    runtime.avatars.require_authorized(instance)
    phone = str(body.phoneNumber)
    low, high = runtime.settings.phone_digits
    if body.phoneNumber <= 0 or not low <= len(phone) <= high:
        raise BadRequestData(f"bad phone number, valid {low} or {high} digits")
    exists = await runtime.avatars.engine_for(instance).check_whatsapp(instance, phone)
    return json_response({"existsWhatsapp": exists})


@instance_method(
    router,
    "GET",
    "getContacts",
    summary="Contacts and groups",
    parameters=[
        query_parameter("group", {"anyOf": [{"type": "boolean"}, {"type": "null"}]}),
        query_parameter(
            "count",
            {"anyOf": [{"type": "integer"}, {"type": "null"}]},
            "At most this many, from 1",
        ),
    ],
)
async def get_contacts(call: MethodCall) -> Response:
    group = call.query("group", _OPTIONAL_BOOL)
    count = call.query("count", _OPTIONAL_INT)
    runtime, instance = call.runtime, call.instance
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
