"""Runs acknowledged getAvatarAsync requests and queues their avatarInfo notifications."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from wagate.core.avatars import AvatarService
from wagate.core.errors import BadRequestData
from wagate.core.failures import RepeatedFailure
from wagate.core.instances import InstanceService
from wagate.core.model import AvatarJob, AvatarLookup, AvatarStatus, ChatId, Instance
from wagate.core.ports import PipelineEvents, Store, UncountedEvents, WakeUps
from wagate.core.wakeups import wait_for_unheld
from wagate.wire.chat_id import parse_chat_id
from wagate.wire.notifications import AvatarInfoNotification, avatar_info_notification

logger = logging.getLogger(__name__)

# Under load every acknowledgement signals the claim loop; a claim this long after the signal
# serves all that arrived meanwhile, instead of a write transaction per request. A signal that
# comes after a quiet spell (no claim for `_QUIET_S`) is claimed at once: one request alone
# gains nothing from waiting.
_COALESCE_S = 0.002
_QUIET_S = 0.01
# Jobs claimed, looked up and completed together per instance: one claim and one completion
# transaction (and two thread hops) serve them all.
JOBS_PER_INSTANCE = 64
# What `bootstrap` chooses on SQLite, where a completion's COMMIT and fixed statements cost as
# much again as its rows at 64 jobs: at 256 a drained backlog cost ~25 % less CPU per job and
# the worker kept up with a saturated edge instead of falling behind it; 512 and 1,024 cost more
# again (larger sorts and transactions). On PostgreSQL 256 cost two nodes sharing an instance
# ~12 % of their acknowledgements (P6), so it keeps 64 (docs/benchmarks.md).
JOBS_PER_INSTANCE_SQLITE = 256
# Claims after which a chat whose lookup still raises (a failure of wagate itself, such as an
# image that cannot be stored, never an answer WhatsApp gives) is answered as timed out.
# Retrying forever would hold back every later request of its instance, since an instance's
# batches run in order; five leases (~2 minutes at the default avatar timeout) ride out a
# passing failure.
ATTEMPTS_PER_JOB = 5


class AvatarJobWorker:
    """Claims jobs in batches per instance (an instance's oldest `jobs_per_instance`, only when
    none of its jobs is claimed) and runs up to `concurrency` instance batches at once.

    A batch's lookups run concurrently; its notifications are then queued in one transaction,
    in job id (acknowledgement) order, and only after that can the instance's next batch be
    claimed: so an instance's avatarInfo notifications keep request order. A job is removed only
    in the transaction that queues its notification, so a crash at any point leaves it to be
    claimed again once its lease expires: at least once, never zero.
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
        jobs_per_instance: int = JOBS_PER_INSTANCE,
        attempts_per_job: int = ATTEMPTS_PER_JOB,
        events: PipelineEvents | None = None,
    ) -> None:
        self._store = store
        self._instances = instances
        self._avatars = avatars
        self._wakeups = wakeups
        self._concurrency = concurrency
        self._poll_interval_s = poll_interval_s
        self._phone_digits = phone_digits
        self._jobs_per_instance = jobs_per_instance
        self._attempts_per_job = attempts_per_job
        self._events: PipelineEvents = events or UncountedEvents()
        # Longer than any batch can take, so a live worker never loses its claim: a batch's
        # lookups run concurrently, not one after another, and each is bounded by the avatar
        # timeout, so a batch takes about as long as its slowest lookup, not the sum of them.
        self._lease = timedelta(seconds=avatars.timeout_s * 2 + 5)
        self._running: set[asyncio.Task[None]] = set()
        # Instances whose batch a task here holds: its completion claims their new jobs.
        self._holding: set[int] = set()
        # Held instances whose wake-ups the claim loop skipped for that reason.
        self._skipped: set[int] = set()
        self._claim_failures = RepeatedFailure(logger, "claiming avatar jobs", "claim")

    async def run(self) -> None:
        last_claim = -_QUIET_S  # when the last claim began (monotonic)
        try:
            while True:
                free = self._concurrency - len(self._running)
                claimed: list[AvatarJob] = []
                if free > 0:
                    last_claim = time.monotonic()
                    try:
                        claimed = await self._store.claim_avatar_jobs(
                            free, self._lease, per_instance=self._jobs_per_instance
                        )
                    except Exception:
                        self._claim_failures.failed()
                    else:
                        self._claim_failures.succeeded()
                batches: dict[int, list[AvatarJob]] = {}
                for job in claimed:  # by id, so each batch is in acknowledgement order
                    batches.setdefault(job.instance_id, []).append(job)
                for jobs in batches.values():
                    task = asyncio.create_task(
                        self._run_batch(jobs), name=f"avatar-jobs:{jobs[0].id}"
                    )
                    self._running.add(task)
                    task.add_done_callback(self._running.discard)
                # Fewer instances than asked for: nothing else was claimable, so another claim
                # now would find nothing; jobs acknowledged since have signalled.
                if len(batches) < max(free, 1):
                    await self._wait_for_claimable_jobs()
                    if time.monotonic() - last_claim < _QUIET_S:
                        await asyncio.sleep(_COALESCE_S)
        finally:
            for task in self._running:
                task.cancel()
            await asyncio.gather(*self._running, return_exceptions=True)

    async def _wait_for_claimable_jobs(self) -> None:
        """Until a wake-up names an instance whose batch no task here holds (or any instance),
        or the poll interval passes. A held instance's new jobs need no claim: the completion
        of its batch claims the oldest claimable queue in its transaction. Under load nearly
        every acknowledgement is such a wake-up, and each cost a claim transaction that found
        nothing. A skipped wake-up is noted, and the batch's end wakes this loop again
        (`_run_batch`), so no job waits for the poll when its instance's chain moves on."""
        await wait_for_unheld(
            self._wakeups.wait_job, self._poll_interval_s, self._holding, self._skipped
        )

    async def _run_batch(self, jobs: list[AvatarJob]) -> None:
        """Run a claimed batch, then the batch its completion claimed, and so on until a
        completion finds nothing claimable: a busy worker slot needs no claim transaction of
        its own and does not wait for the claim loop's next round."""
        claimed_last = True
        try:
            while jobs:
                instance_id = jobs[0].instance_id
                self._holding.add(instance_id)
                try:
                    next_jobs = await self._complete_batch(jobs)
                except asyncio.CancelledError:
                    await self._hand_back(jobs)
                    raise
                finally:
                    self._holding.discard(instance_id)
                    skipped = instance_id in self._skipped
                    self._skipped.discard(instance_id)
                if skipped:
                    # Jobs signalled while this batch ran that its completion did not claim
                    # (it claimed another queue, or they came after its claim) need a claim.
                    await self._wakeups.job_added(instance_id)
                claimed_last = next_jobs is not None
                jobs = next_jobs or []
        finally:
            # A chain whose last completion claimed nothing found nothing claimable then, and
            # later jobs signal for themselves: the claim loop needs waking only if it may have
            # skipped a claim for want of a free slot (this task still holds one), or if the
            # chain ended without its claim. (Waking it after every chain doubled the claim
            # transactions at moderate load.)
            if not claimed_last or len(self._running) >= self._concurrency:
                await self._wakeups.job_added()

    async def _hand_back(self, jobs: list[AvatarJob]) -> None:
        """The worker is stopping with the batch unfinished: give its claim up, so that another
        node (or this one, restarted) runs it at once rather than when the lease lapses (the
        avatar timeout twice, plus 5 s). If the batch's completion had already committed, its
        jobs are gone and nothing changes."""
        try:
            await self._store.release_avatar_jobs(jobs)
        except Exception:
            logger.warning(
                "could not give up the claim of unfinished avatar jobs; they run again when"
                " their lease lapses",
                exc_info=True,
                extra={"action": "avatar_jobs_not_released", "instance": jobs[0].instance_id},
            )

    async def _complete_batch(self, jobs: list[AvatarJob]) -> list[AvatarJob] | None:
        """Look one instance's claimed jobs up concurrently, then queue their notifications in
        one transaction, in job id order, claiming the next batch in it; returns that batch
        (empty if nothing was claimable), or None if the batch failed or its instance is gone
        (no claim was made)."""
        instance_id = jobs[0].instance_id
        try:
            instance = await self._instances.find(instance_id)
            if instance is None:
                return None  # deleted with its jobs; nothing to answer
            completions = list(zip(jobs, await self._answers(instance, jobs), strict=True))
            done, next_jobs = await self._store.complete_and_claim_avatar_jobs(
                completions, self._lease, per_instance=self._jobs_per_instance
            )
            gone = [
                job.id for job, notification in zip(jobs, done, strict=True) if notification is None
            ]
            if gone:
                logger.info("avatar jobs already completed elsewhere", extra={"jobs": gone})
            if len(gone) < len(jobs):
                self._events.avatar_jobs_answered(len(jobs) - len(gone))
                # From the instance cache: a webhook URL set elsewhere within its TTL is pushed
                # at the dispatcher's next poll instead of at once.
                pushed = instance.settings.push_mode
                await self._wakeups.notification_added(instance_id, pushed=pushed)
            return next_jobs
        except Exception:
            # The claim lapses and the jobs run again: a failure here delays, never loses.
            logger.exception(
                "avatar jobs failed",
                extra={
                    "action": "avatar_job_failed",
                    "instance": instance_id,
                    "job": jobs[0].id,
                    "attempts": jobs[0].attempts,
                },
            )
            return None

    async def _answers(
        self, instance: Instance, jobs: Sequence[AvatarJob]
    ) -> list[AvatarInfoNotification]:
        """The avatarInfo bodies of the jobs, in order. Raises only for a failure of wagate
        itself: the lookups turn every outcome WhatsApp can produce into a value.

        A chat asked for several times in the batch is parsed and looked up once, and its jobs
        share one body (identical: the body names no request): fewer lookups for WhatsApp to
        rate-limit, and for a client that asks again and again, a fraction of the work."""
        # The distinct chatIds in the order first asked; None for one that is not valid now
        # (accepted under a wider phone-digit setting than the current one).
        chats: dict[str, ChatId | None] = {}
        for job in jobs:
            if job.chat_id not in chats:
                try:
                    chats[job.chat_id] = parse_chat_id(job.chat_id, self._phone_digits)
                except BadRequestData:
                    chats[job.chat_id] = None
        valid = [chat for chat in chats.values() if chat is not None]
        try:
            lookups = await self._avatars.lookup_many(instance, valid)
        except Exception:
            # The oldest job has been claimed the most often (later ones joined the queue since).
            if jobs[0].attempts < self._attempts_per_job:
                raise
            lookups = await self._lookups_giving_up(instance, valid, jobs[0].attempts)
        found = iter(lookups)
        now = datetime.now(UTC)
        bad_request = AvatarLookup(AvatarStatus.BAD_REQUEST)
        bodies = {
            chat_id: avatar_info_notification(
                instance, chat_id, next(found) if chat is not None else bad_request, now
            )
            for chat_id, chat in chats.items()
        }
        return [bodies[job.chat_id] for job in jobs]

    async def _lookups_giving_up(
        self, instance: Instance, chats: Sequence[ChatId], attempts: int
    ) -> list[AvatarLookup]:
        """Each chat looked up alone, so that only the ones that fail again are given up
        (answered as timed out: the lookup did not succeed in the time it was given) and the
        others keep their answers."""
        outcomes = await asyncio.gather(
            *(self._avatars.lookup_many(instance, [chat]) for chat in chats),
            return_exceptions=True,
        )
        lookups: list[AvatarLookup] = []
        for chat, outcome in zip(chats, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                if not isinstance(outcome, Exception):
                    raise outcome  # cancellation: the worker is stopping
                logger.error(
                    "avatar lookup failed on every attempt; answered as timed out",
                    exc_info=outcome,
                    extra={
                        "action": "avatar_job_given_up",
                        "instance": instance.id,
                        "chat": str(chat),
                        "attempts": attempts,
                    },
                )
                lookups.append(AvatarLookup(AvatarStatus.TIMED_OUT))
                self._events.avatar_lookups_given_up(1)
            else:
                lookups.extend(outcome)
        return lookups
