"""Two wagate nodes on one PostgreSQL database: any node serves any instance."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.conftest import Demo, make_settings
from tests.support.live_server import LiveServer
from tests.support.receiver import Answer, Receiver
from wagate.engines.sandbox_demo import DEMO_PHONE, write_demo_world
from wagate.engines.sandbox_world import load_world_file

pytestmark = pytest.mark.postgres

CHATS = ["11001234568@c.us", "11001234570@c.us", "120363043968066561@g.us"]


@pytest.fixture
def nodes(tmp_path: Path, postgres_database: Any, postgres_template: str) -> Iterator[list[Demo]]:
    """Nodes A and B, sharing one fresh database, both serving the demo instance. The poll
    interval is long, so that only a cross-node wake-up can end a wait quickly."""
    url = postgres_database(postgres_template)
    servers = [
        LiveServer(
            make_settings(
                tmp_path / name, database_url=url, poll_interval_s=10, rate_limits_enabled=False
            )
        ).start()
        for name in ("a", "b")
    ]
    try:
        world = write_demo_world(tmp_path / "world")

        async def setup(runtime: Any) -> Any:
            await load_world_file(world, runtime.store, runtime.images, (11, 12))
            return await runtime.instances.create(phone=DEMO_PHONE)

        instance = servers[0].call(setup)
        yield [Demo(server, instance) for server in servers]
    finally:
        for server in servers:
            server.stop()


def test_a_request_on_a_ends_a_long_poll_on_b_at_once(nodes: list[Demo]) -> None:
    a, b = nodes
    result: list[Any] = []
    polling = threading.Event()

    def poll() -> None:
        polling.set()
        response = httpx.get(
            b.method_url("receiveNotification"), params={"receiveTimeout": 30}, timeout=40
        )
        result.append(response.json())

    poller = threading.Thread(target=poll)
    poller.start()
    polling.wait()
    started = time.monotonic()
    assert httpx.post(a.method_url("getAvatarAsync"), json={"chatId": CHATS[0]}).status_code == 200
    poller.join(35)
    # Well inside the 10 s poll interval: LISTEN/NOTIFY woke node B.
    assert time.monotonic() - started < 5
    assert result[0]["body"]["avatarInfo"]["chatId"] == CHATS[0]
    # Node A serves the same queue: the head is the same until deleted on either node.
    head = httpx.get(a.method_url("receiveNotification"), timeout=10).json()
    assert head["receiptId"] == result[0]["receiptId"]
    delete = httpx.delete(a.method_url("deleteNotification", str(head["receiptId"])))
    assert delete.json() == {"result": True}
    assert httpx.get(b.method_url("getWebhooksCount")).json() == {"count": 0}


def test_two_nodes_never_push_one_instance_concurrently(nodes: list[Demo]) -> None:
    b = nodes[1]
    receiver = Receiver(default=Answer(200, delay_s=0.05)).start()
    try:
        settings = {"webhookUrl": receiver.url}
        assert httpx.post(b.method_url("setSettings"), json=settings).status_code == 200
        sent = [CHATS[i % len(CHATS)] for i in range(24)]
        for i, chat in enumerate(sent):
            node = nodes[i % 2]
            assert (
                httpx.post(node.method_url("getAvatarAsync"), json={"chatId": chat}).status_code
                == 200
            )
        delivered = receiver.wait_for(len(sent), timeout_s=60)
        assert receiver.max_in_flight == 1
        assert [r.json["avatarInfo"]["chatId"] for r in delivered] == sent
        assert len({r.headers["webhook-id"] for r in delivered}) == len(sent)
    finally:
        receiver.stop()


def test_rate_limits_hold_across_nodes_with_redis(
    tmp_path: Path, postgres_database: Any, postgres_template: str, redis_url: str
) -> None:
    url = postgres_database(postgres_template)
    servers = [
        LiveServer(make_settings(tmp_path / name, database_url=url, redis_url=redis_url)).start()
        for name in ("a", "b")
    ]
    try:
        instance = servers[0].call(lambda rt: rt.instances.create(phone=DEMO_PHONE))
        a, b = (Demo(server, instance) for server in servers)
        # getStateInstance allows 1 call a second per instance: node B must see A's call.
        first = httpx.get(a.method_url("getStateInstance"))
        second = httpx.get(b.method_url("getStateInstance"))
        assert first.status_code == 200
        assert second.status_code == 429
        assert int(second.headers["Retry-After"]) >= 1
        # Per-instance: another instance has its own budget on the same nodes.
        other = servers[1].call(lambda rt: rt.instances.create(phone="11001234568"))
        assert httpx.get(Demo(servers[0], other).method_url("getStateInstance")).status_code == 200
    finally:
        for server in servers:
            server.stop()
