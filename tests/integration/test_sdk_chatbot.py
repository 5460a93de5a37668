"""The official `whatsapp-chatbot-python` bot (1.1.1) starts and polls against a live wagate.

At construction `GreenAPIBot` reads getSettings, calls setSettings when every message webhook
is off, and drains the queue (receive + delete until an empty poll); `run_forever()` then polls
receiveNotification in a `while True` loop whose only exit is `KeyboardInterrupt`. The test stops
it through that exit: its receiveNotification is wrapped to raise `KeyboardInterrupt` on the call
after the one under test, so the loop ends by its own `break`, with no daemon thread left behind.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from whatsapp_chatbot_python import GreenAPIBot  # type: ignore[import-untyped]

from tests.integration.conftest import Demo, make_settings, start_demo

BOB, DAVE = "11001234568@c.us", "11001234570@c.us"
SDK_LOGGERS = ("whatsapp-chatbot-python", "whatsapp-api-client-python")


def request_count(demo: Demo, method: str, status: int) -> int:
    """How many `method` requests the server answered with `status`, from /metrics."""
    text = httpx.get(f"{demo.url}/metrics").text
    pattern = rf'^wagate_http_requests_total\{{method="{method}",status="{status}"\}} (\S+)$'
    match = re.search(pattern, text, re.MULTILINE)
    return int(float(match.group(1))) if match else 0


@pytest.fixture
def bot_demo(tmp_path: Path) -> Iterator[Demo]:
    demo = start_demo(make_settings(tmp_path, rate_limits_enabled=False))
    try:
        yield demo
    finally:
        demo.server.stop()


@pytest.fixture(autouse=True)
def _restore_sdk_log_handlers() -> Iterator[None]:
    """The SDK adds a stderr handler per client; drop them before pytest closes that stream."""
    saved = {name: list(logging.getLogger(name).handlers) for name in SDK_LOGGERS}
    yield
    for name, handlers in saved.items():
        logging.getLogger(name).handlers[:] = handlers


def test_bot_drains_the_queue_at_start_up_then_polls(
    bot_demo: Demo, caplog: pytest.LogCaptureFixture
) -> None:
    # A notification queued before the bot starts (the long poll returns once it is queued).
    assert httpx.post(bot_demo.method_url("getAvatarAsync"), json={"chatId": DAVE}).is_success
    head = httpx.get(bot_demo.method_url("receiveNotification"), timeout=40).json()
    assert head["body"]["avatarInfo"]["chatId"] == DAVE
    assert request_count(bot_demo, "deleteNotification", 200) == 0

    caplog.set_level(logging.INFO, logger="whatsapp-chatbot-python")
    bot = GreenAPIBot(
        str(bot_demo.instance.id),
        bot_demo.instance.api_token,
        host=bot_demo.url,
        media=bot_demo.url,
        raise_errors=True,  # any non-200 answer raises instead of being logged
    )
    try:
        # Start-up deleted the old notification and found the queue empty.
        assert request_count(bot_demo, "deleteNotification", 200) == 1
        assert httpx.get(bot_demo.method_url("getWebhooksCount")).json() == {"count": 0}
        assert "Deleted old incoming notifications." in caplog.messages
        # The demo instance starts with every message webhook off, so the bot switched them on.
        settings = httpx.get(bot_demo.method_url("getSettings")).json()
        assert settings["incomingWebhook"] == "yes"
        assert settings["outgoingMessageWebhook"] == "yes"
        assert settings["outgoingAPIMessageWebhook"] == "yes"

        polls: list[Any] = []
        stop_next = threading.Event()
        real_receive = bot.api.receiving.receiveNotification

        def observed_receive(*args: Any, **kwargs: Any) -> Any:
            if stop_next.is_set():
                raise KeyboardInterrupt  # run_forever's own way out of its loop
            response = real_receive(*args, **kwargs)
            polls.append(response)
            if response.data:
                stop_next.set()
            return response

        bot.api.receiving.receiveNotification = observed_receive
        failures: list[BaseException] = []

        def run() -> None:
            try:
                bot.run_forever()
            except BaseException as exc:  # reported by the assertion below
                failures.append(exc)

        received_before = request_count(bot_demo, "receiveNotification", 200)
        runner = threading.Thread(target=run, daemon=True)
        runner.start()
        # The bot's long poll ends as soon as this avatarInfo is queued.
        assert httpx.post(bot_demo.method_url("getAvatarAsync"), json={"chatId": BOB}).is_success
        runner.join(30)
        assert not runner.is_alive(), "run_forever did not stop"
        assert failures == []

        assert [p.code for p in polls] == [200]
        assert polls[0].data["body"]["typeWebhook"] == "avatarInfo"
        assert polls[0].data["body"]["avatarInfo"]["chatId"] == BOB
        assert request_count(bot_demo, "receiveNotification", 200) == received_before + 1
        # The bot routed the (unhandled) avatarInfo without error and deleted it.
        assert request_count(bot_demo, "deleteNotification", 200) == 2
        assert httpx.get(bot_demo.method_url("getWebhooksCount")).json() == {"count": 0}
        assert "Stopped receiving incoming notifications." in caplog.messages
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    finally:
        bot.api.session.close()
