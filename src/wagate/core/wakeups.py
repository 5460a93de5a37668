"""In-process wake-ups: a long poll or a worker in this process wakes as soon as work appears.

`wait_job` and `wait_push` each have one waiter (their worker loop), which clears the event it
consumed; long polls share one event per instance.

Other processes (the CLI, other nodes) cannot reach these events; waiters re-read the store at
the poll interval, so their changes are seen after at most that long.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Collection, Set

from wagate.core.ports import ANY_INSTANCE


class _NamedSignal:
    """A wake-up for one waiter that collects the instances it was given until the wait."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self._named: set[int] = set()

    def add(self, instance_id: int) -> None:
        self._named.add(instance_id)
        self._event.set()

    async def wait(self, timeout_s: float) -> Set[int]:
        await _wait(self._event, timeout_s)
        self._event.clear()
        named, self._named = self._named, set()
        return named

    def release(self) -> None:
        self._event.set()


class LocalWakeUps:
    def __init__(self) -> None:
        self._notification_events: defaultdict[int, asyncio.Event] = defaultdict(asyncio.Event)
        self._jobs = _NamedSignal()
        self._push = _NamedSignal()

    async def notification_added(self, instance_id: int, *, pushed: bool = True) -> None:
        if pushed:
            self._push.add(instance_id)
        event = self._notification_events.pop(instance_id, None)
        if event is not None:
            event.set()

    def notification_mark(self, instance_id: int) -> asyncio.Event:
        # The event a wait would use now: `notification_added` sets it (and replaces it for later
        # marks), so a wait on it ends at once if a notification came since the mark.
        return self._notification_events[instance_id]

    def notified_since(self, mark: object) -> bool:
        return isinstance(mark, asyncio.Event) and mark.is_set()

    async def wait_notification(
        self, instance_id: int, timeout_s: float, since: object | None = None
    ) -> None:
        # Every waiter of an instance shares one event; it is replaced after it fires, so a
        # wake-up is never consumed by one waiter alone.
        if isinstance(since, asyncio.Event):
            event = since
        else:
            event = self._notification_events[instance_id]
        await _wait(event, timeout_s)

    def wake_long_polls(self) -> None:
        # Replaced, as after a wake-up: the marks taken so far fire, later ones wait anew.
        events, self._notification_events = self._notification_events, defaultdict(asyncio.Event)
        for event in events.values():
            event.set()

    async def job_added(self, instance_id: int = ANY_INSTANCE) -> None:
        self._jobs.add(instance_id)

    async def wait_job(self, timeout_s: float) -> Set[int]:
        return await self._jobs.wait(timeout_s)

    async def wait_push(self, timeout_s: float) -> Set[int]:
        return await self._push.wait(timeout_s)

    async def aclose(self) -> None:
        for event in self._notification_events.values():
            event.set()
        self._jobs.release()
        self._push.release()


async def wait_for_unheld(
    wait: Callable[[float], Awaitable[Set[int]]],
    timeout_s: float,
    held: Collection[int],
    skipped: set[int] | None = None,
) -> set[int] | None:
    """For a worker loop (`wait` is `wait_job` or `wait_push`): until a wake-up names an
    instance not in `held`, the instances a task of the loop is already working on; returns
    those. None when `timeout_s` passed or a wake-up was for `ANY_INSTANCE`. Wake-ups naming
    only held instances are dropped, added to `skipped` if given."""
    deadline = time.monotonic() + timeout_s
    while (remaining_s := deadline - time.monotonic()) > 0:
        signalled = await wait(remaining_s)
        if ANY_INSTANCE in signalled:
            return None
        unheld = set(signalled).difference(held)
        if unheld:
            return unheld
        if skipped is not None:
            skipped.update(signalled)
    return None


async def _wait(event: asyncio.Event, timeout_s: float) -> None:
    """Until `event` is set or `timeout_s` passed. Not `asyncio.wait_for`: on Python 3.11 it
    returns normally when the event fires just as the waiting task is cancelled, and the
    cancellation is lost: a worker loop cancelled at shutdown then ran on and the shutdown hung
    (reproduced with the push dispatcher; fixed in 3.12). `asyncio.timeout` does not lose it."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            await event.wait()
