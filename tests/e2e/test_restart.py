"""Acknowledged getAvatarAsync requests survive `kill -9` of `wagate serve` and a restart.

SPEC 5: a 200 means the request is committed; after a crash and restart every acknowledged
request still produces its avatarInfo notification, per instance in request order.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import SHOW_KEYS, WagateProcess, cli_json, run_cli
from wagate.engines.sandbox_demo import write_demo_world

pytestmark = pytest.mark.slow

TIMEOUT_CHAT = "11009999999@c.us"
# Every outcome of the demo world, in the order they are requested after the blocking lookup.
CHATS = [
    "11001234568@c.us",  # Bob: visible avatar
    "11001234569@c.us",  # Carol: hidden
    "11001234570@c.us",  # Dave: no avatar
    "11001234571@c.us",  # not on WhatsApp
    "120363043968066561@g.us",  # group with an avatar
    "11001234567@c.us",  # the instance's own account
    "200123456789012@lid",  # Bob by linked id
    "11001234567-1581234048@g.us",  # old-form group id, no avatar
    "11001234568@c.us",  # Bob again: a repeated chat is answered again
    "11005550000@c.us",  # a number absent from the world
]
# The first server's lookup of the timeout chat would hold the instance's queue for 30 s, and
# its claim on the job is leased for 2 x 30 + 5 s. A server restarted on the same SQLite file
# drops the dead process's leases at start, so recovery must come well before that lease ends.
BLOCKING_TIMEOUT_S = 30
LEASE_S = 2 * BLOCKING_TIMEOUT_S + 5
RECOVERY_S = 20


def receive_all(
    server: WagateProcess, instance: dict[str, Any], expected: int, deadline_s: float
) -> list[dict[str, Any]]:
    """Poll and delete until `expected` notifications arrived (long polls wake on arrival)."""
    base = f"{server.url}/waInstance{instance['idInstance']}"
    token = instance["apiTokenInstance"]
    deadline = time.monotonic() + deadline_s
    bodies: list[dict[str, Any]] = []
    with httpx.Client(timeout=30) as client:
        while len(bodies) < expected and time.monotonic() < deadline:
            got = client.get(f"{base}/receiveNotification/{token}", params={"receiveTimeout": 5})
            assert got.status_code == 200, got.text
            note = got.json()
            if note is None:
                continue
            bodies.append(note["body"])
            deleted = client.delete(f"{base}/deleteNotification/{token}/{note['receiptId']}")
            assert deleted.json() == {"result": True}
        # Nothing beyond the expected ones: no duplicate is waiting.
        assert client.get(f"{base}/receiveNotification/{token}").json() is None
    return bodies


def test_acknowledged_requests_survive_kill_9_and_restart(
    wagate_server: WagateProcess, tmp_path: Path
) -> None:
    wagate_server.start(WAGATE_AVATAR_TIMEOUT=str(BLOCKING_TIMEOUT_S), WAGATE_RATE_LIMITS="off")
    data_dir = wagate_server.data_dir
    world = write_demo_world(tmp_path / "world")
    run_cli(data_dir, "sandbox", "load", str(world))
    created = cli_json(data_dir, "instance", "create", "--phone", "11001234567", "--json")
    assert created["apiUrl"] == wagate_server.url  # recorded by serve

    shown = cli_json(data_dir, "instance", "show", str(created["idInstance"]), "--json")
    assert set(shown) == SHOW_KEYS
    assert shown["apiUrl"] == shown["mediaUrl"] == wagate_server.url
    assert shown["idInstance"] == created["idInstance"]
    assert shown["apiTokenInstance"] == created["apiTokenInstance"]
    assert (shown["engine"], shown["phone"], shown["stateInstance"]) == (
        "sandbox",
        "11001234567",
        "authorized",
    )
    assert shown["webhookSigningSecret"].startswith("whsec_")

    url = (
        f"{wagate_server.url}/waInstance{created['idInstance']}/getAvatarAsync/"
        f"{created['apiTokenInstance']}"
    )
    requested = [TIMEOUT_CHAT, *CHATS]
    started = time.monotonic()
    with httpx.Client(timeout=10) as client:
        for chat in requested:
            acknowledged = client.post(url, json={"chatId": chat})
            assert (acknowledged.status_code, acknowledged.content) == (200, b"")
        # The timeout lookup still holds the instance's queue: nothing has been answered yet.
        count_url = url.replace("getAvatarAsync", "getWebhooksCount")
        assert client.get(count_url).json() == {"count": 0}
    assert time.monotonic() - started < BLOCKING_TIMEOUT_S, "too slow to crash mid-lookup"
    wagate_server.kill()

    wagate_server.start(WAGATE_AVATAR_TIMEOUT="0.5", WAGATE_RATE_LIMITS="off")
    restarted = time.monotonic()
    bodies = receive_all(wagate_server, created, len(requested), deadline_s=RECOVERY_S)
    assert time.monotonic() - restarted < LEASE_S  # not by waiting for the lease to expire

    infos = [body["avatarInfo"] for body in bodies]
    assert [body["typeWebhook"] for body in bodies] == ["avatarInfo"] * len(requested)
    assert [info["chatId"] for info in infos] == requested  # each once, in request order
    assert infos[0] == {
        "chatId": TIMEOUT_CHAT,
        "urlAvatar": "",
        "available": False,
        "reason": "get avatar timeout limit exceeded",
    }
    by_chat = {info["chatId"]: info for info in infos[1:]}
    assert by_chat["11001234568@c.us"]["available"] is True
    assert by_chat["11001234568@c.us"]["urlAvatar"].startswith(f"{wagate_server.url}/avatars/")
    assert by_chat["200123456789012@lid"]["urlAvatar"] == by_chat["11001234568@c.us"]["urlAvatar"]
    assert by_chat["11001234569@c.us"] == {
        "chatId": "11001234569@c.us",
        "urlAvatar": "",
        "available": False,
    }
    assert by_chat["11001234570@c.us"] == {
        "chatId": "11001234570@c.us",
        "urlAvatar": "",
        "available": True,
    }
    assert by_chat["120363043968066561@g.us"]["available"] is True
