"""The GREEN-API methods wagate serves: canonical spelling, HTTP verb, and published rate limit."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MethodSpec:
    name: str
    verb: str
    per_second: float
    summary: str


# Limits are GREEN-API's published per-instance figures where its docs give one (getAvatar and
# getAvatarAsync 10/s, setSettings, getStateInstance and getContactInfo 1/s, qr 3/s, the polling
# pair 100/s); methods without a published figure get 10/s.
METHODS: tuple[MethodSpec, ...] = (
    MethodSpec("getAvatar", "POST", 10, "Avatar of a correspondent or group, synchronously"),
    MethodSpec("getAvatarAsync", "POST", 10, "Avatar later, as an avatarInfo notification"),
    MethodSpec("getContactInfo", "POST", 1, "Name and avatar of a correspondent"),
    MethodSpec("getContacts", "GET", 10, "Contacts and groups of the account"),
    MethodSpec("checkWhatsapp", "POST", 10, "Whether a number has WhatsApp"),
    MethodSpec("receiveNotification", "GET", 100, "Long-poll the oldest queued notification"),
    MethodSpec("deleteNotification", "DELETE", 100, "Remove a notification from the queue"),
    MethodSpec("getWebhooksCount", "GET", 10, "How many notifications are queued"),
    MethodSpec("clearWebhooksQueue", "DELETE", 10, "Delete all queued notifications"),
    MethodSpec("getSettings", "GET", 10, "The instance settings"),
    MethodSpec("setSettings", "POST", 1, "Change instance settings"),
    MethodSpec("getStateInstance", "GET", 1, "The account's authorization state"),
    MethodSpec("getWaSettings", "GET", 10, "The account's own avatar, phone and state"),
    MethodSpec("reboot", "GET", 10, "Restart the instance"),
    MethodSpec("logout", "GET", 10, "Unlink the account"),
    MethodSpec("qr", "GET", 3, "QR code for linking an account"),
)

BY_LOWER_NAME: dict[str, MethodSpec] = {m.name.lower(): m for m in METHODS}

PARTNER_METHODS: dict[str, str] = {
    name.lower(): name for name in ("createInstance", "getInstances", "deleteInstanceAccount")
}
