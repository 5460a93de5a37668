"""getAvatar and getAvatarAsync end to end against the live server and the demo world."""

from __future__ import annotations

import functools
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.conftest import Demo, make_settings, start_demo
from wagate.bootstrap import Runtime
from wagate.core.model import Instance, InstanceSettings

BOB, CAROL, DAVE, NOBODY_HOME = "11001234568", "11001234569", "11001234570", "11001234571"
GROUP = "120363043968066561@g.us"


def get_avatar(demo: Demo, chat_id: Any) -> httpx.Response:
    return httpx.post(demo.method_url("getAvatar"), json={"chatId": chat_id}, timeout=10)


def test_visible_avatar_is_served_at_a_stable_url(demo: Demo) -> None:
    first = get_avatar(demo, f"{BOB}@c.us")
    assert first.status_code == 200
    body = first.json()
    assert body["available"] is True and "reason" not in body
    assert body["urlAvatar"].startswith(f"{demo.url}/avatars/")
    assert get_avatar(demo, f"{BOB}@c.us").json()["urlAvatar"] == body["urlAvatar"]

    image = httpx.get(body["urlAvatar"])
    assert image.status_code == 200
    assert image.headers["content-type"] in ("image/png", "image/jpeg", "image/webp")
    extension = body["urlAvatar"].rsplit(".", 1)[1]
    assert {"png": "image/png", "jpg": "image/jpeg", "webp": "image/webp"}[extension] == (
        image.headers["content-type"]
    )
    etag = image.headers["etag"]
    for if_none_match in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        revalidated = httpx.get(body["urlAvatar"], headers={"If-None-Match": if_none_match})
        assert revalidated.status_code == 304, if_none_match
        assert revalidated.headers["etag"] == etag and revalidated.content == b""
    assert httpx.get(body["urlAvatar"], headers={"If-None-Match": '"other"'}).status_code == 200
    # HEAD answers as GET would, without the bytes (link checkers and caches ask first).
    head = httpx.head(body["urlAvatar"])
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(image.content))
    assert head.headers["etag"] == etag


@pytest.mark.parametrize(
    ("chat_id", "expected"),
    [
        (f"{DAVE}@c.us", {"urlAvatar": "", "available": True}),
        (f"{CAROL}@c.us", {"urlAvatar": "", "available": False}),
        (f"{NOBODY_HOME}@c.us", {"urlAvatar": "", "available": False}),
        ("11005550000@c.us", {"urlAvatar": "", "available": False}),
        (
            "11009999999@c.us",
            {"urlAvatar": "", "available": False, "reason": "get avatar timeout limit exceeded"},
        ),
    ],
    ids=["not-set", "hidden", "not-on-whatsapp", "unknown-number", "timeout"],
)
def test_avatar_outcomes(demo: Demo, chat_id: str, expected: dict[str, Any]) -> None:
    response = get_avatar(demo, chat_id)
    assert response.status_code == 200
    assert response.json() == expected


def test_own_and_group_avatars_are_available(demo: Demo) -> None:
    own = get_avatar(demo, f"{demo.instance.phone}@c.us").json()
    group = get_avatar(demo, GROUP).json()
    assert own["available"] and own["urlAvatar"]
    assert group["available"] and group["urlAvatar"]
    assert own["urlAvatar"] != group["urlAvatar"]


@pytest.mark.parametrize(
    "chat_id", ["", "123@c.us", "1100123456789@c.us", "11001234568@s.whatsapp.net", " 1@g.us"]
)
def test_malformed_chat_id_is_bad_request_data(demo: Demo, chat_id: str) -> None:
    for method in ("getAvatar", "getAvatarAsync"):
        response = httpx.post(demo.method_url(method), json={"chatId": chat_id})
        assert response.status_code == 400
        assert response.json()["message"] == "bad request data"
    assert httpx.get(demo.method_url("getWebhooksCount")).json() == {"count": 0}


def receive(demo: Demo, timeout_s: int = 5) -> Any:
    response = httpx.get(
        demo.method_url("receiveNotification"),
        params={"receiveTimeout": timeout_s},
        timeout=timeout_s + 5,
    )
    assert response.status_code == 200
    return response.json()


