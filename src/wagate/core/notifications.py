"""The per-instance notification queue as GREEN-API's polling methods see it."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from wagate.core.errors import PushModeActive
from wagate.core.model import Instance, Notification, NotificationStatus
from wagate.core.ports import Store, WakeUps


class NotificationService:
    def __init__(self, store: Store, wakeups: WakeUps, poll_interval_s: float) -> None:
        self._store = store
        self._wakeups = wakeups
        self._poll_interval_s = poll_interval_s

    async def receive(self, instance: Instance, timeout_s: float) -> Notification | None:
        """The oldest queued notification, waiting up to `timeout_s` for one to arrive.

        The same head comes back until it is deleted. Raises `PushModeActive` while the
        instance pushes to a webhookUrl.
        """
        if instance.settings.webhook_url:
            raise PushModeActive()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            head = await self._store.head_notification(instance.id)
            if head is not None:
                return head
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            await self._wakeups.wait_notification(
                instance.id, min(remaining, self._poll_interval_s)
            )

    async def delete(self, instance: Instance, receipt_id: int) -> bool:
        return await self._store.delete_notification(instance.id, receipt_id)

    async def count(self, instance: Instance) -> int:
        return await self._store.count_notifications(instance.id)

    async def clear(self, instance: Instance) -> int:
        return await self._store.clear_notifications(instance.id)

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
        return await self._store.dead_letter_expired(datetime.now(UTC) - retention)
