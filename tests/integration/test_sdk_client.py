"""The official `whatsapp-api-client-python` SDK (0.0.55) driven against a live wagate.

Each test points `API.GreenAPI` (host = media = the server's URL) at a server with the demo
sandbox world. Rate limits are off except in the 429 test: the SDK retries 429 with backoff
(urllib3 `Retry(total=3, status_forcelist=[429])`), which would otherwise blur the results.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from whatsapp_api_client_python import API  # type: ignore[import-untyped]

from tests.integration.conftest import PARTNER_TOKEN, Demo, make_settings, start_demo
from wagate.core.rate_limits import RateLimiter

BOB, CAROL, DAVE = "11001234568@c.us", "11001234569@c.us", "11001234570@c.us"
TIMEOUT_CHAT = "11009999999@c.us"
ASYNC_URL = "{{host}}/waInstance{{idInstance}}/getAvatarAsync/{{apiTokenInstance}}"


def green_api(demo: Demo, instance_id: int | None = None, token: str | None = None) -> Any:
    return API.GreenAPI(
        str(demo.instance.id if instance_id is None else instance_id),
        demo.instance.api_token if token is None else token,
        host=demo.url,
        media=demo.url,
    )


def request_count(demo: Demo, method: str, status: int) -> int:
    """How many `method` requests the server answered with `status`, from /metrics."""
    text = httpx.get(f"{demo.url}/metrics").text
    pattern = rf'^wagate_http_requests_total\{{method="{method}",status="{status}"\}} (\S+)$'
    match = re.search(pattern, text, re.MULTILINE)
    return int(float(match.group(1))) if match else 0


def wait_for_count(api: Any, expected: int, timeout_s: float = 15) -> None:
    """Poll getWebhooksCount until it reports `expected` (jobs finish in the server's worker)."""
    deadline = time.monotonic() + timeout_s
    while True:
        count = api.queues.getWebhooksCount().data["count"]
        if count == expected or time.monotonic() > deadline:
            assert count == expected
            return
        time.sleep(0.05)


@pytest.fixture(autouse=True)
def _restore_sdk_log_handlers() -> Iterator[None]:
    """Each client adds a stderr handler to the SDK's logger; drop them before pytest closes
    the stream they hold."""
    logger = logging.getLogger("whatsapp-api-client-python")
    saved = list(logger.handlers)
    yield
    logger.handlers[:] = saved


@pytest.fixture
def sdk_demo(tmp_path: Path) -> Iterator[Demo]:
    demo = start_demo(make_settings(tmp_path, rate_limits_enabled=False))
    try:
        yield demo
    finally:
        demo.server.stop()


@pytest.fixture
def api(sdk_demo: Demo) -> Iterator[Any]:
    client = green_api(sdk_demo)
    try:
        yield client
    finally:
        client.session.close()


def test_get_avatar_outcomes(api: Any) -> None:
    bob = api.serviceMethods.getAvatar(BOB)
    assert bob.code == 200
    assert bob.data["available"] is True and "reason" not in bob.data
    image = httpx.get(bob.data["urlAvatar"])
    assert image.status_code == 200
    assert image.headers["content-type"] == "image/jpeg"
    assert image.content[:3] == b"\xff\xd8\xff"  # JPEG magic

    assert api.serviceMethods.getAvatar(DAVE).data == {"urlAvatar": "", "available": True}
    assert api.serviceMethods.getAvatar(CAROL).data == {"urlAvatar": "", "available": False}
    assert api.serviceMethods.getAvatar(TIMEOUT_CHAT).data == {
        "urlAvatar": "",
        "available": False,
        "reason": "get avatar timeout limit exceeded",
    }

    malformed = api.serviceMethods.getAvatar("123@c.us")
    assert malformed.code == 400
    assert malformed.data is None
    assert json.loads(malformed.error)["message"] == "bad request data"


def test_account_methods(api: Any, sdk_demo: Demo) -> None:
    before = api.account.getSettings()
    assert before.code == 200
    assert before.data["wid"] == f"{sdk_demo.instance.phone}@c.us"
    assert before.data["incomingWebhook"] in ("yes", "no")

    changes = {
        "delaySendMessagesMilliseconds": 5000,
        "incomingWebhook": "yes",
        "stateWebhook": "yes",
    }
    saved = api.account.setSettings(changes)
    assert saved.code == 200
    assert saved.data == {"saveSettings": True}
    after = api.account.getSettings().data
    assert after == {**before.data, **changes}

    rejected = api.account.setSettings({"incomingWebhook": "maybe"})
    assert rejected.code == 400
    assert api.account.getSettings().data == after

    assert api.account.getStateInstance().data == {"stateInstance": "authorized"}
    wa = api.account.getWaSettings()
    assert wa.code == 200
    assert wa.data["phone"] == sdk_demo.instance.phone
    assert wa.data["stateInstance"] == "authorized"
    assert httpx.get(wa.data["avatar"]).status_code == 200  # Alice sees her own avatar


def test_polling_and_queue_methods(api: Any) -> None:
    # The server answers an empty long poll with JSON null, which the SDK turns into None.
    started = time.monotonic()
    empty = api.receiving.receiveNotification(receiveTimeout=5)
    assert empty.code == 200 and empty.data is None
    assert time.monotonic() - started >= 4.5

    # No SDK wrapper for getAvatarAsync; its empty 200 reads as "[]" in the SDK (a known quirk).
    acknowledged = api.request("POST", ASYNC_URL, {"chatId": BOB})
    assert acknowledged.code == 200 and acknowledged.data == "[]"

    received = api.receiving.receiveNotification(receiveTimeout=30)
    assert received.code == 200
    assert set(received.data) == {"receiptId", "body"}
    body = received.data["body"]
    assert body["typeWebhook"] == "avatarInfo"
    assert body["avatarInfo"]["chatId"] == BOB
    assert body["avatarInfo"]["available"] is True
    assert body["avatarInfo"]["urlAvatar"] == api.serviceMethods.getAvatar(BOB).data["urlAvatar"]
    assert api.queues.getWebhooksCount().data == {"count": 1}

    deleted = api.receiving.deleteNotification(received.data["receiptId"])
    assert deleted.code == 200 and deleted.data == {"result": True}
    assert api.receiving.deleteNotification(received.data["receiptId"]).data == {"result": False}
    assert api.queues.getWebhooksCount().data == {"count": 0}

    for chat in (DAVE, CAROL):
        assert api.request("POST", ASYNC_URL, {"chatId": chat}).code == 200
    wait_for_count(api, 2)
    cleared = api.queues.clearWebhooksQueue()
    assert cleared.code == 200 and cleared.data == {"isCleared": True, "reason": ""}
    assert api.queues.getWebhooksCount().data == {"count": 0}


def test_webhook_polling_loop_receives_and_deletes_avatar_info(sdk_demo: Demo, api: Any) -> None:
    received: list[tuple[str, dict[str, Any]]] = []
    arrived = threading.Event()

    def on_event(type_webhook: str, body: dict[str, Any]) -> None:
        received.append((type_webhook, body))
        api.webhooks.stopReceivingNotifications()
        arrived.set()

    loop = threading.Thread(
        target=api.webhooks.startReceivingNotifications, args=(on_event,), daemon=True
    )
    loop.start()
    sender = green_api(sdk_demo)  # its own session: requests sessions are not shared by threads
    try:
        assert sender.request("POST", ASYNC_URL, {"chatId": DAVE}).code == 200
        assert arrived.wait(20), "the SDK's polling loop did not deliver the avatarInfo"
        loop.join(20)
        assert not loop.is_alive(), "stopReceivingNotifications did not end the loop"
        assert [t for t, _ in received] == ["avatarInfo"]
        assert received[0][1]["avatarInfo"] == {"chatId": DAVE, "urlAvatar": "", "available": True}
        # The loop deletes each notification after its callback returns.
        assert sender.queues.getWebhooksCount().data == {"count": 0}
    finally:
        api.webhooks.stopReceivingNotifications()
        sender.session.close()


def test_partner_client_manages_instances(sdk_demo: Demo) -> None:
    partner = API.GreenApiPartner(PARTNER_TOKEN, host=sdk_demo.url)
    try:
        created = partner.partner.createInstance({"name": "x"})
        assert created.code == 200
        instance_id = created.data["idInstance"]
        token = created.data["apiTokenInstance"]
        assert isinstance(instance_id, int) and re.fullmatch(r"[0-9a-f]{50}", token)

        listed = partner.partner.getInstances()
        assert listed.code == 200
        assert instance_id in [row["idInstance"] for row in listed.data]

        client = green_api(sdk_demo, instance_id, token)
        try:
            assert client.account.getStateInstance().data == {"stateInstance": "authorized"}
            deleted = partner.partner.deleteInstanceAccount(instance_id)
            assert deleted.code == 200 and deleted.data == {"deleteInstanceAccount": True}
            assert client.account.getStateInstance().code == 403
        finally:
            client.session.close()
        assert instance_id not in [row["idInstance"] for row in partner.partner.getInstances().data]
        assert partner.partner.deleteInstanceAccount(instance_id).data == {
            "deleteInstanceAccount": False
        }

        stranger = API.GreenApiPartner("q" * 50, host=sdk_demo.url)
        try:
            assert stranger.partner.getInstances().code == 401
        finally:
            stranger.session.close()
    finally:
        partner.session.close()


def test_sdk_retries_429_then_gives_up_when_it_persists(demo: Demo) -> None:
    """With rate limits on (getStateInstance: 1/s), the SDK's urllib3 retry rides out a short
    429 by honouring Retry-After, and reports a failure (code None) when the 429 persists."""
    api = green_api(demo)
    try:
        assert api.account.getStateInstance().code == 200
        started = time.monotonic()
        # The bucket is empty now: a 429 with Retry-After: 1, then the retry succeeds.
        assert api.account.getStateInstance().data == {"stateInstance": "authorized"}
        assert request_count(demo, "getStateInstance", 429) == 1

        # Stop the limiter's clock so that the bucket never refills: every retry meets a 429.
        limiter = demo.server.runtime.rate_limiter
        assert isinstance(limiter, RateLimiter)
        frozen = limiter._now()
        limiter._now = lambda: frozen
        failed = api.account.getStateInstance()
        elapsed = time.monotonic() - started
        if elapsed > 10:
            pytest.skip(f"the SDK's 429 retries took {elapsed:.1f} s; too slow for this suite")
        assert failed.code is None and failed.data is None
        assert "too many 429 error responses" in failed.error
        # One request and three retries, all refused.
        assert request_count(demo, "getStateInstance", 429) == 1 + 4
    finally:
        api.session.close()
