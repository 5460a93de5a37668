"""PushDispatcher's lanes against a real store: a lane whose queue ran dry stays claimed for a
moment and delivers what arrives meanwhile, without giving the lane up and claiming it again."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from tests.integration.test_store import queue
from tests.integration.test_store_push import A, B, C, add
from wagate.core.instances import InstanceService
from wagate.core.model import DeliveryAttempt, Notification
from wagate.core.ports import ANY_INSTANCE
from wagate.core.wakeups import LocalWakeUps
from wagate.stores import SqlStore, open_store
from wagate.stores._connect import sync_url
from wagate.stores.schema import push_lanes
from wagate.workers.delivery import BATCH, PushDispatcher

pytestmark = pytest.mark.anyio

D, E = 1101000004, 1101000005


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class RecordingSender:
    """Accepts every webhook and lets the test wait for the n-th."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self._changed = asyncio.Condition()

    async def post(
        self, url: str, headers: Mapping[str, str], body: bytes, lane: str = ""
    ) -> DeliveryAttempt:
        async with self._changed:
            self.bodies.append(json.loads(body))
            self._changed.notify_all()
        return DeliveryAttempt(200)

    async def wait_for(self, count: int) -> None:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: len(self.bodies) >= count), 10)

    async def check_url(self, url: str) -> None:
        return None

    async def aclose(self) -> None:
        return None


class CountingClaims:
    """The store, counting the claims that got a lane."""

    def __init__(self, store: SqlStore) -> None:
        self._store = store
        self.claims = 0
        self.named: list[frozenset[int] | None] = []  # what each claim asked for (None: any)
        self.claimed = asyncio.Event()  # a claim was made
        self.lanes_claimed = 0
        self.releases = 0
        self.released = asyncio.Event()
        self.reads = 0
        self.rows_read = 0
        self.marks = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def claim_push_lanes(
        self, limit: int, lease: timedelta, named: Collection[int] | None = None
    ) -> list[int]:
        self.claims += 1
        self.named.append(None if named is None else frozenset(named))
        lanes = await self._store.claim_push_lanes(limit, lease, named)
        self.claimed.set()
        self.lanes_claimed += len(lanes)
        return lanes

    async def release_push_lane(self, instance_id: int, delivered: Sequence[int] = ()) -> None:
        await self._store.release_push_lane(instance_id, delivered)
        self.releases += 1
        self.released.set()

    async def mark_delivered(self, instance_id: int, receipt_ids: Sequence[int]) -> int:
        self.marks += 1
        return await self._store.mark_delivered(instance_id, receipt_ids)

    async def queued_notifications(
        self, instance_id: int, limit: int, after_receipt_id: int = 0
    ) -> list[Notification]:
        self.reads += 1
        read = await self._store.queued_notifications(instance_id, limit, after_receipt_id)
        self.rows_read += len(read)
        return read


@dataclass
class Running:
    """A dispatcher running in a task, and the fakes around it."""

    store: CountingClaims
    sender: RecordingSender
    wakeups: LocalWakeUps


@asynccontextmanager
async def running_dispatcher(
    store: SqlStore,
    linger_s: float,
    poll_interval_s: float = 30,
    sender: RecordingSender | None = None,
    clock: Callable[[], float] = time.monotonic,
    ids_commit_in_order: bool = False,
) -> AsyncIterator[Running]:
    """Run a dispatcher over `store` for the block; cancel it and await its end after."""
    running = Running(CountingClaims(store), sender or RecordingSender(), LocalWakeUps())
    dispatcher = PushDispatcher(
        running.store,
        InstanceService(store),
        running.sender,
        running.wakeups,
        concurrency=4,
        timeout_s=5,
        max_interval_s=60,
        poll_interval_s=poll_interval_s,
        linger_s=linger_s,
        clock=clock,
        ids_commit_in_order=ids_commit_in_order,
    )
    task = asyncio.create_task(dispatcher.run())
    try:
        yield running
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_lingering_lane_delivers_what_arrives_without_a_new_claim(
    store: SqlStore,
) -> None:
    await add(store, A)
    await queue(store, A, 2)
    async with running_dispatcher(store, linger_s=30) as run:
        await run.sender.wait_for(2)
        await queue(store, A, 1)
        await run.wakeups.notification_added(A)
        await run.sender.wait_for(3)
        assert [body["n"] for body in run.sender.bodies] == [0, 1, 0]
        assert run.store.lanes_claimed == 1
        assert run.store.releases == 0


