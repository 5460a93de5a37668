"""Conversions between table rows and the domain values of `wagate.core.model`."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from wagate.core.model import (
    FaultKind,
    Instance,
    InstanceSettings,
    InstanceState,
    Notification,
    NotificationStatus,
    PrivacyLevel,
    SandboxAccount,
    SandboxFault,
    SandboxGroup,
)
from wagate.stores.schema import notifications
from wagate.wire.json_text import dumps_text

# A row by column name: SQLAlchemy's RowMapping, or a dict from `Prepared.mappings`.
Row = Mapping[Any, Any]


def settings_to_json(settings: InstanceSettings) -> str:
    return dumps_text(
        {
            "webhook_url": settings.webhook_url,
            "webhook_url_token": settings.webhook_url_token,
            "delay_send_messages_ms": settings.delay_send_messages_ms,
            "country_instance": settings.country_instance,
            "flags": dict(settings.flags),
        }
    )


_SETTINGS_FIELDS = frozenset(
    ("webhook_url", "webhook_url_token", "delay_send_messages_ms", "country_instance", "flags")
)


def settings_from_json(raw: str) -> InstanceSettings:
    # Unknown keys are skipped and missing ones take their defaults, so a row written by a newer
    # or older release still loads.
    stored = json.loads(raw)
    return InstanceSettings().with_changes(
        {key: value for key, value in stored.items() if key in _SETTINGS_FIELDS}
    )


def instance_values(instance: Instance) -> dict[str, Any]:
    return {
        "id": instance.id,
        "api_token": instance.api_token,
        "engine": instance.engine,
        "phone": instance.phone or None,
        "state": instance.state.value,
        "webhook_signing_secret": instance.webhook_signing_secret,
        "settings": settings_to_json(instance.settings),
        "created_at": instance.created_at,
        "push_mode": instance.settings.push_mode,
    }


def instance_from_row(row: Row) -> Instance:
    return Instance(
        id=row["id"],
        api_token=row["api_token"],
        engine=row["engine"],
        phone=row["phone"] or "",
        state=InstanceState(row["state"]),
        webhook_signing_secret=row["webhook_signing_secret"],
        settings=settings_from_json(row["settings"]),
        created_at=row["created_at"],
    )


def account_values(account: SandboxAccount) -> dict[str, Any]:
    return {
        "phone": account.phone,
        "name": account.name,
        "on_whatsapp": account.on_whatsapp,
        "avatar_digest": account.avatar_digest,
        "avatar_privacy": account.avatar_privacy.value,
        "contacts": dumps_text(list(account.contacts)),
        "lid": account.lid,
    }


def account_from_row(row: Row) -> SandboxAccount:
    return SandboxAccount(
        phone=row["phone"],
        name=row["name"],
        on_whatsapp=bool(row["on_whatsapp"]),
        avatar_digest=row["avatar_digest"],
        avatar_privacy=PrivacyLevel(row["avatar_privacy"]),
        contacts=tuple(json.loads(row["contacts"])),
        lid=row["lid"],
    )


def group_values(group: SandboxGroup) -> dict[str, Any]:
    return {
        "chat_id": group.chat_id,
        "subject": group.subject,
        "avatar_digest": group.avatar_digest,
        "participants": dumps_text(list(group.participants)),
    }


def group_from_row(row: Row) -> SandboxGroup:
    return SandboxGroup(
        chat_id=row["chat_id"],
        subject=row["subject"],
        avatar_digest=row["avatar_digest"],
        participants=tuple(json.loads(row["participants"])),
    )


def fault_from_row(row: Row) -> SandboxFault:
    return SandboxFault(chat_id=row["chat_id"], kind=FaultKind(row["kind"]))


# `notifications` columns in `Notification`'s field order, for `notification_from_values`.
NOTIFICATION_COLUMNS = (
    notifications.c.receipt_id,
    notifications.c.instance_id,
    notifications.c.body,
    notifications.c.status,
    notifications.c.created_at,
    notifications.c.attempts,
    notifications.c.last_error,
    notifications.c.webhook_id,
    notifications.c.next_attempt_at,
)


# A dict lookup: the enum's own call by value costs more than the rest of a row's conversion.
_STATUS_BY_VALUE = {status.value: status for status in NotificationStatus}


def notification_from_values(values: Sequence[Any]) -> Notification:
    """A row of `NOTIFICATION_COLUMNS`."""
    (receipt_id, instance_id, body, status, created_at, attempts, error, webhook_id, due) = values
    return Notification(
        receipt_id,
        instance_id,
        body,
        _STATUS_BY_VALUE.get(status) or NotificationStatus(status),
        created_at,
        attempts,
        error,
        webhook_id,
        due,
    )
