"""Pushes queued notifications to each push-mode instance's webhookUrl, in order, durably.

Each instance is a lane, leased in the store: the lane's holder delivers the instance's queue
head first, one notification at a time. A failure records the attempt on the head, schedules
its retry and releases the lane, so a failing receiver holds up only its own instance. A
notification leaves the queue only after its receiver answered 2xx; a crash in between means it
is delivered again (at least once, with the same `webhook-id`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from wagate.core.failures import RepeatedFailure
from wagate.core.instances import InstanceService
from wagate.core.model import Instance, Notification
from wagate.core.ports import PipelineEvents, Store, UncountedEvents, WakeUps, WebhookSender
from wagate.core.retry import next_delay_s
from wagate.core.wakeups import wait_for_unheld
from wagate.wire.standard_webhooks import webhook_headers

logger = logging.getLogger(__name__)

BATCH = 100
# How long a lane whose queue ran dry stays claimed, waiting for more.
LINGER_S = 0.05


class PushDispatcher:
    def __init__(
        self,
        store: Store,
        instances: InstanceService,
        sender: WebhookSender,
        wakeups: WakeUps,
        *,
        concurrency: int,
        timeout_s: float,
        max_interval_s: float,
        poll_interval_s: float,
        linger_s: float = LINGER_S,
        clock: Callable[[], float] = time.monotonic,
        ids_commit_in_order: bool = False,
        events: PipelineEvents | None = None,
    ) -> None:
        """`ids_commit_in_order`: no notification is ever committed with a receipt id below
        one already visible (SQLite, where one writer at a time assigns them), so a lane's next
        read can start after the last id it delivered. Not on PostgreSQL, where a transaction
        holding a lower id may commit after a higher one is seen."""
        self._store = store
        self._instances = instances
        self._sender = sender
        self._wakeups = wakeups
        self._concurrency = concurrency
        self._max_interval_s = max_interval_s
        self._poll_interval_s = poll_interval_s
        self._linger_s = linger_s
        # When lanes renew their leases (a parameter so tests can stall a lane past its lease).
        self._clock = clock
        # Outlasts a whole batch of slow attempts only if renewed; renewed well before expiry.
        self._lease = timedelta(seconds=max(10.0, timeout_s * 2 + 5))
        self._lanes: dict[int, asyncio.Task[None]] = {}
        self._ids_commit_in_order = ids_commit_in_order
        self._events: PipelineEvents = events or UncountedEvents()
        self._claim_failures = RepeatedFailure(logger, "claiming push lanes", "claim")
        self._due_failures = RepeatedFailure(logger, "reading the next retry time", "due")

    async def run(self) -> None:
        # The lanes the next claim is for: those the wake-ups named, or None for any due lane
        # (at start, when the poll interval passed or a retry fell due, after a failed claim).
        # A claim for named lanes seeks their rows; one for any lane reads every push-mode
        # instance's head, so it is kept to those moments.
        named: set[int] | None = None
        try:
            while True:
                claimed: list[int] = []
                claim_failed = False
                free = self._concurrency - len(self._lanes)
                if free > 0:
                    try:
                        claimed = await self._store.claim_push_lanes(free, self._lease, named)
                    except Exception:
                        self._claim_failures.failed()
                        claim_failed = True
                    else:
                        self._claim_failures.succeeded()
                for instance_id in claimed:
                    task = asyncio.create_task(
                        self._run_lane(instance_id), name=f"delivery:{instance_id}"
                    )
                    self._lanes[instance_id] = task
                if named is not None:
                    # Named lanes a full claim left behind wait for the next free slot.
                    named.difference_update(claimed)
                # Fewer lanes than asked for: no other was claimable, so claiming again now
                # would find nothing; what was queued since has woken this loop.
                if claimed and len(claimed) >= free:
                    continue
                if free <= 0:
                    # Every lane slot is busy: wait for one to end, not for the next retry.
                    done, _ = await asyncio.wait(
                        set(self._lanes.values()),
                        timeout=self._poll_interval_s,
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                    if not done:
                        named = None
                else:
                    woken = await self._wait_for_claimable_work()
                    named = None if claim_failed else woken
        finally:
            for task in self._lanes.values():
                task.cancel()
            await asyncio.gather(*self._lanes.values(), return_exceptions=True)

    async def _wait_for_claimable_work(self) -> set[int] | None:
        """Until a wake-up names an instance with no lane running here (returns those), or the
        next retry falls due or the poll interval passes (returns None: any lane). A wake-up
        for a running lane needs no claim: the lane reads its queue on its own wake-up, and its
        end wakes this loop again (after it left `_lanes`). Under load most wake-ups are such:
        each cost a lane claim (a write transaction) and a next-due read that found nothing."""
        return await wait_for_unheld(
            self._wakeups.wait_push, await self._idle_wait_s(), self._lanes.keys()
        )

    async def _idle_wait_s(self) -> float:
        """Until the next retry falls due, but never longer than the poll interval."""
        try:
            due = await self._store.next_push_due()
        except Exception:
            self._due_failures.failed()
            return self._poll_interval_s
        self._due_failures.succeeded()
        if due is None:
            return self._poll_interval_s
        # The floor keeps a due retry whose lane another node holds from turning this into a spin.
        wait_s = (due - datetime.now(UTC)).total_seconds()
        return max(0.05, min(self._poll_interval_s, wait_s))

    async def _run_lane(self, instance_id: int) -> None:
        emptied: object = None
        # Delivered (the receiver answered 2xx) and not yet taken off the queue.
        delivered: list[int] = []
        try:
            emptied = await self._deliver_lane(instance_id, delivered)
        except asyncio.CancelledError:
            raise
        except Exception:
            # The lease lapses and the lane is claimed again: a failure here delays, never loses.
            logger.exception(
                "delivery lane failed", extra={"action": "lane_failed", "instance": instance_id}
            )
        finally:
            self._lanes.pop(instance_id, None)
            try:
                # If this fails, what it would have taken off the queue goes again (at least
                # once) when the lease has lapsed.
                await self._store.release_push_lane(instance_id, delivered)
            except Exception:
                logger.exception("releasing a lane failed", extra={"instance": instance_id})
            # Out of `_lanes`, a wake-up for the instance makes the claim loop claim again. It
            # needs one only if the lane may have left something: it did not end on an empty
            # queue, or a notification was added since (the claim loop skipped that wake-up
            # while the lane was running). Other nodes hear this one too.
            if emptied is None or self._wakeups.notified_since(emptied):
                await self._wakeups.notification_added(instance_id)

    async def _deliver_lane(self, instance_id: int, marking: list[int]) -> object:
        """Deliver the instance's queue until it stays empty for the linger time; returns the
        wake-up mark taken before the read that found it empty, or None if the lane ended for
        another reason (a failed attempt, a retry not yet due, push mode switched off).

        `marking` holds what was delivered and is not yet off the queue: it is taken off while
        the next batch is read, and what is left at the end goes with the lane's release (one
        transaction for both: at low rates a lane delivers one notification, lingers and
        ends)."""
        renewed_at = self._clock()
        lingered = False
        # Whether the last read emptied the queue, and the wake-up mark taken before it.
        drained = False
        mark: object = None
        while True:
            # From the instance cache: a settings change made elsewhere (the CLI, another
            # node) stops or redirects the lane within the cache's TTL (the poll interval).
            instance = await self._instances.find(instance_id)
            if instance is None or not instance.settings.push_mode:
                return None  # deleted, or switched back to polling
            if not drained or self._wakeups.notified_since(mark):
                # Taken before the read: what is added while it runs ends the wait below.
                mark = self._wakeups.notification_mark(instance_id)
                batch, drained = await self._next_batch(instance_id, list(marking))
                marking.clear()
            else:
                # The last read emptied the queue and nothing was added since it began:
                # reading again would find nothing. (What another process adds without a
                # wake-up is found when the lane is claimed again after its linger.)
                batch = []
            if not batch:
                if lingered:
                    return mark
                # A busy instance's next notifications are usually moments away: waiting
                # for them saves releasing and claiming the lane again (two write
                # transactions).
                await self._wakeups.wait_notification(instance_id, self._linger_s, mark)
                lingered = True
                continue
            lingered = False
            for notification in batch:
                # Renewed before an attempt, not after: a lane that stalled past its lease
                # (and was taken over) learns it here, before it pushes again.
                if self._clock() - renewed_at > self._lease.total_seconds() / 3:
                    renewing_at = self._clock()
                    if not await self._store.renew_push_lane(instance_id, self._lease):
                        logger.warning(
                            "a push lane's lease lapsed and another dispatcher took it over; "
                            "this one stops",
                            extra={"action": "lane_lost", "instance": instance_id},
                        )
                        return None
                    renewed_at = renewing_at
                if not await self._deliver_one(instance, notification):
                    return None
                marking.append(notification.receipt_id)

    async def _next_batch(
        self, instance_id: int, marking: list[int]
    ) -> tuple[list[Notification], bool]:
        """The queue's head, and whether that was all of the queue, read while the
        notifications just delivered (`marking`) are taken off it: one wait for both instead of
        one after the other. If the mark fails, this raises and the lane ends before delivering
        anything newer, so the unmarked ones go again first (at least once, still in order)."""
        if not marking:
            head = await self._store.queued_notifications(instance_id, BATCH)
            return head, len(head) < BATCH
        if self._ids_commit_in_order:
            # Delivered in receipt order: what is left starts after the last one delivered.
            _, head = await asyncio.gather(
                self._store.mark_delivered(instance_id, marking),
                self._store.queued_notifications(instance_id, BATCH, max(marking)),
            )
            return head, len(head) < BATCH
        # The read may still see the ones being marked: ask for as many more and drop them.
        limit = BATCH + len(marking)
        _, head = await asyncio.gather(
            self._store.mark_delivered(instance_id, marking),
            self._store.queued_notifications(instance_id, limit),
        )
        marked = set(marking)
        fresh = [notification for notification in head if notification.receipt_id not in marked]
        return fresh[:BATCH], len(head) < limit and len(fresh) <= BATCH

    async def _deliver_one(self, instance: Instance, notification: Notification) -> bool:
        """One attempt; on failure the retry is recorded and False returned."""
        now = datetime.now(UTC)
        if notification.next_attempt_at is not None and notification.next_attempt_at > now:
            return False  # a retry not yet due heads the queue; the claim will come back for it
        body = notification.body_json.encode()
        headers = webhook_headers(
            instance.webhook_signing_secret,
            notification.webhook_id or f"msg_{notification.receipt_id}",
            int(now.timestamp()),
            body,
            instance.settings.webhook_url_token,
        )
        attempt = await self._sender.post(
            instance.settings.webhook_url, headers, body, lane=str(instance.id)
        )
        if attempt.is_delivered:
            self._events.webhook_delivered()
            return True
        self._events.webhook_attempt_failed()
        failures = notification.attempts + 1
        delay_s = next_delay_s(failures, self._max_interval_s, attempt.retry_after)
        await self._store.record_delivery_failure(
            instance.id,
            notification.receipt_id,
            attempt.describe(),
            datetime.now(UTC) + timedelta(seconds=delay_s),
        )
        logger.info(
            "webhook delivery failed; retrying in %.1f s",
            delay_s,
            extra={
                "action": "delivery_failed",
                "instance": instance.id,
                "receipt": notification.receipt_id,
                "attempt": failures,
                "error": attempt.describe(),
            },
        )
        return False
