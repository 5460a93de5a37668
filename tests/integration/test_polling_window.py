"""NotificationService's polling window: receives answered from prefetched heads, in order,
and never a notification this process has already taken off the queue; deletes answered from
the window written together, before anything reads the queue again."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_store import make_instance, queue
from wagate.bootstrap import open_runtime
from wagate.config import Settings
from wagate.core import notifications
from wagate.core.errors import InvalidToken, PushModeActive, UnknownInstance
from wagate.core.instances import InstanceService
from wagate.core.model import Instance, InstanceSettings, NotificationStatus
from wagate.core.notifications import NotificationService
from wagate.core.ports import Store
from wagate.core.settings import SettingsService
from wagate.core.wakeups import LocalWakeUps
from wagate.stores.sql import open_store

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class CountingStore:
    """The store, counting the reads of queue heads and the deletes (one by one, or deferred
    and written together; `written` is set when such a write has committed)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.head_reads = 0
        self.single_deletes = 0
        self.batch_deletes = 0
        self.written = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def list_notifications(self, *args: Any, **kwargs: Any) -> Any:
        self.head_reads += 1
        return await self._store.list_notifications(*args, **kwargs)

    async def head_notification(self, *args: Any, **kwargs: Any) -> Any:
        self.head_reads += 1
        return await self._store.head_notification(*args, **kwargs)

    async def delete_notification(self, *args: Any, **kwargs: Any) -> Any:
        self.single_deletes += 1
        return await self._store.delete_notification(*args, **kwargs)

    async def delete_notifications(self, *args: Any, **kwargs: Any) -> Any:
        self.batch_deletes += 1
        deleted = await self._store.delete_notifications(*args, **kwargs)
        self.written.set()
        return deleted


@pytest.fixture
async def opened(store: Store) -> AsyncIterator[list[NotificationService]]:
    """The services a test made, closed (what they deferred written) before the store."""
    services: list[NotificationService] = []
    yield services
    for service in services:
        await service.aclose()


async def head_id(service: NotificationService, instance: Instance) -> int | None:
    head = await service.receive(instance, 0)
    return None if head is None else head.receipt_id


Setup = Callable[..., Any]


@pytest.fixture
def setup(store: Store, opened: list[NotificationService]) -> Setup:
    async def make(
        n: int, prefetch: int = 8, wrapper: type[CountingStore] = CountingStore
    ) -> tuple[Instance, list[int], Any, NotificationService]:
        instance = make_instance()
        await store.create_instance(instance)
        ids = await queue(store, instance.id, n)
        counting = wrapper(store)
        service = NotificationService(counting, LocalWakeUps(), 60.0, prefetch=prefetch)
        opened.append(service)
        return instance, ids, counting, service

    return make


async def test_a_drain_reads_the_queue_once_per_window(store: Store, setup: Setup) -> None:
    instance, ids, counting, service = await setup(10, prefetch=4)
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
    # A window's deletes written together before the next read: 4, 4, then 2.
    assert (counting.single_deletes, counting.batch_deletes) == (0, 3)
    assert await store.count_notifications(instance.id) == 0


async def test_without_prefetch_every_receive_reads_and_every_delete_writes(
    setup: Setup,
) -> None:
    instance, ids, counting, service = await setup(3, prefetch=1)
    for receipt_id in ids:
        head = await service.receive(instance, 0)
        assert head is not None and head.receipt_id == receipt_id
        assert await service.delete(instance, receipt_id)
    assert counting.head_reads == 3
    assert (counting.single_deletes, counting.batch_deletes) == (3, 0)


async def test_deleting_out_of_order_skips_that_one(setup: Setup) -> None:
    instance, ids, _, service = await setup(4)
    assert await head_id(service, instance) == ids[0]
    assert await service.delete(instance, ids[1])
    assert await service.delete(instance, ids[0])
    assert await head_id(service, instance) == ids[2]


