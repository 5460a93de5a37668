"""PushDispatcher's lanes against a real store: a lane whose queue ran dry stays claimed for a
moment and delivers what arrives meanwhile, without giving the lane up and claiming it again."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import pytest

from tests.integration.test_store_push import A, add, queue
from wagate.core.instances import InstanceService
from wagate.core.model import DeliveryAttempt, Notification
from wagate.core.wakeups import LocalWakeUps
from wagate.stores import SqlStore
from wagate.workers.delivery import PushDispatcher

pytestmark = pytest.mark.anyio


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
        self.lanes_claimed = 0
        self.releases = 0
        self.released = asyncio.Event()
        self.reads = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def claim_push_lanes(self, limit: int, lease: timedelta) -> list[int]:
        lanes = await self._store.claim_push_lanes(limit, lease)
        self.lanes_claimed += len(lanes)
        return lanes

    async def release_push_lane(self, instance_id: int) -> None:
        await self._store.release_push_lane(instance_id)
        self.releases += 1
        self.released.set()

    async def queued_notifications(
        self, instance_id: int, limit: int, after_receipt_id: int = 0
    ) -> list[Notification]:
        self.reads += 1
        return await self._store.queued_notifications(instance_id, limit, after_receipt_id)


async def run_dispatcher(store: SqlStore, linger_s: float) -> tuple[Any, ...]:
    counting = CountingClaims(store)
    sender = RecordingSender()
    wakeups = LocalWakeUps()
    dispatcher = PushDispatcher(
        counting,
        InstanceService(store),
        sender,
        wakeups,
        concurrency=4,
        timeout_s=5,
        max_interval_s=60,
        poll_interval_s=30,
        linger_s=linger_s,
    )
    return counting, sender, wakeups, asyncio.create_task(dispatcher.run())


async def test_a_lingering_lane_delivers_what_arrives_without_a_new_claim(
    store: SqlStore,
) -> None:
    await add(store, A)
    await queue(store, A, 2)
    counting, sender, wakeups, task = await run_dispatcher(store, linger_s=30)
    try:
        await sender.wait_for(2)
        await queue(store, A, 1)
        await wakeups.notification_added(A)
        await sender.wait_for(3)
        assert [body["n"] for body in sender.bodies] == [0, 1, 0]
        assert counting.lanes_claimed == 1
        assert counting.releases == 0
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_lane_with_nothing_more_is_released_after_lingering(store: SqlStore) -> None:
    await add(store, A)
    await queue(store, A, 1)
    counting, sender, wakeups, task = await run_dispatcher(store, linger_s=0.01)
    try:
        await sender.wait_for(1)
        await asyncio.wait_for(counting.released.wait(), 10)
        assert await store.claim_push_lanes(10, timedelta(minutes=1)) == []  # nothing queued
        await queue(store, A, 1)
        await wakeups.notification_added(A)
        await sender.wait_for(2)
        assert counting.lanes_claimed == 2
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_drained_queue_is_not_read_again_without_a_wake_up(store: SqlStore) -> None:
    await add(store, A)
    await queue(store, A, 3)
    counting, sender, _, task = await run_dispatcher(store, linger_s=0.01)
    try:
        await sender.wait_for(3)
        await asyncio.wait_for(counting.released.wait(), 10)
        # One read found all three and the queue empty; nothing was added since, so the lane
        # marked them and lingered without reading again.
        assert counting.reads == 1
        assert await store.count_notifications(A) == 0
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_what_arrives_without_a_wake_up_goes_out_after_the_lane_is_claimed_again(
    store: SqlStore,
) -> None:
    await add(store, A)
    await queue(store, A, 1)
    _, sender, _, task = await run_dispatcher(store, linger_s=0.05)
    try:
        await sender.wait_for(1)
        # As another process would queue it: no wake-up reaches this dispatcher.
        await queue(store, A, 1)
        await sender.wait_for(2)
        assert [body["n"] for body in sender.bodies] == [0, 0]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
