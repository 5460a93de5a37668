"""Moves notifications older than the retention period to the dead letters, and, if the
operator asked for it, deletes dead letters older than theirs."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from wagate.core.failures import RepeatedFailure
from wagate.core.notifications import NotificationService
from wagate.core.ports import PipelineEvents, UncountedEvents

logger = logging.getLogger(__name__)


class RetentionWorker:
    """`dead_letter_retention_s` 0 keeps dead letters (until replayed or their instance is
    deleted): dropping what could not be delivered is the operator's choice, not a default."""

    def __init__(
        self,
        notifications: NotificationService,
        retention_s: float,
        dead_letter_retention_s: float = 0.0,
        events: PipelineEvents | None = None,
    ) -> None:
        self._notifications = notifications
        self._events: PipelineEvents = events or UncountedEvents()
        self._retention = timedelta(seconds=retention_s)
        self._dead_letter_retention = (
            timedelta(seconds=dead_letter_retention_s) if dead_letter_retention_s > 0 else None
        )
        # Often enough that a notification outlives its retention by a small fraction of it.
        shortest = min(retention_s, dead_letter_retention_s or retention_s)
        self._interval_s = min(60.0, max(0.05, shortest / 10))
        self._failures = RepeatedFailure(logger, "the retention pass", "retention_failed")

    async def run(self) -> None:
        while True:
            try:
                await self._pass()
            except Exception:
                self._failures.failed()
            else:
                self._failures.succeeded()
            await asyncio.sleep(self._interval_s)

    async def _pass(self) -> None:
        moved = await self._notifications.dead_letter_expired(self._retention)
        if moved:
            self._events.notifications_dead_lettered(moved)
            logger.warning(
                "notifications dead-lettered after retention",
                extra={"action": "dead_lettered", "count": moved},
            )
        if self._dead_letter_retention is not None:
            deleted = await self._notifications.delete_old_dead_letters(self._dead_letter_retention)
            if deleted:
                self._events.dead_letters_deleted(deleted)
                logger.info(
                    "dead letters deleted after their retention",
                    extra={"action": "dead_letters_deleted", "count": deleted},
                )
