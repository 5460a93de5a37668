"""GREEN-API's official webhook receivers accept what wagate pushes."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import whatsapp_api_webhook_server_python.webhooksHandler as wh1

from tests.integration.conftest import Demo, make_settings, start_demo

ROOT = Path(__file__).resolve().parents[2]
WH2_PYTHON = ROOT / ".venv-wh2" / "bin" / "python"
BOB = "11001234568@c.us"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def push_demo(tmp_path: Path) -> Iterator[Demo]:
    demo = start_demo(make_settings(tmp_path, rate_limits_enabled=False))
    try:
        yield demo
    finally:
        demo.server.stop()


def push_to(demo: Demo, url: str, token: str = "") -> None:
    settings = {"webhookUrl": url, "webhookUrlToken": token}
    assert httpx.post(demo.method_url("setSettings"), json=settings).status_code == 200
    assert httpx.post(demo.method_url("getAvatarAsync"), json={"chatId": BOB}).status_code == 200


def test_webhook_server_python_v1_receives_avatar_info(push_demo: Demo) -> None:
    events: list[tuple[str, dict[str, Any]]] = []
    arrived = threading.Event()
    ready = threading.Event()
    port = free_port()
    loop = asyncio.new_event_loop()

    def on_event(handler: Any, type_webhook: str, body: dict[str, Any]) -> None:
        events.append((type_webhook, body))
        arrived.set()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        wh1.startServer("127.0.0.1", port, on_event, startLoop=False)
        loop.call_soon(ready.set)
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        assert ready.wait(10)
        # WH1 serves only the root path.
        push_to(push_demo, f"http://127.0.0.1:{port}/")
        assert arrived.wait(20)
        [(type_webhook, body)] = events
        assert type_webhook == "avatarInfo"
        assert body["avatarInfo"]["chatId"] == BOB
        assert body["avatarInfo"]["available"] is True
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def test_webhook_server_python_v2_checks_the_bearer_token(push_demo: Demo, tmp_path: Path) -> None:
    if not WH2_PYTHON.exists():
        pytest.fail(f"{WH2_PYTHON} is missing: `make test` creates it (tests/receivers/)")
    port = free_port()
    output = tmp_path / "events.jsonl"
    output.touch()
    script = ROOT / "tests" / "receivers" / "wh2_receiver.py"
    log = tmp_path / "wh2.log"
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [str(WH2_PYTHON), str(script), str(port), "hook-token", str(output)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        # Another process: poll its port until it listens.
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert process.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "the v2 receiver did not start"
                time.sleep(0.1)
        wrong = httpx.post(
            f"http://127.0.0.1:{port}/",
            json={"typeWebhook": "avatarInfo"},
            headers={"Authorization": "Bearer nope"},
        )
        assert wrong.status_code == 401  # it does check the token wagate must send

        push_to(push_demo, f"http://127.0.0.1:{port}/", token="hook-token")
        while not output.read_text():
            assert time.monotonic() < deadline, "no event reached the v2 receiver"
            time.sleep(0.1)
        [line] = output.read_text().splitlines()
        event = json.loads(line)
        assert event["type"] == "avatarInfo"
        assert event["data"]["avatarInfo"]["chatId"] == BOB
        assert event["data"]["avatarInfo"]["urlAvatar"].startswith(push_demo.url)
    finally:
        process.kill()
        process.wait(10)
