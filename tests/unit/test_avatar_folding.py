"""Engine outcomes folded into GREEN-API's urlAvatar / available / reason fields."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from wagate.core.model import (
    AvatarImage,
    AvatarLookup,
    AvatarResult,
    AvatarStatus,
    Instance,
    InstanceSettings,
    InstanceState,
)
from wagate.wire.avatar import fold_avatar
from wagate.wire.notifications import avatar_info_notification

URL = "http://wagate.test/avatars/ab.png"


@pytest.mark.parametrize(
    ("lookup", "fields"),
    [
        (AvatarLookup(AvatarStatus.AVAILABLE, URL), {"urlAvatar": URL, "available": True}),
        (AvatarLookup(AvatarStatus.NOT_SET), {"urlAvatar": "", "available": True}),
        (AvatarLookup(AvatarStatus.HIDDEN), {"urlAvatar": "", "available": False}),
        (AvatarLookup(AvatarStatus.NOT_ON_WHATSAPP), {"urlAvatar": "", "available": False}),
        (
            AvatarLookup(AvatarStatus.TIMED_OUT),
            {"urlAvatar": "", "available": False, "reason": "get avatar timeout limit exceeded"},
        ),
        (
            AvatarLookup(AvatarStatus.BAD_REQUEST),
            {"urlAvatar": "", "available": False, "reason": "bad request data"},
        ),
        (
            AvatarLookup(AvatarStatus.RATE_LIMITED),
            {"urlAvatar": "", "available": False, "reason": "rate-overlimit"},
        ),
    ],
)
def test_fold_avatar(lookup: AvatarLookup, fields: dict[str, object]) -> None:
    assert fold_avatar(lookup) == fields


def test_every_status_is_folded() -> None:
    for status in AvatarStatus:
        url = URL if status is AvatarStatus.AVAILABLE else ""
        assert set(fold_avatar(AvatarLookup(status, url))) >= {"urlAvatar", "available"}


def test_result_carries_an_image_exactly_when_available() -> None:
    image = AvatarImage(b"\x89PNG", "image/png")
    AvatarResult(AvatarStatus.AVAILABLE, image)
    with pytest.raises(ValueError, match="image"):
        AvatarResult(AvatarStatus.AVAILABLE)
    with pytest.raises(ValueError, match="image"):
        AvatarResult(AvatarStatus.HIDDEN, image)


def test_avatar_info_notification_body() -> None:
    instance = Instance(
        id=1101000001,
        api_token="0" * 50,
        engine="sandbox",
        phone="11001234567",
        state=InstanceState.AUTHORIZED,
        webhook_signing_secret="whsec_x",
        settings=InstanceSettings(),
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    at = datetime(2020, 4, 12, 14, 13, 22, tzinfo=UTC)
    body = avatar_info_notification(
        instance, "11001234568@c.us", AvatarLookup(AvatarStatus.AVAILABLE, URL), at
    )
    assert body == {
        "typeWebhook": "avatarInfo",
        "instanceData": {
            "idInstance": 1101000001,
            "wid": "11001234567@c.us",
            "typeInstance": "whatsapp",
        },
        "timestamp": int(at.timestamp()),
        "avatarInfo": {"chatId": "11001234568@c.us", "urlAvatar": URL, "available": True},
    }