def test_async_request_yields_one_avatar_info_notification(demo: Demo) -> None:
    response = httpx.post(demo.method_url("getAvatarAsync"), json={"chatId": f"{BOB}@c.us"})
    assert response.status_code == 200
    assert response.content == b""

    received = receive(demo, 30)
    body = received["body"]
    assert body["typeWebhook"] == "avatarInfo"
    assert body["instanceData"] == {
        "idInstance": demo.instance.id,
        "wid": f"{demo.instance.phone}@c.us",
        "typeInstance": "whatsapp",
    }
    assert isinstance(body["timestamp"], int)
    assert body["avatarInfo"] == {
        "chatId": f"{BOB}@c.us",
        "urlAvatar": get_avatar(demo, f"{BOB}@c.us").json()["urlAvatar"],
        "available": True,
    }
    # The head stays until deleted, then it is gone and nothing else was queued.
    assert receive(demo)["receiptId"] == received["receiptId"]
    delete_url = demo.method_url("deleteNotification", str(received["receiptId"]))
    assert httpx.delete(delete_url).json() == {"result": True}
    assert httpx.delete(delete_url).json() == {"result": False}
    assert httpx.get(demo.method_url("getWebhooksCount")).json() == {"count": 0}


def test_notifications_keep_request_order_with_failure_reasons(demo: Demo) -> None:
    chats = ["11009999999@c.us", f"{CAROL}@c.us", GROUP, f"{DAVE}@c.us"]
    for chat in chats:
        assert (
            httpx.post(demo.method_url("getAvatarAsync"), json={"chatId": chat}).status_code == 200
        )
    infos = []
    receipts = []
    for _ in chats:
        received = receive(demo, 30)
        infos.append(received["body"]["avatarInfo"])
        receipts.append(received["receiptId"])
        httpx.delete(demo.method_url("deleteNotification", str(received["receiptId"])))
    assert [i["chatId"] for i in infos] == chats
    assert receipts == sorted(receipts)
    assert infos[0]["reason"] == "get avatar timeout limit exceeded"
    assert infos[1] == {"chatId": chats[1], "urlAvatar": "", "available": False}
    assert infos[2]["available"] is True and infos[2]["urlAvatar"]
    assert infos[3] == {"chatId": chats[3], "urlAvatar": "", "available": True}


def test_a_backlog_of_one_instance_is_answered_in_request_order(tmp_path: Path) -> None:
    """Jobs queued behind a slow lookup are then claimed and completed in batches; the
    notifications still come out one per request, in request order."""
    slow = "11009999999@c.us"  # times out after WAGATE_AVATAR_TIMEOUT
    chats = [slow] + [f"7900{i:07d}@c.us" for i in range(199)]
    demo = start_demo(make_settings(tmp_path, rate_limits_enabled=False))
    try:
        with httpx.Client(timeout=10) as client:
            for chat in chats:
                response = client.post(demo.method_url("getAvatarAsync"), json={"chatId": chat})
                assert response.status_code == 200
            received = []
            for _ in chats:
                answer = client.get(
                    demo.method_url("receiveNotification"), params={"receiveTimeout": 30}
                )
                assert answer.status_code == 200
                received.append(answer.json())
                receipt = str(received[-1]["receiptId"])
                deleted = client.delete(demo.method_url("deleteNotification", receipt))
                assert deleted.json() == {"result": True}
            assert client.get(demo.method_url("getWebhooksCount")).json() == {"count": 0}
    finally:
        demo.server.stop()
    assert [n["body"]["avatarInfo"]["chatId"] for n in received] == chats
    receipts = [n["receiptId"] for n in received]
    assert receipts == sorted(receipts)
    assert received[0]["body"]["avatarInfo"]["reason"] == "get avatar timeout limit exceeded"
    assert all(n["body"]["avatarInfo"]["available"] is False for n in received[1:])


def queue_behind_a_running_batch(
    demo: Demo, slow: str, chats: list[str], batch_running: threading.Event
) -> list[Any]:
    """Request `slow` (a chat that times out), wait until its batch runs (`batch_running`, set
    by the caller's observer), request `chats` behind it, then receive and delete every
    notification; returns them in order."""
    with httpx.Client(timeout=10) as client:
        answer = client.post(demo.method_url("getAvatarAsync"), json={"chatId": slow})
        assert answer.status_code == 200
        assert batch_running.wait(10), "the slow job's batch never ran"
        for chat in chats:
            answer = client.post(demo.method_url("getAvatarAsync"), json={"chatId": chat})
            assert answer.status_code == 200
        received = []
        for _ in [slow, *chats]:
            notification = receive(demo, 30)
            received.append(notification)
            receipt = str(notification["receiptId"])
            assert client.delete(demo.method_url("deleteNotification", receipt)).json()
    return received


