"""Mapping between GREEN-API's settings keys and `InstanceSettings`."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from wagate.core.errors import ValidationFailed
from wagate.core.model import Instance, InstanceSettings
from wagate.wire.requests import SetSettingsBody

# Every yes/no switch GREEN-API documents, deprecated ones included: clients (the chatbot)
# read some of them at start-up and fail on a missing key.
FLAG_KEYS: tuple[str, ...] = (
    "markIncomingMessagesReaded",
    "markIncomingMessagesReadedOnReply",
    "sharedSession",
    "outgoingWebhook",
    "outgoingMessageWebhook",
    "outgoingAPIMessageWebhook",
    "incomingWebhook",
    "deviceWebhook",
    "statusInstanceWebhook",
    "stateWebhook",
    "enableMessagesHistory",
    "keepOnlineStatus",
    "pollMessageWebhook",
    "incomingBlockWebhook",
    "incomingCallWebhook",
    "editedMessageWebhook",
    "deletedMessageWebhook",
)


def settings_view(instance: Instance) -> dict[str, Any]:
    """The getSettings answer: every documented key, flags as "yes"/"no"."""
    s = instance.settings
    view: dict[str, Any] = {
        "wid": instance.wid,
        "countryInstance": s.country_instance,
        "typeAccount": "",
        "webhookUrl": s.webhook_url,
        "webhookUrlToken": s.webhook_url_token,
        "delaySendMessagesMilliseconds": s.delay_send_messages_ms,
    }
    for key in FLAG_KEYS:
        view[key] = "yes" if s.flags.get(key, False) else "no"
    return view


_NOT_HTTP = "'webhookUrl' must be an http or https URL"
# Characters a header value cannot carry: the token goes out as `Authorization: Bearer <token>`,
# and a line break in it would end that header and start others.
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def _check_webhook_url(url: str) -> None:
    if url == "":
        return
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unclosed or invalid IPv6 literal: "http://[::1"
        raise ValidationFailed(_NOT_HTTP) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationFailed(_NOT_HTTP)


def _check_webhook_url_token(token: str) -> None:
    if _CONTROL_CHARACTERS.search(token):
        raise ValidationFailed("'webhookUrlToken' must not contain control characters")


def settings_changes(body: SetSettingsBody) -> dict[str, Any]:
    """The `InstanceSettings.with_changes` argument for a validated setSettings body."""
    given = body.model_dump(exclude_none=True)
    if not given:
        raise ValidationFailed("'value' must have at least 1 key")
    changes: dict[str, Any] = {}
    if "webhookUrl" in given:
        url = given["webhookUrl"].strip()
        _check_webhook_url(url)
        changes["webhook_url"] = url
    if "webhookUrlToken" in given:
        _check_webhook_url_token(given["webhookUrlToken"])
        changes["webhook_url_token"] = given["webhookUrlToken"]
    if "delaySendMessagesMilliseconds" in given:
        changes["delay_send_messages_ms"] = given["delaySendMessagesMilliseconds"]
    if "countryInstance" in given:
        changes["country_instance"] = given["countryInstance"]
    flags = {key: given[key] == "yes" for key in FLAG_KEYS if key in given}
    if flags:
        changes["flags"] = flags
    return changes


def apply_settings(settings: InstanceSettings, body: SetSettingsBody) -> InstanceSettings:
    return settings.with_changes(settings_changes(body))
