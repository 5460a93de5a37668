"""Webhook push delivery against real receivers on 127.0.0.1."""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import standardwebhooks

from tests.integration.conftest import (
    PARTNER_TOKEN,
    Demo,
    make_settings,
    start_demo,
)
from tests.support.live_server import LiveServer
from tests.support.receiver import Answer, Receiver
from wagate.core.errors import WagateError
from wagate.core.model import InstanceSettings, NotificationStatus
from wagate.engines.sandbox_demo import DEMO_PHONE

CHATS = ["11001234568@c.us", "11001234570@c.us", "120363043968066561@g.us", "11001234569@c.us"]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver().start()
    try:
        yield receiver
    finally:
        receiver.stop()


@pytest.fixture
def push_demo(tmp_path: Path) -> Iterator[Demo]:
    """Fast retries and rate limits off, so that the tests measure delivery, not waiting."""
    demo = start_demo(
        make_settings(
            tmp_path, webhook_max_interval_s=0.3, webhook_timeout_s=1.0, rate_limits_enabled=False
        )
    )
    try:
        yield demo
    finally:
        demo.server.stop()


def set_webhook(demo: Demo, url: str, token: str = "") -> httpx.Response:
    return httpx.post(
        demo.method_url("setSettings"), json={"webhookUrl": url, "webhookUrlToken": token}
    )


def ask(demo: Demo, *chats: str) -> None:
    for chat in chats:
        response = httpx.post(demo.method_url("getAvatarAsync"), json={"chatId": chat})
        assert response.status_code == 200


def queued(demo: Demo, status: NotificationStatus = NotificationStatus.QUEUED) -> list[Any]:
    return demo.server.call(lambda rt: rt.store.list_notifications(demo.instance.id, status, 1000))


