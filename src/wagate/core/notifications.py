"""The per-instance notification queue as GREEN-API's polling methods see it."""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from wagate.core.errors import PushModeActive
from wagate.core.model import Instance, Notification, NotificationStatus
from wagate.core.ports import Store, WakeUps

# Windows kept at once: bounds memory when many instances poll (each holds `prefetch` bodies).
_MAX_WINDOWS = 256


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

    async def receive(self, instance: Instance, timeout_s: float) -> Notification | None:
        """The oldest queued notification, waiting up to `timeout_s` for one to arrive.

        The same head comes back until it is deleted. Raises `PushModeActive` while the
        instance pushes to a webhookUrl.
        """
        if instance.settings.push_mode:
            self.forget(instance.id)
            raise PushModeActive()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            # Taken before the read: a notification added while it runs ends the wait below.
            mark = self._wakeups.notification_mark(instance.id)
            head = await self._head(instance.id, loop.time())
            if head is not None:
                return head
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            await self._wakeups.wait_notification(
                instance.id, min(remaining, self._poll_interval_s), mark
            )

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
        deleted = await self._store.delete_notification(instance.id, receipt_id)
        # After the commit: a receive running meanwhile may have re-read it from the store.
        self._changed(instance.id)
        window = self._windows.get(instance.id)
        if window is not None:
            if window.heads and window.heads[0].receipt_id == receipt_id:
                window.heads.popleft()
            else:
                window.heads = deque(n for n in window.heads if n.receipt_id != receipt_id)
        return deleted

    async def count(self, instance: Instance) -> int:
        return await self._store.count_notifications(instance.id)

    async def clear(self, instance: Instance) -> int:
        try:
            return await self._store.clear_notifications(instance.id)
        finally:
            self.forget(instance.id)

    async def list_for(
        self, instance_id: int, status: NotificationStatus, limit: int = 100
    ) -> list[Notification]:
        return await self._store.list_notifications(instance_id, status, limit)

    async def replay(self, instance_id: int, receipt_ids: Sequence[int] | None) -> int:
        count = await self._store.replay_dead(instance_id, receipt_ids or None)
        if count:
            await self._wakeups.notification_added(instance_id)
        return count

    async def dead_letter_expired(self, retention: timedelta) -> int:
        moved = await self._store.dead_letter_expired(datetime.now(UTC) - retention)
        if moved:
            self._windows.clear()
            for loading in self._loading.values():
                loading.changed = True
        return moved
