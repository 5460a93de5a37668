"""Settings, state, contacts, queue utilities and partner methods over real HTTP."""

from __future__ import annotations

import httpx
import pytest

from tests.integration.conftest import PARTNER_TOKEN, Demo
from wagate.core.rate_limits import RateLimiter

FLAGS = [
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
]


def switch_rate_limits_off(demo: Demo) -> None:
    limiter = demo.server.runtime.rate_limiter
    assert isinstance(limiter, RateLimiter)
    limiter.enabled = False


def test_get_settings_returns_every_documented_key(demo: Demo) -> None:
    settings = httpx.get(demo.method_url("getSettings")).json()
    assert settings["wid"] == f"{demo.instance.phone}@c.us"
    assert settings["webhookUrl"] == "" and settings["webhookUrlToken"] == ""
    assert isinstance(settings["delaySendMessagesMilliseconds"], int)
    for key in [*FLAGS, "countryInstance", "typeAccount"]:
        assert key in settings, key
    assert {settings[key] for key in FLAGS} == {"no"}


def test_set_settings_takes_effect_at_once(demo: Demo) -> None:
    changes = {"incomingWebhook": "yes", "delaySendMessagesMilliseconds": 1500}
    response = httpx.post(demo.method_url("setSettings"), json=changes)
    assert response.json() == {"saveSettings": True}
    settings = httpx.get(demo.method_url("getSettings")).json()
    assert settings["incomingWebhook"] == "yes"
    assert settings["delaySendMessagesMilliseconds"] == 1500


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "'value' must have at least 1 key"),
        (
            {"incomingWebhook": "maybe"},
            "'incomingWebhook' must be one of 'yes' or 'no'",
        ),
        ({"wid": "x"}, "'wid' is not allowed"),
        (
            {"webhookUrl": "ftp://example.test/"},
            "'webhookUrl' must be an http or https URL",
        ),
        ({"webhookUrl": "http://[::1"}, "'webhookUrl' must be an http or https URL"),
        ({"webhookUrl": f"http://{'a' * 64}.test/"}, "'webhookUrl' has an invalid host name"),
        ({"webhookUrl": "http://example.test:99999/"}, "'webhookUrl' has an invalid port"),
        (
            {"webhookUrlToken": "token\r\nX-Extra: 1"},
            "'webhookUrlToken' must not contain control characters",
        ),
        (
            {"delaySendMessagesMilliseconds": 10},
            "'delaySendMessagesMilliseconds' must be greater than or equal to 500",
        ),
        (
            {"delaySendMessagesMilliseconds": "fast"},
            "'delaySendMessagesMilliseconds' must be an integer",
        ),
    ],
)
def test_set_settings_rejects_bad_values_and_changes_nothing(
    demo: Demo, body: dict[str, object], message: str
) -> None:
    before = httpx.get(demo.method_url("getSettings")).json()
    switch_rate_limits_off(demo)
    response = httpx.post(demo.method_url("setSettings"), json=body)
    assert response.status_code == 400
    assert response.json()["message"] == f"Validation failed. Details: {message}"
    assert httpx.get(demo.method_url("getSettings")).json() == before


def test_state_wa_settings_reboot_logout_qr(demo: Demo) -> None:
    switch_rate_limits_off(demo)
    assert httpx.get(demo.method_url("getStateInstance")).json() == {"stateInstance": "authorized"}
    wa = httpx.get(demo.method_url("getWaSettings")).json()
    assert wa["phone"] == demo.instance.phone and wa["stateInstance"] == "authorized"
    assert wa["avatar"].startswith(f"{demo.url}/avatars/")
    assert httpx.get(demo.method_url("qr")).json()["type"] == "alreadyLogged"
    assert httpx.get(demo.method_url("reboot")).json() == {"isReboot": True}
    assert httpx.get(demo.method_url("logout")).json() == {"isLogout": True}
    assert httpx.get(demo.method_url("getStateInstance")).json() == {
        "stateInstance": "notAuthorized"
    }
    assert httpx.get(demo.method_url("qr")).json()["type"] == "error"
    assert httpx.get(demo.method_url("getWaSettings")).json()["avatar"] == ""


def test_contacts_check_whatsapp_and_contact_info(demo: Demo) -> None:
    switch_rate_limits_off(demo)
    contacts = httpx.get(demo.method_url("getContacts")).json()
    ids = {c["id"]: c for c in contacts}
    assert ids["11001234568@c.us"]["type"] == "user"
    assert ids["120363043968066561@g.us"]["type"] == "group"
    only_groups = httpx.get(demo.method_url("getContacts"), params={"group": "true"}).json()
    assert {c["type"] for c in only_groups} == {"group"}

    def check(number: int) -> httpx.Response:
        return httpx.post(demo.method_url("checkWhatsapp"), json={"phoneNumber": number})

    assert check(11001234568).json() == {"existsWhatsapp": True}
    assert check(11001234571).json() == {"existsWhatsapp": False}
    assert check(123).status_code == 400

    info = httpx.post(demo.method_url("getContactInfo"), json={"chatId": "11001234568@c.us"})
    assert info.json()["name"] == "Bob"
    assert info.json()["avatar"].startswith(f"{demo.url}/avatars/")


