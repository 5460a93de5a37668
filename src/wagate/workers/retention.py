"""Moves notifications older than the retention period to the dead letters."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from wagate.core.failures import RepeatedFailure
from wagate.core.notifications import NotificationService

logger = logging.getLogger(__name__)


class RetentionWorker:
    def __init__(self, notifications: NotificationService, retention_s: float) -> None:
        self._notifications = notifications
        self._retention = timedelta(seconds=retention_s)
        # Often enough that a notification outlives its retention by a small fraction of it.
        self._interval_s = min(60.0, max(0.05, retention_s / 10))
        self._failures = RepeatedFailure(logger, "the retention pass", "retention_failed")

    async def run(self) -> None:
        while True:
            try:
                moved = await self._notifications.dead_letter_expired(self._retention)
                if moved:
                    logger.warning(
                        "notifications dead-lettered after retention",
                        extra={"action": "dead_lettered", "count": moved},
                    )
            except Exception:
                self._failures.failed()
            else:
                self._failures.succeeded()
            await asyncio.sleep(self._interval_s)
