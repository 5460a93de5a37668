"""Runs acknowledged getAvatarAsync requests and queues their avatarInfo notifications."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from wagate.core.avatars import AvatarService
from wagate.core.errors import BadRequestData
from wagate.core.instances import InstanceService
from wagate.core.model import AvatarJob, AvatarLookup, AvatarStatus
from wagate.core.ports import Store, WakeUps
from wagate.wire.chat_id import parse_chat_id
from wagate.wire.notifications import avatar_info_notification

logger = logging.getLogger(__name__)

_COALESCE_S = 0.002


class AvatarJobWorker:
    """Claims jobs (one at a time per instance, in acknowledgement order) and runs them
    concurrently across instances.

    A job is removed only in the transaction that queues its notification, so a crash at any
    point leaves it to be claimed again once its lease expires: at least once, never zero.
    """

    def __init__(
        self,
        store: Store,
        instances: InstanceService,
        avatars: AvatarService,
        wakeups: WakeUps,
        *,
        concurrency: int,
        poll_interval_s: float,
        phone_digits: tuple[int, int],
    ) -> None:
        self._store = store
        self._instances = instances
        self._avatars = avatars
        self._wakeups = wakeups
        self._concurrency = concurrency
        self._poll_interval_s = poll_interval_s
        self._phone_digits = phone_digits
        # Longer than any lookup can take, so a live worker never loses its claim.
        self._lease = timedelta(seconds=avatars.timeout_s * 2 + 5)
        self._running: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        try:
            while True:
                free = self._concurrency - len(self._running)
                claimed: list[AvatarJob] = []
                if free > 0:
                    try:
                        claimed = await self._store.claim_avatar_jobs(free, self._lease)
                    except Exception:
                        logger.exception("claiming avatar jobs failed", extra={"action": "claim"})
                for job in claimed:
                    task = asyncio.create_task(self._run_job(job), name=f"avatar-job:{job.id}")
                    self._running.add(task)
                    task.add_done_callback(self._running.discard)
                if not claimed:
                    await self._wakeups.wait_job(self._poll_interval_s)
                    # Under load every acknowledgement signals; one claim a moment later serves
                    # all that arrived meanwhile, instead of a write transaction per request.
                    await asyncio.sleep(_COALESCE_S)
        finally:
            for task in self._running:
                task.cancel()
            await asyncio.gather(*self._running, return_exceptions=True)

    async def _run_job(self, job: AvatarJob) -> None:
        try:
            instance = await self._instances.find(job.instance_id)
            if instance is None:
                return  # deleted with its jobs; nothing to answer
            try:
                chat = parse_chat_id(job.chat_id, self._phone_digits)
            except BadRequestData:
                # Accepted under a wider phone-digit setting than the current one.
                lookup = AvatarLookup(AvatarStatus.BAD_REQUEST)
            else:
                lookup = await self._avatars.lookup(instance, chat)
            body = avatar_info_notification(instance, job.chat_id, lookup, datetime.now(UTC))
            await self._store.complete_avatar_job(job, body)
            await self._wakeups.notification_added(instance.id)
        except LookupError:
            logger.info("avatar job already completed elsewhere", extra={"job": job.id})
        except Exception:
            # The claim lapses and the job runs again: a failure here delays, never loses.
            logger.exception(
                "avatar job failed", extra={"action": "avatar_job_failed", "job": job.id}
            )
        finally:
            await self._wakeups.job_added()
