"""NotificationService's polling window: receives answered from prefetched heads, in order,
and never a notification this process has already taken off the queue."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from tests.integration.test_store import make_instance, queue
from wagate.core.errors import PushModeActive
from wagate.core.model import Instance, InstanceSettings
from wagate.core.notifications import NotificationService
from wagate.core.ports import Store
from wagate.core.wakeups import LocalWakeUps

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class CountingStore:
    """The store, counting the reads of queue heads."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.head_reads = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def list_notifications(self, *args: Any, **kwargs: Any) -> Any:
        self.head_reads += 1
        return await self._store.list_notifications(*args, **kwargs)

    async def head_notification(self, *args: Any, **kwargs: Any) -> Any:
        self.head_reads += 1
        return await self._store.head_notification(*args, **kwargs)


async def head_id(service: NotificationService, instance: Instance) -> int | None:
    head = await service.receive(instance, 0)
    return None if head is None else head.receipt_id


async def setup(
    store: Store, n: int, prefetch: int
) -> tuple[Instance, list[int], CountingStore, NotificationService]:
    instance = make_instance()
    await store.create_instance(instance)
    ids = await queue(store, instance.id, n)
    counting = CountingStore(store)
    service = NotificationService(counting, LocalWakeUps(), 60.0, prefetch=prefetch)
    return instance, ids, counting, service


async def test_a_drain_reads_the_queue_once_per_window(store: Store) -> None:
    instance, ids, counting, service = await setup(store, 10, prefetch=4)
    seen = []
    for _ in range(10):
        head = await service.receive(instance, 0)
        assert head is not None
        assert await service.receive(instance, 0) == head  # the same head until deleted
        assert await service.delete(instance, head.receipt_id)
        seen.append(head.receipt_id)
    assert seen == ids
    assert await service.receive(instance, 0) is None
    assert counting.head_reads == 4  # 4 + 4 + 2, then the empty queue
    assert await store.count_notifications(instance.id) == 0


async def test_without_prefetch_every_receive_reads(store: Store) -> None:
    instance, ids, counting, service = await setup(store, 3, prefetch=1)
    for receipt_id in ids:
        head = await service.receive(instance, 0)
        assert head is not None and head.receipt_id == receipt_id
        assert await service.delete(instance, receipt_id)
    assert counting.head_reads == 3


async def test_deleting_out_of_order_skips_that_one(store: Store) -> None:
    instance, ids, _, service = await setup(store, 4, prefetch=8)
    assert await head_id(service, instance) == ids[0]
    assert await service.delete(instance, ids[1])
    assert await service.delete(instance, ids[0])
    assert await head_id(service, instance) == ids[2]


async def test_a_failed_delete_still_leaves_the_window(store: Store) -> None:
    # Deleted behind the window's back (as another process would), then by the client.
    instance, ids, _, service = await setup(store, 3, prefetch=8)
    assert await head_id(service, instance) == ids[0]
    assert await store.delete_notification(instance.id, ids[0])
    assert not await service.delete(instance, ids[0])
    assert await head_id(service, instance) == ids[1]


async def test_clearing_the_queue_empties_the_window(store: Store) -> None:
    instance, _, _, service = await setup(store, 3, prefetch=8)
    assert await service.receive(instance, 0) is not None
    assert await service.clear(instance) == 3
    assert await service.receive(instance, 0) is None
    [later] = await queue(store, instance.id, 1)
    assert await head_id(service, instance) == later


async def test_dead_lettering_empties_every_window(store: Store) -> None:
    instance, _, _, service = await setup(store, 2, prefetch=8)
    assert await service.receive(instance, 0) is not None
    assert await service.dead_letter_expired(timedelta(seconds=-60)) == 2
    assert await service.receive(instance, 0) is None


async def test_push_mode_and_forget_drop_the_window(store: Store) -> None:
    instance, ids, counting, service = await setup(store, 3, prefetch=8)
    assert await head_id(service, instance) == ids[0]
    pushing = replace(instance, settings=InstanceSettings(webhook_url="http://127.0.0.1:9/hook"))
    with pytest.raises(PushModeActive):
        await service.receive(pushing, 0)
    # Meanwhile the push lane delivered the first two.
    await store.mark_delivered(instance.id, ids[:2])
    assert await head_id(service, instance) == ids[2]
    await store.mark_delivered(instance.id, ids[2:])
    service.forget(instance.id)
    reads = counting.head_reads
    assert await service.receive(instance, 0) is None
    assert counting.head_reads == reads + 1


class GatedReads(CountingStore):
    """Reads the heads at once but hands them over only when the test opens the gate, so a
    delete can commit while a window read is in flight."""

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self.read_done = asyncio.Event()
        self.gate = asyncio.Event()

    async def list_notifications(self, *args: Any, **kwargs: Any) -> Any:
        heads = await super().list_notifications(*args, **kwargs)
        self.read_done.set()
        await self.gate.wait()
        return heads


async def test_a_window_read_overtaken_by_a_delete_is_not_kept(store: Store) -> None:
    instance = make_instance()
    await store.create_instance(instance)
    ids = await queue(store, instance.id, 3)
    gated = GatedReads(store)
    service = NotificationService(gated, LocalWakeUps(), 60.0, prefetch=8)
    first = asyncio.create_task(service.receive(instance, 0))
    await gated.read_done.wait()  # it read ids[0..2] ...
    assert await service.delete(instance, ids[0])  # ... and ids[0] goes meanwhile
    gated.gate.set()
    stale = await first
    assert stale is not None and stale.receipt_id == ids[0]  # what it read, as without windows
    assert await head_id(service, instance) == ids[1]  # but that read is not kept
    assert gated.head_reads == 2
