"""InstanceService's cache: concurrent finds of an uncached instance share one store read."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest

from tests.integration.test_store import make_instance
from wagate.core.errors import WagateError
from wagate.core.instances import InstanceService
from wagate.core.model import Instance

pytestmark = pytest.mark.anyio

INSTANCE = make_instance()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class GatedStore:
    """A store whose instance reads wait for `release`, so that callers pile up on one."""

    def __init__(self) -> None:
        self.row: Instance | None = INSTANCE
        self.reads = 0
        self.release = asyncio.Event()
        self.fail_next = False

    async def get_instance(self, instance_id: int) -> Instance | None:
        self.reads += 1
        row = self.row
        await self.release.wait()
        if self.fail_next:
            self.fail_next = False
            raise WagateError("database error (OperationalError)")
        return row

    async def update_instance(self, instance_id: int, **changes: Any) -> Instance | None:
        assert self.row is not None
        kept = {name: value for name, value in changes.items() if value is not None}
        self.row = dataclasses.replace(self.row, **kept)
        return self.row


async def started(store: GatedStore, reads: int) -> None:
    while store.reads < reads:
        await asyncio.sleep(0)


async def test_concurrent_finds_share_one_read() -> None:
    store = GatedStore()
    service = InstanceService(store, cache_ttl_s=60)  # type: ignore[arg-type]
    finds = [asyncio.create_task(service.find(INSTANCE.id)) for _ in range(20)]
    await started(store, 1)
    for _ in range(5):
        await asyncio.sleep(0)
    assert store.reads == 1
    store.release.set()
    assert await asyncio.gather(*finds) == [INSTANCE] * 20
    assert await service.find(INSTANCE.id) == INSTANCE
    assert store.reads == 1  # cached since


async def test_without_a_cache_each_wave_of_finds_reads_once() -> None:
    store = GatedStore()
    service = InstanceService(store, cache_ttl_s=0)  # type: ignore[arg-type]
    store.release.set()
    first = await asyncio.gather(*(service.find(INSTANCE.id) for _ in range(5)))
    second = await service.find(INSTANCE.id)
    assert first == [INSTANCE] * 5
    assert second == INSTANCE
    assert store.reads == 2


async def test_a_caller_that_gives_up_does_not_cancel_the_read_of_the_others() -> None:
    store = GatedStore()
    service = InstanceService(store, cache_ttl_s=60)  # type: ignore[arg-type]
    quitter = asyncio.create_task(service.find(INSTANCE.id))
    stayer = asyncio.create_task(service.find(INSTANCE.id))
    await started(store, 1)
    quitter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await quitter
    store.release.set()
    assert await stayer == INSTANCE
    assert store.reads == 1


async def test_a_failed_read_reaches_every_waiter_and_the_next_find_reads_again() -> None:
    store = GatedStore()
    store.fail_next = True
    service = InstanceService(store, cache_ttl_s=60)  # type: ignore[arg-type]
    finds = [asyncio.create_task(service.find(INSTANCE.id)) for _ in range(3)]
    await started(store, 1)
    store.release.set()
    outcomes = await asyncio.gather(*finds, return_exceptions=True)
    assert [type(outcome) for outcome in outcomes] == [WagateError] * 3
    assert await service.find(INSTANCE.id) == INSTANCE
    assert store.reads == 2


async def test_a_change_made_during_a_read_is_not_overwritten_by_it() -> None:
    store = GatedStore()
    service = InstanceService(store, cache_ttl_s=60)  # type: ignore[arg-type]
    reading = asyncio.create_task(service.find(INSTANCE.id))
    await started(store, 1)  # the read has the old row
    rotated = await service.rotate_token(INSTANCE.id)
    assert rotated.api_token != INSTANCE.api_token
    store.release.set()
    assert await reading == INSTANCE  # what was read, for the caller who asked before the change
    assert await service.find(INSTANCE.id) == rotated
    assert store.reads == 1
