"""The per-instance notification queue as GREEN-API's polling methods see it."""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from wagate.core.errors import PushModeActive
from wagate.core.failures import RepeatedFailure
from wagate.core.model import Instance, Notification, NotificationStatus, is_storable_id
from wagate.core.ports import Store, WakeUps

logger = logging.getLogger(__name__)

# Windows kept at once: bounds memory when many instances poll (each holds `prefetch` bodies).
_MAX_WINDOWS = 256
# How long a delete answered from a window may wait to be written with the next ones: a client
# draining its queue deletes a window's notifications well within it, so they go in one write.
DEFERRED_DELETE_S = 0.01
# After a failed write of deferred deletes, the next try.
_DEFERRED_DELETE_RETRY_S = 1.0
# Dead letters deleted per transaction by `delete_old_dead_letters`.
_DEAD_LETTER_BATCH = 1000


@dataclass
class _Window:
    """The next queued notifications of one instance, as read at `loaded_at` (loop time)."""

    loaded_at: float
    heads: deque[Notification]


@dataclass
class _Loading:
    """Window reads of one instance in flight, and whether its queue changed meanwhile (then
    what they read may already be stale, and is not kept)."""

    reads: int = 0
    changed: bool = False


class NotificationService:
    """Receive, delete, count and clear, over the store.

    With `prefetch` > 1, `receive` reads the next `prefetch` notifications of an instance in one
    query and answers the following receives from them (a "window"), so that a client draining
    its queue (receive, delete, receive, ...) costs one store round trip per cycle, the delete,
    instead of two. A window only ever holds the queue's oldest notifications in order, and
    whatever this process does to them drops them from it (delete, clear, dead-lettering, a
    change of webhookUrl). What another process does is seen once the window is older than
    `poll_interval_s`, the same bound as for instance changes. So it is only for a store that
    one server process writes alone (SQLite); on PostgreSQL nodes, another node's delete
    could otherwise hand a client a notification it already deleted.

    With windows, a delete of a notification in its window is answered at once and written
    with the other deletes of the next `DEFERRED_DELETE_S` (or before the window is read again,
    or before anything else reads or changes the queue: count, clear, list, dead-lettering, a
    webhookUrl change), so a drain costs one write per window, not one per cycle. A delete
    is not a promise of durability: a process killed in those milliseconds hands the
    notification out again after its restart, with the same receiptId, as at-least-once
    delivery allows. `aclose()` writes what is deferred.
    """

    def __init__(
        self, store: Store, wakeups: WakeUps, poll_interval_s: float, *, prefetch: int = 1
    ) -> None:
        self._store = store
        self._wakeups = wakeups
        self._poll_interval_s = poll_interval_s
        self._prefetch = prefetch
        self._windows: OrderedDict[int, _Window] = OrderedDict()
        self._loading: dict[int, _Loading] = {}
        # Deletes answered but not yet written, by instance; then those being written.
        self._deferred: dict[int, set[int]] = {}
        self._writing: dict[int, set[int]] = {}
        self._write_lock = asyncio.Lock()
        self._write_timer: asyncio.TimerHandle | None = None
        self._write_tasks: set[asyncio.Task[None]] = set()
        # Set when the server begins to shut down: polls answer at once instead of waiting.
        self._ending = False
        #: Long polls that found the queue empty and have not answered yet (for `/metrics`).
        self.waiting_polls = 0
        self._timed_write_failures = RepeatedFailure(
            logger, "writing the deletes answered from polling windows", "deferred_deletes_failed"
        )

    async def receive(
        self,
        instance: Instance,
        timeout_s: float,
        recheck: Callable[[], Awaitable[Instance]] | None = None,
    ) -> Notification | None:
        """The oldest queued notification, waiting up to `timeout_s` for one to arrive.

        The same head comes back until it is deleted. Raises `PushModeActive` while the
        instance pushes to a webhookUrl.

        `recheck` is called after every wait (a wake-up, or `poll_interval_s` without one)
        and returns the instance as it is now, or raises if the caller may no longer poll it:
        a token rotated, the instance deleted or switched to push by another process (the
        CLI, another node) would otherwise go unnoticed until the poll's timeout, up to a
        minute in which a notification could still reach the old token, or reach the client
        while its lane pushes it too.
        """
        self._refuse_push_mode(instance)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        waited = False  # counted in `waiting_polls` from its first wait to its answer
        try:
            while True:
                # Taken before the read: a notification added while it runs ends the wait.
                mark = self._wakeups.notification_mark(instance.id)
                head = await self._head(instance.id, loop.time())
                if head is not None:
                    return head
                remaining = deadline - loop.time()
                if remaining <= 0 or self._ending:
                    return None
                if not waited:
                    waited = True
                    self.waiting_polls += 1
                await self._wakeups.wait_notification(
                    instance.id, min(remaining, self._poll_interval_s), mark
                )
                if recheck is not None:
                    instance = await recheck()
                    self._refuse_push_mode(instance)
        finally:
            if waited:
                self.waiting_polls -= 1

    def end_long_polls(self) -> None:
        """The server is shutting down: every waiting long poll answers now, with the head
        queued meanwhile or JSON null as on a timeout, and a poll that comes later does not
        wait. Otherwise a poll holds the shutdown up for its receiveTimeout, up to a minute
        (longer than a container runtime waits before it kills the process), while its client
        loses nothing by polling again once the server is back."""
        self._ending = True
        self._wakeups.wake_long_polls()

    def _refuse_push_mode(self, instance: Instance) -> None:
        if instance.settings.push_mode:
            self.forget(instance.id)
            raise PushModeActive()

    async def _head(self, instance_id: int, now: float) -> Notification | None:
        if self._prefetch <= 1:
            return await self._store.head_notification(instance_id)
        window = self._windows.get(instance_id)
        if window is not None and window.heads and now - window.loaded_at < self._poll_interval_s:
            self._windows.move_to_end(instance_id)
            return window.heads[0]
        loading = self._loading.setdefault(instance_id, _Loading())
        loading.reads += 1
        try:
            # The deletes answered from the last window go first, or the read returns them.
            await self.write_deferred_deletes()
            heads = await self._store.list_notifications(
                instance_id, NotificationStatus.QUEUED, self._prefetch
            )
        finally:
            loading.reads -= 1
            if loading.reads == 0:
                del self._loading[instance_id]
        if not heads or loading.changed:
            self._windows.pop(instance_id, None)
            return heads[0] if heads else None
        self._windows[instance_id] = _Window(now, deque(heads))
        self._windows.move_to_end(instance_id)
        while len(self._windows) > _MAX_WINDOWS:
            self._windows.popitem(last=False)
        return heads[0]

    def forget(self, instance_id: int) -> None:
        """Drop the instance's window: its queue changed in a way a window cannot follow."""
        self._windows.pop(instance_id, None)
        self._changed(instance_id)

    def _changed(self, instance_id: int) -> None:
        loading = self._loading.get(instance_id)
        if loading is not None:
            loading.changed = True

    async def delete(self, instance: Instance, receipt_id: int) -> bool:
        window = self._windows.get(instance.id)
        now = asyncio.get_running_loop().time()
        if (
            window is not None
            and now - window.loaded_at < self._poll_interval_s
            and _drop(window, receipt_id)
        ):
            # Answered from the window, written with the others (see the class docstring).
            self._deferred.setdefault(instance.id, set()).add(receipt_id)
            # A window read in flight may have read it: that read is not kept.
            self._changed(instance.id)
            if self._write_timer is None:
                self._arm_write_timer(DEFERRED_DELETE_S)
            return True
        if receipt_id in self._deferred.get(instance.id, ()) or receipt_id in self._writing.get(
            instance.id, ()
        ):
            return False  # deleted already, not yet committed
        deleted = await self._store.delete_notification(instance.id, receipt_id)
        # After the commit: a receive running meanwhile may have re-read it from the store.
        self._changed(instance.id)
        window = self._windows.get(instance.id)
        if window is not None:
            _drop(window, receipt_id)
        return deleted

    def _arm_write_timer(self, delay_s: float) -> None:
        self._write_timer = asyncio.get_running_loop().call_later(
            delay_s, self._start_deferred_write
        )

    def _cancel_write_timer(self) -> None:
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None

    def _start_deferred_write(self) -> None:
        self._write_timer = None
        task = asyncio.create_task(self._timed_write())
        self._write_tasks.add(task)
        task.add_done_callback(self._write_tasks.discard)

    async def _timed_write(self) -> None:
        """The timer's write. A failed one arms the timer again (a second later), so a store
        that stays down is reported once, then once a minute, and when it works again."""
        try:
            await self.write_deferred_deletes()
        except Exception:
            self._timed_write_failures.failed()
        else:
            self._timed_write_failures.succeeded()

    async def try_write_deferred_deletes(self, meanwhile: str) -> None:
        """`write_deferred_deletes` for a caller that must go on if it fails (they were
        answered already): the failure is logged, saying what happens `meanwhile`."""
        try:
            await self.write_deferred_deletes()
        except Exception as exc:
            logger.warning(
                "deferred notification deletes not written, %s (%s: %s)",
                meanwhile,
                type(exc).__name__,
                exc,
                extra={"action": "deferred_deletes_failed"},
            )

    async def write_deferred_deletes(self) -> None:
        """Write the deletes answered from windows; returns once every delete answered before
        the call is committed. A failed write keeps them for the next call (and raises)."""
        if not self._deferred and not self._writing:
            return
        async with self._write_lock:
            if not self._deferred:
                return
            self._cancel_write_timer()
            self._writing, self._deferred = self._deferred, {}
            try:
                # Shielded: a receive that gives up waiting does not undo the write under way.
                await asyncio.shield(self._store.delete_notifications(self._writing))
            except BaseException:
                for instance_id, receipt_ids in self._writing.items():
                    self._deferred.setdefault(instance_id, set()).update(receipt_ids)
                # Tried again later even if nothing else asks for it (no more deletes come).
                if self._write_timer is None:
                    self._arm_write_timer(_DEFERRED_DELETE_RETRY_S)
                raise
            finally:
                self._writing = {}

    async def aclose(self) -> None:
        """Write the deferred deletes (at shutdown, before the store closes). If that fails,
        the notifications stay queued and are handed out again: logged, not raised."""
        self._cancel_write_timer()
        await asyncio.gather(*self._write_tasks, return_exceptions=True)
        await self.try_write_deferred_deletes("at shutdown")
        self._cancel_write_timer()  # no later try: the store is about to close

    async def count(self, instance: Instance) -> int:
        await self.write_deferred_deletes()
        return await self._store.count_notifications(instance.id)

    async def clear(self, instance: Instance) -> int:
        try:
            await self.write_deferred_deletes()
            return await self._store.clear_notifications(instance.id)
        finally:
            self.forget(instance.id)

    async def list_for(
        self, instance_id: int, status: NotificationStatus, limit: int = 100
    ) -> list[Notification]:
        await self.write_deferred_deletes()
        return await self._store.list_notifications(instance_id, status, limit)

    async def replay(self, instance_id: int, receipt_ids: Sequence[int] | None) -> int:
        """Queue the instance's dead notifications again: those named, or all when None (an
        empty list replays none)."""
        if receipt_ids is not None:
            # A number no receipt can have names none; dropped before the driver sees it.
            receipt_ids = [receipt_id for receipt_id in receipt_ids if is_storable_id(receipt_id)]
            if not receipt_ids:
                return 0
        count = await self._store.replay_dead(instance_id, receipt_ids)
        if count:
            await self._wakeups.notification_added(instance_id)
        return count

    async def delete_old_dead_letters(self, retention: timedelta) -> int:
        """Delete the dead letters of notifications queued longer ago than `retention`, in
        transactions of `_DEAD_LETTER_BATCH` rows, so that a large backlog never holds the
        database's writer for long. Dead letters are never in a polling window."""
        created_before = datetime.now(UTC) - retention
        deleted = 0
        while True:
            count = await self._store.delete_dead_letters(created_before, _DEAD_LETTER_BATCH)
            deleted += count
            if count < _DEAD_LETTER_BATCH:
                return deleted

    async def dead_letter_expired(self, retention: timedelta) -> int:
        # A notification the client deleted is deleted, not dead-lettered.
        await self.write_deferred_deletes()
        moved = await self._store.dead_letter_expired(datetime.now(UTC) - retention)
        if moved:
            self._windows.clear()
            for loading in self._loading.values():
                loading.changed = True
        return moved


def _drop(window: _Window, receipt_id: int) -> bool:
    """Take the notification out of the window; whether it was there."""
    if window.heads and window.heads[0].receipt_id == receipt_id:
        window.heads.popleft()
        return True
    kept = deque(n for n in window.heads if n.receipt_id != receipt_id)
    dropped = len(kept) < len(window.heads)
    window.heads = kept
    return dropped