async def test_a_deferred_delete_is_written_soon_with_no_other_call(
    store: Store, setup: Setup
) -> None:
    instance, ids, counting, service = await setup(2)
    assert await head_id(service, instance) == ids[0]
    assert await service.delete(instance, ids[0])
    assert await store.count_notifications(instance.id) == 2  # answered, not yet written
    await asyncio.wait_for(counting.written.wait(), 5)
    assert await store.count_notifications(instance.id) == 1
    assert counting.single_deletes == 0


async def test_a_second_delete_of_one_notification_answers_false(setup: Setup) -> None:
    instance, ids, counting, service = await setup(2)
    assert await head_id(service, instance) == ids[0]
    assert await service.delete(instance, ids[0])
    assert not await service.delete(instance, ids[0])  # still deferred
    await service.write_deferred_deletes()
    assert not await service.delete(instance, ids[0])  # written
    assert counting.batch_deletes == 1


async def test_count_list_and_clear_see_the_deferred_deletes(setup: Setup) -> None:
    instance, ids, _, service = await setup(3)
    assert await head_id(service, instance) == ids[0]
    assert await service.delete(instance, ids[0])
    assert await service.count(instance) == 2
    queued = await service.list_for(instance.id, NotificationStatus.QUEUED)
    assert [n.receipt_id for n in queued] == ids[1:]
    assert await head_id(service, instance) == ids[1]
    assert await service.delete(instance, ids[1])
    assert await service.clear(instance) == 1


async def test_closing_writes_what_was_deferred(store: Store, setup: Setup) -> None:
    instance, ids, counting, service = await setup(2)
    assert await head_id(service, instance) == ids[0]
    assert await service.delete(instance, ids[0])
    await service.aclose()
    assert counting.batch_deletes == 1
    assert await store.count_notifications(instance.id) == 1


class FailingDeletes(CountingStore):
    """Its next write of deferred deletes fails."""

    fail = True

    async def delete_notifications(self, *args: Any, **kwargs: Any) -> Any:
        if self.fail:
            self.fail = False
            raise OSError("disk I/O error")
        return await super().delete_notifications(*args, **kwargs)


async def failed_first_write(setup: Setup, n: int) -> tuple[Instance, list[int], Any, Any]:
    """An instance with `n` queued, the first deleted from the window, the write of that
    delete set to fail."""
    instance, ids, failing, service = await setup(n, wrapper=FailingDeletes)
    assert await head_id(service, instance) == ids[0]
    assert await service.delete(instance, ids[0])
    return instance, ids, failing, service


async def test_deferred_deletes_a_failed_write_kept_are_written_by_the_next(
    store: Store, setup: Setup
) -> None:
    instance, ids, _, service = await failed_first_write(setup, 3)
    with pytest.raises(OSError, match="disk I/O error"):
        await service.write_deferred_deletes()
    assert not await service.delete(instance, ids[0])  # still deleted, as answered
    await service.write_deferred_deletes()
    assert await store.count_notifications(instance.id) == 2


async def test_a_write_that_failed_its_caller_is_tried_again_on_its_own(
    store: Store, setup: Setup
) -> None:
    instance, _, failing, service = await failed_first_write(setup, 2)
    with pytest.raises(OSError, match="disk I/O error"):
        await service.count(instance)
    await asyncio.wait_for(failing.written.wait(), 5)  # a second later, with no other call
    assert await store.count_notifications(instance.id) == 1


