"""Domain records whose construction is hand-written for speed still behave as declared."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

import pytest

from wagate.core.model import AvatarJob, ChatId, ChatKind, Notification, NotificationStatus

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def test_notification_init_sets_exactly_the_declared_fields_and_defaults() -> None:
    made = Notification(7, 3, '{"a": 1}', NotificationStatus.QUEUED, NOW)
    declared = {f.name: f.default for f in dataclasses.fields(Notification)}
    assert set(vars(made)) == set(declared)
    for name, default in declared.items():
        if default is not dataclasses.MISSING:
            assert getattr(made, name) == default, name
    assert (made.receipt_id, made.instance_id, made.body_json) == (7, 3, '{"a": 1}')
    assert made.status is NotificationStatus.QUEUED
    assert made.created_at == NOW


def test_notification_takes_every_field_by_keyword_and_stays_frozen() -> None:
    values: dict[str, Any] = {
        "receipt_id": 1,
        "instance_id": 2,
        "body_json": "{}",
        "status": NotificationStatus.DEAD,
        "created_at": NOW,
        "attempts": 4,
        "last_error": "HTTP 500",
        "webhook_id": "msg_1",
        "next_attempt_at": NOW,
    }
    made = Notification(**values)
    assert dataclasses.asdict(made) == values
    assert made == Notification(**values)
    assert hash(made) == hash(Notification(**values))
    assert dataclasses.replace(made, attempts=5).attempts == 5
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.attempts = 5  # type: ignore[misc]
    assert made.body == {}


def test_records_as_named_tuples_keep_their_text_and_fields() -> None:
    chat = ChatId(ChatKind.PERSONAL, "79001234567")
    assert str(chat) == "79001234567@c.us"
    assert chat.phone == "79001234567"
    assert ChatId(ChatKind.LID, "123456").phone is None
    # A claim's row, in the field order the store's RETURNING gives it.
    job = AvatarJob._make((1, 2, "79001234567@c.us", NOW, 3))
    assert job == AvatarJob(
        id=1, instance_id=2, chat_id="79001234567@c.us", created_at=NOW, attempts=3
    )
    assert (job.id, job.instance_id, job.chat_id, job.created_at, job.attempts) == (
        1,
        2,
        "79001234567@c.us",
        NOW,
        3,
    )
    assert AvatarJob(1, 2, "79001234567@c.us", NOW).attempts == 0  # never claimed