@pytest.mark.parametrize("ids_commit_in_order", [True, False])
async def test_a_long_queue_goes_out_in_order_in_batches(
    store: SqlStore, ids_commit_in_order: bool
) -> None:
    await add(store, A)
    count = 2 * BATCH + 50
    await queue(store, A, count)
    async with running_dispatcher(
        store, linger_s=0.01, ids_commit_in_order=ids_commit_in_order
    ) as run:
        await run.sender.wait_for(count)
        await asyncio.wait_for(run.store.released.wait(), 10)
    assert [body["n"] for body in run.sender.bodies] == list(range(count))
    assert await store.count_notifications(A) == 0
    if ids_commit_in_order:
        # Each read starts after the last delivered id: nothing read twice.
        assert run.store.rows_read == count
    else:
        # Each read also asks for as many as are being marked, in case it sees them, and
        # so reads what the next read returns again.
        assert run.store.rows_read > count


async def test_a_wake_up_for_a_lane_running_here_costs_no_claim(store: SqlStore) -> None:
    await add(store, A, B)
    await queue(store, A, 1)
    async with running_dispatcher(store, linger_s=30) as run:
        await run.sender.wait_for(1)
        for delivered in (2, 3, 4):
            await queue(store, A, 1)
            await run.wakeups.notification_added(A)  # the lane's, read by the lane itself
            await run.sender.wait_for(delivered)
        await queue(store, B, 1)
        await run.wakeups.notification_added(B)  # no lane runs for B: a claim
        await run.sender.wait_for(5)
        assert run.store.lanes_claimed == 2
        # The claim of each lane and at most one that found nothing after it; each of A's three
        # wake-ups would have been one more.
        assert run.store.claims <= 4


async def test_a_wake_up_claims_the_lanes_it_named(store: SqlStore) -> None:
    # A claim for any lane reads every push-mode instance's head; one for named lanes only
    # theirs. Claims for any lane are kept to the start, the poll and a wake-up for "any".
    await add(store, A, B, C)
    async with running_dispatcher(store, linger_s=0.01) as run:
        await asyncio.wait_for(run.store.claimed.wait(), 10)  # at start: nothing to claim
        await queue(store, B, 1)
        await run.wakeups.notification_added(B)
        await run.sender.wait_for(1)
        await queue(store, A, 1)
        await run.wakeups.notification_added(A)
        await run.sender.wait_for(2)
        assert run.store.named[0] is None  # at start
        assert run.store.named[1:3] == [frozenset({B}), frozenset({A})]
        await queue(store, C, 1)
        await run.wakeups.notification_added(ANY_INSTANCE)
        await run.sender.wait_for(3)
        assert None in run.store.named[3:]


async def test_named_lanes_beyond_the_free_slots_are_claimed_as_slots_free_up(
    store: SqlStore,
) -> None:
    lanes = [A, B, C, D, E]  # one more than the dispatcher's four slots
    await add(store, *lanes)
    async with running_dispatcher(store, linger_s=0.01) as run:
        await asyncio.wait_for(run.store.claimed.wait(), 10)  # at start: nothing to claim
        for lane in lanes:
            await queue(store, lane, 1)
        # One wake-up naming all five: LocalWakeUps does not yield, so the dispatcher sees them
        # together and its claim for them fills every slot.
        for lane in lanes:
            await run.wakeups.notification_added(lane)
        await run.sender.wait_for(5)  # the poll (30 s) never came: the fifth was remembered
        assert run.store.lanes_claimed == 5
        assert frozenset(lanes) in run.store.named


