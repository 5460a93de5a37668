"""Folding explicit avatar outcomes into GREEN-API's `urlAvatar` / `available` / `reason` fields."""

from __future__ import annotations

from typing import NotRequired, TypedDict

from wagate.core.model import AvatarLookup, AvatarStatus

REASON_TIMEOUT = "get avatar timeout limit exceeded"
REASON_BAD_REQUEST = "bad request data"
# Not a GREEN-API text (it has none for this case): WhatsApp refused the lookup for a while.
REASON_RATE_LIMITED = "rate-overlimit"


class AvatarFields(TypedDict):
    urlAvatar: str
    available: bool
    reason: NotRequired[str]


_REASONS = {
    AvatarStatus.TIMED_OUT: REASON_TIMEOUT,
    AvatarStatus.BAD_REQUEST: REASON_BAD_REQUEST,
    AvatarStatus.RATE_LIMITED: REASON_RATE_LIMITED,
}


def fold_avatar(lookup: AvatarLookup) -> AvatarFields:
    """Available: the URL. Not set: empty URL but available (there is nothing to show). Hidden or
    not on WhatsApp: not available. A failed lookup adds `reason`."""
    if lookup.status is AvatarStatus.AVAILABLE:
        return {"urlAvatar": lookup.url, "available": True}
    if lookup.status is AvatarStatus.NOT_SET:
        return {"urlAvatar": "", "available": True}
    fields: AvatarFields = {"urlAvatar": "", "available": False}
    reason = _REASONS.get(lookup.status)
    if reason:
        fields["reason"] = reason
    return fields