def wait_until(condition: Any, timeout_s: float = 20) -> None:
    """Poll a store condition: no event crosses from the server's workers to the test here."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def test_delivery_carries_bearer_token_and_a_verifiable_signature(
    push_demo: Demo, receiver: Receiver
) -> None:
    assert set_webhook(push_demo, receiver.url, "s3cret").json() == {"saveSettings": True}
    ask(push_demo, CHATS[0])
    [got] = receiver.wait_for(1)
    assert got.headers["authorization"] == "Bearer s3cret"
    assert got.headers["content-type"] == "application/json"
    secret = push_demo.instance.webhook_signing_secret
    payload = standardwebhooks.Webhook(secret).verify(got.body, got.headers)
    assert payload == got.json
    assert got.json["typeWebhook"] == "avatarInfo"
    assert got.json["avatarInfo"]["chatId"] == CHATS[0]
    assert got.json["instanceData"]["idInstance"] == push_demo.instance.id
    wait_until(lambda: not queued(push_demo))


def test_no_authorization_header_without_a_token(push_demo: Demo, receiver: Receiver) -> None:
    set_webhook(push_demo, receiver.url)
    ask(push_demo, CHATS[1])
    [got] = receiver.wait_for(1)
    assert "authorization" not in got.headers
    assert got.headers["webhook-id"].startswith("msg_")


def test_push_mode_blocks_polling_and_clearing_it_makes_the_queue_pollable(
    push_demo: Demo,
) -> None:
    dead = Receiver().start()
    dead.stop()  # nothing listens on its port now
    set_webhook(push_demo, dead.url)
    response = httpx.get(push_demo.method_url("receiveNotification"))
    assert response.status_code == 400
    assert "pushed" in response.json()["message"]
    ask(push_demo, CHATS[0])
    wait_until(lambda: any(n.attempts >= 1 for n in queued(push_demo)))
    set_webhook(push_demo, "")
    polled = httpx.get(push_demo.method_url("receiveNotification"), timeout=10).json()
    assert polled["body"]["avatarInfo"]["chatId"] == CHATS[0]


def test_failing_receiver_gets_everything_in_order_with_stable_ids(
    push_demo: Demo, receiver: Receiver
) -> None:
    receiver.plan.extend([Answer(500), Answer(503), Answer(404)])
    set_webhook(push_demo, receiver.url)
    ask(push_demo, *CHATS)
    delivered = receiver.wait_for(len(CHATS))
    assert [r.json["avatarInfo"]["chatId"] for r in delivered] == CHATS
    first_id = delivered[0].headers["webhook-id"]
    assert [r.headers["webhook-id"] for r in receiver.requests[:4]] == [first_id] * 4
    assert len({r.headers["webhook-id"] for r in delivered}) == len(CHATS)


def test_timeouts_are_retried(push_demo: Demo, receiver: Receiver) -> None:
    # Longer than the 1 s attempt timeout; answered 500 so the receiver does not count it.
    receiver.plan.append(Answer(500, delay_s=2.0))
    set_webhook(push_demo, receiver.url)
    ask(push_demo, CHATS[0], CHATS[1])
    delivered = receiver.wait_for(2)
    assert [r.json["avatarInfo"]["chatId"] for r in delivered] == CHATS[:2]
    receiver.wait_for(3, delivered=False)  # the slow first answer, recorded when it finished
    first_attempts = [r for r in receiver.requests if r.body == delivered[0].body]
    assert len(first_attempts) == 2
    assert first_attempts[0].headers["webhook-id"] == first_attempts[1].headers["webhook-id"]


def test_retry_after_is_honoured(tmp_path: Path, receiver: Receiver) -> None:
    demo = start_demo(make_settings(tmp_path, webhook_max_interval_s=5, rate_limits_enabled=False))
    try:
        receiver.plan.append(Answer(429, {"Retry-After": "2"}))
        set_webhook(demo, receiver.url)
        ask(demo, CHATS[0])
        started = time.monotonic()
        receiver.wait_for(1)
        assert time.monotonic() - started >= 1.8  # not the 1 s of the computed first retry
        [failure] = [n for n in receiver.requests if n.answered == 429]
        assert failure.headers["webhook-id"] == receiver.delivered[0].headers["webhook-id"]
    finally:
        demo.server.stop()


def test_receiver_that_is_down_and_comes_back(push_demo: Demo) -> None:
    down = Receiver().start()
    port, url = down.port, down.url
    down.stop()
    set_webhook(push_demo, url)
    ask(push_demo, *CHATS[:3])
    wait_until(lambda: any(n.attempts >= 2 for n in queued(push_demo)))
    [head] = queued(push_demo)[:1]
    assert "connect" in head.last_error
    back = Receiver(port=port).start()
    try:
        delivered = back.wait_for(3)
        assert [r.json["avatarInfo"]["chatId"] for r in delivered] == CHATS[:3]
    finally:
        back.stop()


def test_a_slow_receiver_does_not_hold_up_other_instances(
    push_demo: Demo, receiver: Receiver
) -> None:
    slow = Receiver(default=Answer(200, delay_s=5)).start()
    try:
        other = push_demo.server.call(lambda rt: rt.instances.create(phone="11001234570"))
        other_demo = Demo(push_demo.server, other)
        set_webhook(push_demo, slow.url)
        set_webhook(other_demo, receiver.url)
        ask(push_demo, CHATS[0], CHATS[1])
        ask(other_demo, *CHATS)
        delivered = receiver.wait_for(len(CHATS), timeout_s=4)
        assert [r.json["instanceData"]["idInstance"] for r in delivered] == [other.id] * 4
        assert slow.requests == []  # its first answer is still pending
    finally:
        slow.stop()


def ask_a_failing_receiver(tmp_path: Path, receiver: Receiver, **retention: float) -> Demo:
    """A server with these retention settings whose one notification goes to a receiver that
    answers 500 to everything."""
    demo = start_demo(
        make_settings(tmp_path, webhook_max_interval_s=0.2, rate_limits_enabled=False, **retention)
    )
    receiver.default = Answer(500)
    set_webhook(demo, receiver.url)
    ask(demo, CHATS[0])
    return demo


def test_dead_letter_after_retention_then_replay(tmp_path: Path, receiver: Receiver) -> None:
    demo = ask_a_failing_receiver(tmp_path, receiver, notification_retention_s=1.0)
    try:
        wait_until(lambda: bool(queued(demo, NotificationStatus.DEAD)))
        admin = {"Authorization": f"Bearer {PARTNER_TOKEN}"}
        listing = httpx.get(
            f"{demo.url}/admin/instances/{demo.instance.id}/notifications",
            params={"status": "dead"},
            headers=admin,
        ).json()
        [dead] = listing
        assert dead["attempts"] >= 1 and dead["lastError"] == "HTTP 500"
        failed_id = receiver.requests[0].headers["webhook-id"]
        assert dead["webhookId"] == failed_id

        receiver.default = Answer(200)
        replay_url = f"{demo.url}/admin/instances/{demo.instance.id}/notifications/replay"
        # An empty list names none; no list means all of the instance's.
        none = httpx.post(replay_url, json={"receiptIds": []}, headers=admin)
        assert none.json() == {"replayed": 0}
        assert httpx.post(replay_url, json={}, headers=admin).json() == {"replayed": 1}
        [got] = receiver.wait_for(1)
        assert got.headers["webhook-id"] == failed_id
        assert got.json["avatarInfo"]["chatId"] == CHATS[0]
        assert httpx.post(replay_url, json={}, headers={}).status_code == 401
    finally:
        demo.server.stop()


def counted(demo: Demo, name: str, suffix: str = "_total") -> float:
    """A pipeline figure of the server's /metrics (a counter's `name` without `_total`)."""
    text = httpx.get(f"{demo.url}/metrics").text
    found = re.search(rf"^{name}{suffix} (\S+)$", text, re.MULTILINE)
    assert found is not None, f"{name}{suffix} is not in /metrics"
    return float(found.group(1))


def test_metrics_count_answered_jobs_and_webhook_outcomes(demo: Demo, receiver: Receiver) -> None:
    receiver.plan.append(Answer(500))  # the first attempt fails, its retry and the next succeed
    set_webhook(demo, receiver.url)
    ask(demo, CHATS[0], CHATS[1])
    receiver.wait_for(2)
    wait_until(lambda: counted(demo, "wagate_webhooks_delivered") == 2)
    assert counted(demo, "wagate_avatar_jobs_answered") == 2
    assert counted(demo, "wagate_avatar_jobs_pending", suffix="") == 0
    assert counted(demo, "wagate_webhook_attempts_failed") == 1
    assert [r.answered for r in receiver.requests] == [500, 200, 200]
    for untouched in (
        "wagate_avatar_lookups_given_up",
        "wagate_notifications_dead_lettered",
        "wagate_dead_letters_deleted",
    ):
        assert counted(demo, untouched) == 0


def test_metrics_show_the_avatar_jobs_still_pending(tmp_path: Path) -> None:
    # The demo world's timeout fault holds its lookup for the whole avatar timeout.
    demo = start_demo(make_settings(tmp_path, avatar_timeout_s=30.0))
    try:
        assert counted(demo, "wagate_avatar_jobs_pending", suffix="") == 0
        ask(demo, "11009999999@c.us", CHATS[0])
        assert counted(demo, "wagate_avatar_jobs_pending", suffix="") == 2
    finally:
        demo.server.stop()


def test_metrics_are_served_while_the_database_is_away(
    demo: Demo, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def unreachable(instance_id: int | None = None) -> int:
        raise WagateError("database error (OperationalError)")

    monkeypatch.setattr(demo.server.runtime.store, "count_avatar_jobs", unreachable)
    answer = httpx.get(f"{demo.url}/metrics")
    assert answer.status_code == 200
    assert re.search(r"^wagate_avatar_jobs_pending NaN$", answer.text, re.MULTILINE)
    assert counted(demo, "wagate_avatar_jobs_answered") == 0


def test_dead_letters_are_deleted_after_their_own_retention_when_one_is_set(
    tmp_path: Path, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "wagate.workers.retention")
    demo = ask_a_failing_receiver(
        tmp_path, receiver, notification_retention_s=0.5, dead_letter_retention_s=1.0
    )
    try:

        def said(message: str) -> list[logging.LogRecord]:
            return [r for r in caplog.records if r.getMessage() == message]

        wait_until(lambda: bool(said("dead letters deleted after their retention")))
        [moved] = said("notifications dead-lettered after retention")
        [deleted] = said("dead letters deleted after their retention")
        assert (getattr(moved, "count", None), getattr(deleted, "count", None)) == (1, 1)
        assert moved.created <= deleted.created
        assert queued(demo, NotificationStatus.DEAD) == []
        assert queued(demo) == []
        assert len(receiver.requests) >= 1  # it was tried, and failed, before it died
        assert counted(demo, "wagate_notifications_dead_lettered") == 1
        assert counted(demo, "wagate_dead_letters_deleted") == 1
        assert counted(demo, "wagate_webhook_attempts_failed") == len(receiver.requests)
        assert counted(demo, "wagate_webhooks_delivered") == 0
    finally:
        demo.server.stop()


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[fe80::1]/hook",
        "http://100.100.100.200/",
        "http://[::ffff:169.254.169.254]/",
        "gopher://127.0.0.1/",
    ],
)
def test_refused_webhook_urls_at_set_settings(push_demo: Demo, url: str) -> None:
    response = set_webhook(push_demo, url)
    assert response.status_code == 400
    assert response.json()["message"].startswith("Validation failed. Details: 'webhookUrl'")
    assert httpx.get(push_demo.method_url("getSettings")).json()["webhookUrl"] == ""


def test_hostname_resolving_to_metadata_is_refused_at_delivery(
    tmp_path: Path, receiver: Receiver
) -> None:
    dns = {"hooks.test": "127.0.0.1"}

    async def resolve(host: str, port: int) -> list[str]:
        return [dns.get(host, host)]

    server = LiveServer(make_settings(tmp_path, rate_limits_enabled=False), resolve).start()
    try:
        instance = server.call(lambda rt: rt.instances.create(phone=DEMO_PHONE))
        demo = Demo(server, instance)
        url = f"http://hooks.test:{receiver.port}/hook"
        assert set_webhook(demo, url).json() == {"saveSettings": True}
        # The name passed the check at setSettings; now it resolves to the metadata address.
        dns["hooks.test"] = "169.254.169.254"
        ask(demo, "11005550002@c.us")
        wait_until(lambda: any(n.attempts >= 1 for n in queued(demo)))
        [head] = queued(demo)
        assert head.last_error.startswith("address refused: 169.254.169.254")
        assert receiver.requests == []
    finally:
        server.stop()


def test_operator_deny_list_refuses_loopback(tmp_path: Path, receiver: Receiver) -> None:
    settings = make_settings(tmp_path, webhook_deny=(ipaddress.ip_network("127.0.0.0/8"),))
    demo = start_demo(settings)
    try:
        response = set_webhook(demo, receiver.url)
        assert response.status_code == 400
        assert "WAGATE_WEBHOOK_DENY" in response.json()["message"]
        # Set behind the check's back (as if the range was denied later): delivery refuses too.
        demo.server.call(
            lambda rt: rt.instances.set_settings(
                demo.instance.id, InstanceSettings(webhook_url=receiver.url)
            )
        )
        ask(demo, CHATS[0])
        wait_until(lambda: any(n.attempts >= 1 for n in queued(demo)))
        assert "WAGATE_WEBHOOK_DENY" in queued(demo)[0].last_error
        assert receiver.requests == []
    finally:
        demo.server.stop()


def test_queued_notifications_are_pushed_when_a_url_is_set(
    push_demo: Demo, receiver: Receiver
) -> None:
    ask(push_demo, CHATS[0], CHATS[1])
    first = httpx.get(push_demo.method_url("receiveNotification"), timeout=10).json()
    assert first is not None
    set_webhook(push_demo, receiver.url)
    delivered = receiver.wait_for(2)
    assert [r.json["avatarInfo"]["chatId"] for r in delivered] == CHATS[:2]
    assert json.loads(delivered[0].body) == first["body"]


def test_one_keep_alive_connection_serves_a_receiver(push_demo: Demo, receiver: Receiver) -> None:
    set_webhook(push_demo, receiver.url)
    ask(push_demo, *CHATS)
    delivered = receiver.wait_for(len(CHATS))
    assert len({r.client for r in delivered}) == 1


def test_idle_dispatcher_does_not_spin(push_demo: Demo, receiver: Receiver) -> None:
    set_webhook(push_demo, receiver.url)
    ask(push_demo, CHATS[0])
    receiver.wait_for(1)
    store = push_demo.server.runtime.store
    calls = []
    original = store.claim_push_lanes

    async def counting(limit: int, lease: Any, named: Any = None) -> list[int]:
        calls.append(limit)
        return await original(limit, lease, named)

    store.claim_push_lanes = counting  # type: ignore[method-assign]  # observe the dispatcher
    try:
        time.sleep(1.0)  # the observation window itself, not synchronisation
        # With a 0.2 s poll interval an idle dispatcher claims about 5 times a second, not 1000s.
        assert len(calls) <= 10
        ask(push_demo, CHATS[1])
        receiver.wait_for(2)
        assert calls, "new work woke the dispatcher"
    finally:
        store.claim_push_lanes = original  # type: ignore[method-assign]
