"""kill -9 while requests and webhook deliveries are in flight loses nothing (SPEC 5).

Every acknowledged getAvatarAsync request is pushed at least once after the restart; a
duplicate carries the same `webhook-id`; first deliveries keep request order.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import WagateProcess, cli_json, run_cli
from tests.support.receiver import Answer, Receiver
from wagate.engines.sandbox_demo import write_demo_world

pytestmark = pytest.mark.slow

# Far more than get sent before the crash: the sender is still busy when the server dies.
REQUESTS = 2000


def fire(url: str, chats: list[str], acknowledged: list[str], stop: threading.Event) -> None:
    """Send requests one after another until told to stop or the server goes away."""
    with httpx.Client(timeout=5) as client:
        for chat in chats:
            if stop.is_set():
                return
            try:
                response = client.post(url, json={"chatId": chat})
            except httpx.TransportError:
                return  # killed mid-request: not acknowledged
            if response.status_code == 200:
                acknowledged.append(chat)


def first_deliveries(receiver: Receiver) -> tuple[list[str], dict[str, set[str]]]:
    order: list[str] = []
    ids: dict[str, set[str]] = {}
    for request in receiver.delivered:
        chat = request.json["avatarInfo"]["chatId"]
        if chat not in ids:
            order.append(chat)
        ids.setdefault(chat, set()).add(request.headers["webhook-id"])
    return order, ids


def test_kill_9_during_requests_and_deliveries(
    wagate_server: WagateProcess, tmp_path: Path
) -> None:
    receiver = Receiver(default=Answer(200, delay_s=0.01)).start()
    try:
        env = {"WAGATE_RATE_LIMITS": "off", "WAGATE_AVATAR_TIMEOUT": "0.5"}
        wagate_server.start(**env)
        data_dir = wagate_server.data_dir
        run_cli(data_dir, "sandbox", "load", str(write_demo_world(tmp_path / "world")))
        created: dict[str, Any] = cli_json(
            data_dir, "instance", "create", "--phone", "11001234567", "--json"
        )
        base = f"{wagate_server.url}/waInstance{created['idInstance']}"
        token = created["apiTokenInstance"]
        settings = httpx.post(f"{base}/setSettings/{token}", json={"webhookUrl": receiver.url})
        assert settings.status_code == 200

        chats = [f"110055{n:05d}@c.us" for n in range(REQUESTS)]
        acknowledged: list[str] = []
        stop = threading.Event()
        sender = threading.Thread(
            target=fire, args=(f"{base}/getAvatarAsync/{token}", chats, acknowledged, stop)
        )
        sender.start()
        # Crash once some requests are answered and some deliveries have happened.
        receiver.wait_for(10, timeout_s=30)
        wagate_server.kill()
        stop.set()
        sender.join(10)
        assert 10 <= len(acknowledged) < REQUESTS, "the crash should come mid-load"

        wagate_server.start(**env)
        wanted = set(acknowledged)
        receiver.wait_until(
            lambda delivered: wanted <= {r.json["avatarInfo"]["chatId"] for r in delivered},
            timeout_s=60,
        )
        order, ids = first_deliveries(receiver)
        # Per instance in order: the first delivery of each chat follows the request order.
        assert [c for c in order if c in wanted] == acknowledged
        # A notification delivered twice (crash before its deletion) kept its webhook-id.
        assert all(len(webhook_ids) == 1 for webhook_ids in ids.values())
    finally:
        receiver.stop()