async def test_a_lane_with_nothing_more_is_released_after_lingering(store: SqlStore) -> None:
    await add(store, A)
    await queue(store, A, 1)
    async with running_dispatcher(store, linger_s=0.01) as run:
        await run.sender.wait_for(1)
        await asyncio.wait_for(run.store.released.wait(), 10)
        assert await store.claim_push_lanes(10, timedelta(minutes=1)) == []  # nothing queued
        await queue(store, A, 1)
        await run.wakeups.notification_added(A)
        await run.sender.wait_for(2)
        assert run.store.lanes_claimed == 2


async def test_a_drained_queue_is_not_read_again_without_a_wake_up(store: SqlStore) -> None:
    await add(store, A)
    await queue(store, A, 3)
    async with running_dispatcher(store, linger_s=0.01) as run:
        await run.sender.wait_for(3)
        await asyncio.wait_for(run.store.released.wait(), 10)
        # One read found all three and the queue empty; nothing was added since, so the lane
        # lingered without reading again, and took them off the queue with its release (one
        # write transaction, not a mark and a release).
        assert run.store.reads == 1
        assert run.store.marks == 0
        assert await store.count_notifications(A) == 0


async def test_what_arrives_without_a_wake_up_goes_out_at_the_next_poll(
    store: SqlStore,
) -> None:
    await add(store, A)
    await queue(store, A, 1)
    async with running_dispatcher(store, linger_s=0.05, poll_interval_s=0.2) as run:
        await run.sender.wait_for(1)
        # As another process would queue it: no wake-up reaches this dispatcher.
        await queue(store, A, 1)
        await run.sender.wait_for(2)
        assert [body["n"] for body in run.sender.bodies] == [0, 0]


async def test_a_lane_that_ended_on_an_empty_queue_costs_no_claim_after_it(
    store: SqlStore,
) -> None:
    await add(store, A)
    await queue(store, A, 1)
    async with running_dispatcher(store, linger_s=0.01) as run:
        await run.sender.wait_for(1)
        await asyncio.wait_for(run.store.released.wait(), 10)
        await queue(store, A, 1)
        await run.wakeups.notification_added(A)
        await run.sender.wait_for(2)
        assert run.store.lanes_claimed == 2
        # One claim per lane: none again right after a claim that filled fewer slots than it
        # asked for, none after a lane that ended with nothing left.
        assert run.store.claims == 2


class GatedSender(RecordingSender):
    """Holds the first webhook until `gate` is set, as a stalled node would."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.holding = asyncio.Event()

    async def post(
        self, url: str, headers: Mapping[str, str], body: bytes, lane: str = ""
    ) -> DeliveryAttempt:
        if not self.bodies:
            self.holding.set()
            await self.gate.wait()
        return await super().post(url, headers, body, lane)


async def test_a_lane_that_lost_its_lease_stops_before_pushing_again(
    store: SqlStore, database_url: str
) -> None:
    await add(store, A)
    [_, *rest] = await queue(store, A, 3)
    sender = GatedSender()
    stalled_s = 0.0  # how far the dispatcher's clock jumps: the length of the stall

    def clock() -> float:
        return time.monotonic() + stalled_s

    async with open_store(database_url) as taker:
        async with running_dispatcher(store, linger_s=30, sender=sender, clock=clock) as run:
            await asyncio.wait_for(sender.holding.wait(), 10)
            # While its first push hangs, the lane's lease runs out and another node takes it.
            engine = sa.create_engine(sync_url(database_url))
            try:
                with engine.begin() as conn:
                    conn.execute(
                        sa.update(push_lanes).values(lease_until=datetime(2000, 1, 1, tzinfo=UTC))
                    )
            finally:
                engine.dispose()
            assert await taker.claim_push_lanes(10, timedelta(minutes=5)) == [A]
            stalled_s = 3600
            sender.gate.set()
            await asyncio.wait_for(run.store.released.wait(), 10)
            # The push in flight went out; the next did not, and what went out left the queue.
            assert len(sender.bodies) == 1
            assert [n.receipt_id for n in await store.queued_notifications(A, 10)] == rest
        assert await taker.renew_push_lane(A, timedelta(minutes=5))  # its lease untouched
