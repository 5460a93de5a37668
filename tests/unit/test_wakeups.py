"""In-process wake-ups: a mark taken before reading the queue catches what comes before the wait."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest

from tests.integration.test_postgres_wakeups import LONG_TIMEOUT_S, PROMPT_S
from wagate.core.ports import ANY_INSTANCE
from wagate.core.wakeups import LocalWakeUps

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def timed(wait: Awaitable[object]) -> float:
    began = time.monotonic()
    await wait
    return time.monotonic() - began


async def test_a_notification_between_the_mark_and_the_wait_ends_the_wait_at_once() -> None:
    wakeups = LocalWakeUps()
    mark = wakeups.notification_mark(5)
    await wakeups.notification_added(5)  # while the waiter was still reading the queue
    assert await timed(wakeups.wait_notification(5, LONG_TIMEOUT_S, mark)) < PROMPT_S


async def test_without_a_mark_that_notification_is_missed_until_the_timeout() -> None:
    # Why marks exist: the same order of events, and the wait runs out its timeout.
    wakeups = LocalWakeUps()
    await wakeups.notification_added(5)
    assert await timed(wakeups.wait_notification(5, 0.3)) >= 0.25


async def test_a_mark_sees_only_notifications_after_it_and_of_its_instance() -> None:
    wakeups = LocalWakeUps()
    await wakeups.notification_added(5)
    mark = wakeups.notification_mark(5)
    await wakeups.notification_added(6)
    assert await timed(wakeups.wait_notification(5, 0.3, mark)) >= 0.25


async def test_waiters_with_and_without_marks_share_a_wake_up() -> None:
    wakeups = LocalWakeUps()
    mark = wakeups.notification_mark(5)
    with_mark = asyncio.create_task(timed(wakeups.wait_notification(5, LONG_TIMEOUT_S, mark)))
    plain = asyncio.create_task(timed(wakeups.wait_notification(5, LONG_TIMEOUT_S)))
    await asyncio.sleep(0)  # both are waiting
    await wakeups.notification_added(5)
    assert await with_mark < PROMPT_S
    assert await plain < PROMPT_S


async def test_a_polling_instances_notification_wakes_long_polls_not_the_dispatcher() -> None:
    wakeups = LocalWakeUps()
    poll = asyncio.create_task(timed(wakeups.wait_notification(5, LONG_TIMEOUT_S)))
    push = asyncio.create_task(timed(wakeups.wait_push(0.3)))
    await asyncio.sleep(0)  # both are waiting
    await wakeups.notification_added(5, pushed=False)
    assert await poll < PROMPT_S
    assert await push >= 0.25  # ended by its own timeout only
    push = asyncio.create_task(timed(wakeups.wait_push(LONG_TIMEOUT_S)))
    await asyncio.sleep(0)
    await wakeups.notification_added(5)
    assert await push < PROMPT_S


async def test_a_push_wait_returns_the_instances_the_wake_ups_named() -> None:
    wakeups = LocalWakeUps()
    assert await wakeups.wait_push(0.01) == set()  # timed out
    await wakeups.notification_added(5)
    await wakeups.notification_added(7)
    await wakeups.notification_added(9, pushed=False)  # a polling instance's: not push work
    assert await wakeups.wait_push(LONG_TIMEOUT_S) == {5, 7}
    await wakeups.notification_added(7)
    assert await wakeups.wait_push(LONG_TIMEOUT_S) == {7}  # each wait gets what came since


async def test_a_job_wait_returns_the_instances_the_wake_ups_named() -> None:
    wakeups = LocalWakeUps()
    assert await wakeups.wait_job(0.01) == set()  # timed out
    await wakeups.job_added(5)
    await wakeups.job_added(7)
    assert await wakeups.wait_job(LONG_TIMEOUT_S) == {5, 7}
    await wakeups.job_added()
    assert await wakeups.wait_job(LONG_TIMEOUT_S) == {ANY_INSTANCE}


@pytest.mark.parametrize("wait", ["push", "job", "notification"])
async def test_a_wait_cancelled_as_its_wake_up_fires_ends_cancelled(wait: str) -> None:
    # On Python 3.11 asyncio.wait_for returned normally here and the cancellation was lost: the
    # push dispatcher, cancelled at shutdown just as a lane's release woke it, ran on forever.
    wakeups = LocalWakeUps()
    waits: dict[str, Callable[[], Coroutine[Any, Any, object]]] = {
        "push": lambda: wakeups.wait_push(LONG_TIMEOUT_S),
        "job": lambda: wakeups.wait_job(LONG_TIMEOUT_S),
        "notification": lambda: wakeups.wait_notification(5, LONG_TIMEOUT_S),
    }
    task = asyncio.create_task(waits[wait]())
    await asyncio.sleep(0)  # the task is waiting
    await wakeups.notification_added(5)
    await wakeups.job_added()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