def test_queue_count_and_clear(demo: Demo) -> None:
    for _ in range(3):
        httpx.post(demo.method_url("getAvatarAsync"), json={"chatId": "11001234570@c.us"})

    def settled() -> bool:
        return demo.server.call(lambda rt: rt.store.count_avatar_jobs(demo.instance.id)) == 0

    # The count covers queued notifications only; wait for the jobs through the long poll.
    first = httpx.get(
        demo.method_url("receiveNotification"), params={"receiveTimeout": 30}, timeout=40
    )
    assert first.json()["body"]["typeWebhook"] == "avatarInfo"
    while not settled():
        httpx.get(demo.method_url("receiveNotification"), timeout=10)
    assert httpx.get(demo.method_url("getWebhooksCount")).json() == {"count": 3}
    cleared = httpx.delete(demo.method_url("clearWebhooksQueue")).json()
    assert cleared == {"isCleared": True, "reason": ""}
    assert httpx.get(demo.method_url("getWebhooksCount")).json() == {"count": 0}


def test_partner_methods(demo: Demo) -> None:
    base = f"{demo.url}/partner"
    created = httpx.post(f"{base}/createInstance/{PARTNER_TOKEN}", json={"name": "bot"}).json()
    assert len(created["apiTokenInstance"]) == 50 and created["typeInstance"] == "whatsapp"
    listed = httpx.get(f"{base}/getInstances/{PARTNER_TOKEN}").json()
    assert {i["idInstance"] for i in listed} == {demo.instance.id, created["idInstance"]}
    body = {"idInstance": created["idInstance"]}
    assert httpx.post(f"{base}/deleteInstanceAccount/{PARTNER_TOKEN}", json=body).json() == {
        "deleteInstanceAccount": True
    }
    assert httpx.post(f"{base}/deleteInstanceAccount/{PARTNER_TOKEN}", json=body).json() == {
        "deleteInstanceAccount": False
    }
    wrong = httpx.get(f"{base}/getInstances/{'x' * 50}")
    assert wrong.status_code == 401
    assert wrong.json()["path"] == "/partner/getInstances/***"


def test_partner_and_admin_numbers_no_instance_can_have(demo: Demo) -> None:
    """Ids past what the database stores (64-bit) name nothing: answered as unknown, not 500."""
    huge = 2**63
    base = f"{demo.url}/partner"
    deleted = httpx.post(
        f"{base}/deleteInstanceAccount/{PARTNER_TOKEN}", json={"idInstance": huge * 10}
    )
    assert deleted.status_code == 200 and deleted.json() == {"deleteInstanceAccount": False}
    admin = {"Authorization": f"Bearer {PARTNER_TOKEN}"}
    listing = httpx.get(f"{demo.url}/admin/instances/{huge}/notifications", headers=admin)
    assert listing.status_code == 403
    assert listing.json()["message"] == "Forbidden"
    replay_url = f"{demo.url}/admin/instances/{demo.instance.id}/notifications/replay"
    replayed = httpx.post(replay_url, json={"receiptIds": [huge, -1]}, headers=admin)
    assert replayed.status_code == 200 and replayed.json() == {"replayed": 0}
    listed = httpx.get(f"{base}/getInstances/{PARTNER_TOKEN}").json()
    assert [i["idInstance"] for i in listed] == [demo.instance.id]


def test_partner_create_instance_vets_its_webhook_url(demo: Demo) -> None:
    base = f"{demo.url}/partner"
    refused = httpx.post(
        f"{base}/createInstance/{PARTNER_TOKEN}",
        json={"webhookUrl": "http://169.254.169.254/latest/meta-data/"},
    )
    assert refused.status_code == 400
    assert refused.json()["message"].startswith("Validation failed. Details: 'webhookUrl'")
    listed = httpx.get(f"{base}/getInstances/{PARTNER_TOKEN}").json()
    assert [i["idInstance"] for i in listed] == [demo.instance.id]  # nothing was created


def test_health_metrics_and_openapi(demo: Demo) -> None:
    assert httpx.get(f"{demo.url}/health").json()["status"] == "ok"
    httpx.get(demo.method_url("getSettings"))
    metrics = httpx.get(f"{demo.url}/metrics").text
    assert 'wagate_http_requests_total{method="getSettings",status="200"}' in metrics
    paths = httpx.get(f"{demo.url}/openapi.json").json()["paths"]
    for method in ("getAvatar", "getAvatarAsync", "receiveNotification", "setSettings"):
        assert any(f"/{method}/" in p for p in paths), method
    assert "/partner/createInstance/{partnerToken}" in paths
