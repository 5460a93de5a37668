"""In-process wake-ups: a long poll or a worker in this process wakes as soon as work appears.

`wait_job` and `wait_push` each have one waiter (their worker loop), which clears the event it
consumed; long polls share one event per instance.

Other processes (the CLI, other nodes) cannot reach these events; waiters re-read the store at
the poll interval, so their changes are seen after at most that long.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Set

from wagate.core.ports import ANY_INSTANCE


class LocalWakeUps:
    def __init__(self) -> None:
        self._notification_events: defaultdict[int, asyncio.Event] = defaultdict(asyncio.Event)
        self._job_event = asyncio.Event()
        self._job_signalled: set[int] = set()
        self._push_event = asyncio.Event()
        self._push_signalled: set[int] = set()

    async def notification_added(self, instance_id: int, *, pushed: bool = True) -> None:
        if pushed:
            self._push_signalled.add(instance_id)
            self._push_event.set()
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

    async def job_added(self, instance_id: int = ANY_INSTANCE) -> None:
        self._job_signalled.add(instance_id)
        self._job_event.set()

    async def wait_job(self, timeout_s: float) -> Set[int]:
        await _wait(self._job_event, timeout_s)
        self._job_event.clear()
        signalled, self._job_signalled = self._job_signalled, set()
        return signalled

    async def wait_push(self, timeout_s: float) -> Set[int]:
        await _wait(self._push_event, timeout_s)
        self._push_event.clear()
        signalled, self._push_signalled = self._push_signalled, set()
        return signalled

    async def aclose(self) -> None:
        for event in self._notification_events.values():
            event.set()
        self._job_event.set()
        self._push_event.set()


async def _wait(event: asyncio.Event, timeout_s: float) -> None:
    """Until `event` is set or `timeout_s` passed. Not `asyncio.wait_for`: on Python 3.11 it
    returns normally when the event fires just as the waiting task is cancelled, and the
    cancellation is lost: a worker loop cancelled at shutdown then ran on and the shutdown hung
    (reproduced with the push dispatcher; fixed in 3.12). `asyncio.timeout` does not lose it."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            await event.wait()