def test_jobs_queued_behind_a_running_batch_cost_no_claims(tmp_path: Path) -> None:
    """The completion of an instance's running batch claims the jobs queued behind it in its
    own transaction; their acknowledgements' wake-ups must not each cost the claim loop a claim
    that finds nothing (under load that was one write transaction per request)."""
    slow = "11009999999@c.us"  # times out after WAGATE_AVATAR_TIMEOUT
    chats = [f"7900{i:07d}@c.us" for i in range(10)]
    demo = start_demo(make_settings(tmp_path, rate_limits_enabled=False, poll_interval_s=60))
    store = demo.server.runtime.store
    original = store.claim_avatar_jobs
    claimed: list[int] = []  # jobs per claim
    batch_running = threading.Event()

    async def counting(*args: Any, **kwargs: Any) -> Any:
        jobs = await original(*args, **kwargs)
        claimed.append(len(jobs))
        if jobs:
            batch_running.set()
        return jobs

    store.claim_avatar_jobs = counting  # type: ignore[method-assign]  # observe the worker
    try:
        notifications = queue_behind_a_running_batch(demo, slow, chats, batch_running)
        received = [n["body"]["avatarInfo"]["chatId"] for n in notifications]
    finally:
        store.claim_avatar_jobs = original  # type: ignore[method-assign]
        demo.server.stop()
    assert received == [slow, *chats]
    # The slow job's claim, and at most one that found nothing after the instance's chain of
    # batches ended; the ten jobs were claimed by the slow batch's completion.
    assert claimed[0] == 1
    assert len(claimed) <= 2, claimed


def test_a_chat_asked_for_again_in_a_batch_is_looked_up_once(tmp_path: Path) -> None:
    """Jobs queued behind a slow lookup are claimed as one batch; its repeated chat is looked
    up once, and every request still gets its own notification, in request order."""
    slow = "11009999999@c.us"  # times out after WAGATE_AVATAR_TIMEOUT
    chats = [f"{BOB}@c.us", f"{BOB}@c.us", f"{CAROL}@c.us", f"{BOB}@c.us", "79001234567@c.us"]
    demo = start_demo(make_settings(tmp_path, rate_limits_enabled=False))
    engine: Any = demo.server.runtime.avatars.engine_for(demo.instance)
    original = engine.fetch_avatars
    batches: list[list[str]] = []  # the chats of each engine call
    batch_running = threading.Event()

    async def recording(instance: Any, batch: Any, answers: Any) -> None:
        batches.append([str(chat) for chat in batch])
        batch_running.set()
        await original(instance, batch, answers)

    engine.fetch_avatars = recording  # observe the worker's lookups
    try:
        received = queue_behind_a_running_batch(demo, slow, chats, batch_running)
    finally:
        del engine.fetch_avatars
        demo.server.stop()
    assert batches == [[slow], [f"{BOB}@c.us", f"{CAROL}@c.us", "79001234567@c.us"]]
    assert [n["body"]["avatarInfo"]["chatId"] for n in received] == [slow, *chats]
    bob = [n["body"] for n in received if n["body"]["avatarInfo"]["chatId"] == f"{BOB}@c.us"]
    assert len(bob) == 3 and bob[0] == bob[1] == bob[2]
    assert bob[0]["avatarInfo"]["available"] is True
    assert len({n["receiptId"] for n in received}) == len(received)


async def create_instance(runtime: Runtime, phone: str) -> Instance:
    return await runtime.instances.create(phone=phone)


