"""Two nodes on one PostgreSQL; one is killed with kill -9 mid-load; the survivor delivers every
acknowledged request at least once (SPEC 5: a node that dies loses nothing)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import WagateProcess, base_env, run_cli
from tests.support.receiver import Answer, Receiver
from wagate.engines.sandbox_demo import write_demo_world

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

INSTANCES = 3
REQUESTS_PER_NODE = 60
# Short timeouts make short leases, so the survivor takes the dead node's work over quickly.
ENV = {
    "WAGATE_RATE_LIMITS": "off",
    "WAGATE_AVATAR_TIMEOUT": "1",
    "WAGATE_WEBHOOK_TIMEOUT": "1",
    "WAGATE_POLL_INTERVAL": "0.5",
}


@pytest.fixture
def two_nodes(
    tmp_path: Path, postgres_database: Any, postgres_template: str
) -> Iterator[tuple[WagateProcess, WagateProcess, str]]:
    url = postgres_database(postgres_template)
    nodes = (
        WagateProcess(tmp_path / "a", tmp_path / "a.log"),
        WagateProcess(tmp_path / "b", tmp_path / "b.log"),
    )
    try:
        for node in nodes:
            node.start(WAGATE_DATABASE_URL=url, **ENV)
        yield nodes[0], nodes[1], url
    finally:
        for node in nodes:
            node.kill()
            print(f"----- {node.log_path} -----\n{node.log()}")


def method_url(node: WagateProcess, instance: dict[str, Any], method: str) -> str:
    return f"{node.url}/waInstance{instance['idInstance']}/{method}/{instance['apiTokenInstance']}"


def fire(
    node: WagateProcess,
    instances: list[dict[str, Any]],
    sent: list[tuple[int, str]],
    stop: threading.Event,
) -> None:
    with httpx.Client(timeout=5) as client:
        for n in range(REQUESTS_PER_NODE):
            if stop.is_set():
                return
            instance = instances[n % len(instances)]
            chat = f"1100{node.port % 100:02d}{n:05d}@c.us"
            url = method_url(node, instance, "getAvatarAsync")
            try:
                if client.post(url, json={"chatId": chat}).status_code == 200:
                    sent.append((instance["idInstance"], chat))
            except httpx.TransportError:
                return


def test_survivor_delivers_everything_a_dead_node_acknowledged(
    two_nodes: tuple[WagateProcess, WagateProcess, str], tmp_path: Path
) -> None:
    a, b, url = two_nodes
    env = base_env(WAGATE_DATABASE_URL=url)
    run_cli(a.data_dir, "sandbox", "load", str(write_demo_world(tmp_path / "world")), env=env)
    receiver = Receiver(default=Answer(200, delay_s=0.02)).start()
    try:
        instances = [
            json.loads(run_cli(a.data_dir, "instance", "create", "--json", env=env).stdout)
            for _ in range(INSTANCES)
        ]
        for instance in instances:
            settings_url = method_url(b, instance, "setSettings")
            assert httpx.post(settings_url, json={"webhookUrl": receiver.url}).status_code == 200

        sent_a: list[tuple[int, str]] = []
        sent_b: list[tuple[int, str]] = []
        stop_a = threading.Event()
        senders = [
            threading.Thread(target=fire, args=(a, instances, sent_a, stop_a)),
            threading.Thread(target=fire, args=(b, instances, sent_b, threading.Event())),
        ]
        for sender in senders:
            sender.start()
        receiver.wait_for(15, timeout_s=30)
        a.kill()  # mid-load: A holds claims and lanes, and has requests in flight
        stop_a.set()
        for sender in senders:
            sender.join(60)
        acknowledged = sent_a + sent_b
        assert sent_a and len(sent_a) < REQUESTS_PER_NODE, "A should die mid-load"

        wanted = {chat for _, chat in acknowledged}
        receiver.wait_until(
            lambda delivered: wanted <= {r.json["avatarInfo"]["chatId"] for r in delivered},
            timeout_s=90,
        )
        # Per instance, first deliveries follow each node's acknowledgement order.
        seen: dict[int, list[str]] = {}
        for request in receiver.delivered:
            chat = request.json["avatarInfo"]["chatId"]
            chats = seen.setdefault(request.json["instanceData"]["idInstance"], [])
            if chat not in chats:
                chats.append(chat)
        for instance_id, chats in seen.items():
            for sent in (sent_a, sent_b):
                expected = [c for i, c in sent if i == instance_id]
                assert [c for c in chats if c in expected] == expected
        # Duplicates (redelivery after the crash) keep their webhook-id.
        ids: dict[str, set[str]] = {}
        for request in receiver.delivered:
            ids.setdefault(request.json["avatarInfo"]["chatId"], set()).add(
                request.headers["webhook-id"]
            )
        assert all(len(v) == 1 for v in ids.values())
    finally:
        receiver.stop()