async def test_a_failed_background_write_is_logged_and_retried(
    store: Store, setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        instance, _, failing, _ = await failed_first_write(setup, 2)
        await asyncio.wait_for(failing.written.wait(), 5)  # the retry, a second later
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    # The failure with its traceback, then the retry's success (a lasting failure would add
    # one line a minute, not one a second: tests/unit/test_repeated_failure.py).
    assert [getattr(r, "action", None) for r in warnings] == ["deferred_deletes_failed"] * 2
    assert warnings[0].getMessage().endswith("failed") and warnings[0].exc_info is not None
    assert "works again after 1 failures" in warnings[1].getMessage()
    assert await store.count_notifications(instance.id) == 1


async def test_a_delete_behind_the_windows_back_is_answered_from_the_window(
    store: Store, setup: Setup
) -> None:
    # Deleted by another process, then by the client: the window still held it, so the client
    # hears true (as it was handed the notification), and the deferred write finds nothing.
    instance, ids, _, service = await setup(3)
    assert await head_id(service, instance) == ids[0]
    assert await store.delete_notification(instance.id, ids[0])
    assert await service.delete(instance, ids[0])
    assert await head_id(service, instance) == ids[1]
    await service.write_deferred_deletes()
    assert await store.count_notifications(instance.id) == 2


class AnySender:
    async def check_url(self, url: str) -> None:
        return None


def settings_service(store: Store, service: NotificationService) -> SettingsService:
    return SettingsService(
        InstanceService(store, cache_ttl_s=60.0),
        service,
        AnySender(),  # type: ignore[arg-type]  # only check_url is called
        LocalWakeUps(),
    )


async def test_switching_to_push_writes_the_deferred_deletes_first(
    store: Store, setup: Setup
) -> None:
    instance, ids, counting, service = await setup(3)
    assert await head_id(service, instance) == ids[0]
    assert await service.delete(instance, ids[0])
    settings = settings_service(store, service)
    await settings.change(instance, InstanceSettings(webhook_url="http://127.0.0.1:9/hook"))
    # What a push lane would read now.
    queued = await store.list_notifications(instance.id, NotificationStatus.QUEUED)
    assert [n.receipt_id for n in queued] == ids[1:]
    assert counting.batch_deletes == 1


class WaitingWakeUps(LocalWakeUps):
    """Sets `waiting` when a long poll starts waiting for a notification."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting = asyncio.Event()

    async def wait_notification(self, *args: Any, **kwargs: Any) -> None:
        self.waiting.set()
        await super().wait_notification(*args, **kwargs)


@pytest.mark.parametrize("prefetch", [1, 8], ids=["postgresql-style", "window"])
async def test_a_switch_to_push_ends_the_long_polls_waiting_on_the_instance(
    store: Store, opened: list[NotificationService], prefetch: int
) -> None:
    """Their lane now delivers the queue: a head handed out to a poll would arrive twice."""
    instance = make_instance()
    await store.create_instance(instance)
    wakeups = WaitingWakeUps()
    service = NotificationService(store, wakeups, 60.0, prefetch=prefetch)
    opened.append(service)
    instances = InstanceService(store, cache_ttl_s=60.0)
    settings = SettingsService(
        instances,
        service,
        AnySender(),  # type: ignore[arg-type]  # only check_url is called
        wakeups,
    )

    async def still_allowed() -> Instance:  # as the route checks after each wait
        return await instances.authenticate(instance.id, instance.api_token)

    poll = asyncio.create_task(service.receive(instance, 30, still_allowed))
    await asyncio.wait_for(wakeups.waiting.wait(), 5)
    await settings.change(instance, InstanceSettings(webhook_url="http://127.0.0.1:9/hook"))
    with pytest.raises(PushModeActive):
        await asyncio.wait_for(poll, 5)

    # Switched back to polling, a new poll waits and is answered as before.
    await settings.change(instance, InstanceSettings())
    wakeups.waiting.clear()
    poll = asyncio.create_task(service.receive(instance, 30, still_allowed))
    await asyncio.wait_for(wakeups.waiting.wait(), 5)
    [receipt_id] = await queue(store, instance.id, 1)
    await wakeups.notification_added(instance.id)
    head = await asyncio.wait_for(poll, 5)
    assert head is not None and head.receipt_id == receipt_id


async def changed_elsewhere(store: Store, instance: Instance, change: str) -> None:
    """What another process (the CLI, another node) does: a write to the store that this
    process's caches and wake-ups know nothing of."""
    if change == "token rotated":
        await store.update_instance(instance.id, api_token="n" * 50)
    elif change == "deleted":
        assert await store.delete_instance(instance.id)
    else:
        await store.update_instance(
            instance.id, settings=InstanceSettings(webhook_url="http://127.0.0.1:9/hook")
        )


async def waiting_poll(
    store: Store, opened: list[NotificationService], poll_interval_s: float, prefetch: int
) -> tuple[Instance, WaitingWakeUps, asyncio.Task[Any]]:
    """A 30 s long poll on a new instance, waiting, that rechecks the instance after every wait
    as the route does (its cache as fresh as the poll interval)."""
    instance = make_instance()
    await store.create_instance(instance)
    wakeups = WaitingWakeUps()
    service = NotificationService(store, wakeups, poll_interval_s, prefetch=prefetch)
    opened.append(service)
    instances = InstanceService(store, cache_ttl_s=poll_interval_s)

    async def still_allowed() -> Instance:
        return await instances.authenticate(instance.id, instance.api_token)

    poll = asyncio.create_task(service.receive(instance, 30, still_allowed))
    await asyncio.wait_for(wakeups.waiting.wait(), 5)
    return instance, wakeups, poll


_CHANGES = {
    "token rotated": InvalidToken,
    "deleted": UnknownInstance,
    "switched to push": PushModeActive,
}


@pytest.mark.parametrize("prefetch", [1, 8], ids=["postgresql-style", "window"])
@pytest.mark.parametrize("change", list(_CHANGES))
async def test_a_long_poll_sees_a_change_made_elsewhere_before_handing_out_a_notification(
    store: Store, opened: list[NotificationService], change: str, prefetch: int
) -> None:
    """A notification that wakes the poll after the change is not handed to a token that no
    longer works, nor to a poller while the instance's lane pushes it (it would arrive twice)."""
    # Re-reads as seldom as the poll times out: only the notification's wake-up ends its wait.
    instance, wakeups, poll = await waiting_poll(store, opened, 60.0, prefetch)
    await changed_elsewhere(store, instance, change)
    if change != "deleted":
        await queue(store, instance.id, 1)
    await wakeups.notification_added(instance.id)
    with pytest.raises(_CHANGES[change]):
        await asyncio.wait_for(poll, 5)


@pytest.mark.parametrize("change", list(_CHANGES))
async def test_a_long_poll_sees_a_change_made_elsewhere_within_the_poll_interval(
    store: Store, opened: list[NotificationService], change: str
) -> None:
    """With no wake-up at all, the poll ends at its next re-read, not at its 30 s timeout."""
    instance, _, poll = await waiting_poll(store, opened, 0.05, 8)
    await changed_elsewhere(store, instance, change)
    with pytest.raises(_CHANGES[change]):
        await asyncio.wait_for(poll, 5)


async def test_a_long_poll_that_may_go_on_is_answered_after_its_recheck(
    store: Store, opened: list[NotificationService]
) -> None:
    instance = make_instance()
    await store.create_instance(instance)
    wakeups = WaitingWakeUps()
    service = NotificationService(store, wakeups, 60.0, prefetch=8)
    opened.append(service)
    rechecks = 0

    async def still_allowed() -> Instance:
        nonlocal rechecks
        rechecks += 1
        return instance

    poll = asyncio.create_task(service.receive(instance, 30, still_allowed))
    await asyncio.wait_for(wakeups.waiting.wait(), 5)
    [receipt_id] = await queue(store, instance.id, 1)
    await wakeups.notification_added(instance.id)
    head = await asyncio.wait_for(poll, 5)
    assert head is not None and head.receipt_id == receipt_id
    assert rechecks == 1
    # A queue with a head answers at once: no wait, no recheck.
    assert await service.receive(instance, 30, still_allowed) == head
    assert rechecks == 1


@pytest.mark.parametrize("prefetch", [1, 8], ids=["postgresql-style", "window"])
async def test_ending_long_polls_answers_the_waiting_ones_and_later_ones_at_once(
    store: Store, opened: list[NotificationService], prefetch: int
) -> None:
    """What the server does when it begins to shut down (http/server.py)."""
    instance = make_instance()
    await store.create_instance(instance)
    service = NotificationService(store, LocalWakeUps(), 60.0, prefetch=prefetch)
    opened.append(service)
    polls = [asyncio.create_task(service.receive(instance, 30)) for _ in range(3)]

    async def all_waiting() -> None:
        while service.waiting_polls < 3:
            await asyncio.sleep(0)

    await asyncio.wait_for(all_waiting(), 5)
    service.end_long_polls()
    assert await asyncio.wait_for(asyncio.gather(*polls), 5) == [None, None, None]
    assert service.waiting_polls == 0
    # A poll that comes later does not wait, yet still gets what is queued.
    assert await asyncio.wait_for(service.receive(instance, 30), 5) is None
    [receipt_id] = await queue(store, instance.id, 1)
    head = await asyncio.wait_for(service.receive(instance, 30), 5)
    assert head is not None and head.receipt_id == receipt_id


async def test_a_failed_write_does_not_fail_the_switch_to_push(
    store: Store, setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    instance, ids, failing, service = await failed_first_write(setup, 3)
    settings = settings_service(store, service)
    with caplog.at_level(logging.WARNING):
        updated = await settings.change(
            instance, InstanceSettings(webhook_url="http://127.0.0.1:9/hook")
        )
        assert updated.settings.push_mode  # saved, and reported so
        await asyncio.wait_for(failing.written.wait(), 5)  # retried a second later
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [getattr(r, "action", None) for r in warnings] == ["deferred_deletes_failed"]
    queued = await store.list_notifications(instance.id, NotificationStatus.QUEUED)
    assert [n.receipt_id for n in queued] == ids[1:]


async def test_clearing_the_queue_empties_the_window(store: Store, setup: Setup) -> None:
    instance, _, _, service = await setup(3)
    assert await service.receive(instance, 0) is not None
    assert await service.clear(instance) == 3
    assert await service.receive(instance, 0) is None
    [later] = await queue(store, instance.id, 1)
    assert await head_id(service, instance) == later


async def test_dead_lettering_empties_every_window(setup: Setup) -> None:
    instance, _, _, service = await setup(2)
    assert await service.receive(instance, 0) is not None
    assert await service.dead_letter_expired(timedelta(seconds=-60)) == 2
    assert await service.receive(instance, 0) is None


async def test_old_dead_letters_are_deleted_a_batch_per_transaction(
    store: Store, setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(notifications, "_DEAD_LETTER_BATCH", 2)
    instance, _, _, service = await setup(5)
    assert await service.dead_letter_expired(timedelta(seconds=-60)) == 5
    batches: list[int] = []
    delete_dead_letters = store.delete_dead_letters

    async def counted(created_before: datetime, limit: int) -> int:
        deleted = await delete_dead_letters(created_before, limit)
        batches.append(deleted)
        return deleted

    monkeypatch.setattr(store, "delete_dead_letters", counted)
    # Queued a minute from now: none is that old yet.
    assert await service.delete_old_dead_letters(timedelta(seconds=60)) == 0
    assert await service.delete_old_dead_letters(timedelta(seconds=-60)) == 5
    assert batches == [0, 2, 2, 1]
    assert await service.list_for(instance.id, NotificationStatus.DEAD) == []


async def test_push_mode_and_forget_drop_the_window(store: Store, setup: Setup) -> None:
    instance, ids, counting, service = await setup(3)
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


async def test_a_server_runtime_writes_deferred_deletes_when_it_closes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Written only by the close: the timer would fire after a minute.
    monkeypatch.setattr(notifications, "DEFERRED_DELETE_S", 60.0)
    settings = Settings(data_dir=tmp_path / "data")
    async with open_runtime(settings) as runtime:
        instance = await runtime.instances.create()
        ids = await queue(runtime.store, instance.id, 2)
        assert await head_id(runtime.notifications, instance) == ids[0]
        assert await runtime.notifications.delete(instance, ids[0])
        assert await runtime.store.count_notifications(instance.id) == 2
    async with open_store(settings.effective_database_url) as store:
        assert await store.count_notifications(instance.id) == 1