def test_one_worker_slot_serves_several_instances_without_waiting_for_the_poll(
    tmp_path: Path,
) -> None:
    """One batch at a time and a poll interval beyond the receive timeout: each finishing
    batch must claim the next instance's jobs (or wake the claim loop), or some would wait
    for the poll and the long polls below would time out with null."""
    settings = make_settings(
        tmp_path, rate_limits_enabled=False, avatar_workers=1, poll_interval_s=60
    )
    demo = start_demo(settings)
    try:
        others = [
            demo.server.call(functools.partial(create_instance, phone=phone))
            for phone in ("11001234581", "11001234582")
        ]
        urls = [demo.method_url] + [
            lambda method, *extra, i=i: "/".join(
                [demo.url, f"waInstance{i.id}", method, i.api_token, *extra]
            )
            for i in others
        ]
        chats = [f"7900{i:07d}@c.us" for i in range(15)]
        with httpx.Client(timeout=30) as client:
            for chat in chats:
                for url in urls:
                    answer = client.post(url("getAvatarAsync"), json={"chatId": chat})
                    assert answer.status_code == 200
            for url in urls:
                received = []
                for _ in chats:
                    answer = client.get(url("receiveNotification"), params={"receiveTimeout": 15})
                    assert answer.json() is not None, "a job waited for the poll interval"
                    received.append(answer.json()["body"]["avatarInfo"]["chatId"])
                    receipt = str(answer.json()["receiptId"])
                    assert client.delete(url("deleteNotification", receipt)).json()["result"]
                assert received == chats
    finally:
        demo.server.stop()


def test_long_poll_wakes_when_a_notification_arrives(demo: Demo) -> None:
    results: list[Any] = []
    started = threading.Event()

    def poll() -> None:
        started.set()
        results.append(receive(demo, 60))

    poller = threading.Thread(target=poll)
    poller.start()
    started.wait()
    httpx.post(demo.method_url("getAvatarAsync"), json={"chatId": f"{DAVE}@c.us"})
    # Joined well inside the 60 s receiveTimeout: the poll ended because something arrived.
    poller.join(20)
    assert not poller.is_alive()
    assert results[0]["body"]["avatarInfo"]["chatId"] == f"{DAVE}@c.us"


def waiting_polls(demo: Demo) -> int:
    async def read(runtime: Runtime) -> int:
        return runtime.notifications.waiting_polls

    return demo.server.call(read)


def until(condition: Callable[[], bool], what: str, timeout_s: float = 10) -> None:
    # The server runs in another thread, with no event to wait on: check with a deadline.
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


@pytest.mark.parametrize(
    ("change", "status", "message"),
    [
        ("token rotated", 401, "Unauthorized"),
        ("switched to push", 400, "Notifications are being pushed to webhookUrl"),
    ],
)
def test_a_long_poll_ends_when_another_process_changes_its_instance(
    demo: Demo, change: str, status: int, message: str
) -> None:
    """A token rotated or a webhookUrl set by the CLI or another node ends a waiting poll within
    the poll interval (0.2 s here), not at its 60 s receiveTimeout."""
    results: list[httpx.Response] = []
    poller = threading.Thread(
        target=lambda: results.append(
            httpx.get(
                demo.method_url("receiveNotification"), params={"receiveTimeout": 60}, timeout=70
            )
        )
    )
    poller.start()
    # Authenticated with the token it was sent with, and waiting.
    until(lambda: waiting_polls(demo) == 1, "the poll never waited")

    async def change_in_the_store(runtime: Runtime) -> None:
        # As another process would: past this server's instance service and its cache.
        if change == "token rotated":
            await runtime.store.update_instance(demo.instance.id, api_token="n" * 50)
        else:
            settings = InstanceSettings(webhook_url="http://127.0.0.1:9/hook")
            await runtime.store.update_instance(demo.instance.id, settings=settings)

    demo.server.call(change_in_the_store)
    poller.join(20)
    assert not poller.is_alive(), "the poll waited for its receiveTimeout"
    assert results[0].status_code == status
    assert results[0].json()["message"].startswith(message)


def test_a_long_poll_whose_client_left_stops_waiting(demo: Demo) -> None:
    """uvicorn does not stop a request whose client closed the connection; the poll notices it
    after its next wait (0.2 s here), instead of waiting out its 60 s receiveTimeout."""
    path = f"/waInstance{demo.instance.id}/receiveNotification/{demo.instance.api_token}"
    with socket.create_connection(("127.0.0.1", demo.server.port)) as client:
        client.sendall(f"GET {path}?receiveTimeout=60 HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        until(lambda: waiting_polls(demo) == 1, "the poll never waited")
    until(lambda: waiting_polls(demo) == 0, "the poll went on waiting for nobody")
    metrics = httpx.get(f"{demo.url}/metrics").text
    assert 'wagate_http_requests_total{method="receiveNotification",status="499"} 1.0' in metrics


def test_empty_queue_answers_json_null_after_the_timeout(demo: Demo) -> None:
    response = httpx.get(demo.method_url("receiveNotification"), timeout=15)
    assert response.status_code == 200
    assert response.content == b"null"
