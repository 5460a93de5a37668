"""Notification bodies as GREEN-API clients receive them."""

from __future__ import annotations

from datetime import datetime
from typing import Literal, NotRequired, TypedDict

from wagate.core.model import AvatarLookup, Instance
from wagate.wire.avatar import fold_avatar


class InstanceData(TypedDict):
    idInstance: int
    wid: str
    typeInstance: str


class AvatarInfo(TypedDict):
    chatId: str
    urlAvatar: str
    available: bool
    reason: NotRequired[str]


class AvatarInfoNotification(TypedDict):
    typeWebhook: Literal["avatarInfo"]
    instanceData: InstanceData
    timestamp: int
    avatarInfo: AvatarInfo


def instance_data(instance: Instance) -> InstanceData:
    return {"idInstance": instance.id, "wid": instance.wid, "typeInstance": "whatsapp"}


def avatar_info_notification(
    instance: Instance, chat_id: str, lookup: AvatarLookup, at: datetime
) -> AvatarInfoNotification:
    """The `avatarInfo` body. (GREEN-API's page says `deviceInfo`: a copy error, see SPEC.md.)"""
    info: AvatarInfo = {"chatId": chat_id, **fold_avatar(lookup)}
    return {
        "typeWebhook": "avatarInfo",
        "instanceData": instance_data(instance),
        "timestamp": int(at.timestamp()),
        "avatarInfo": info,
    }
