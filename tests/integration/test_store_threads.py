"""How `SqlStore` runs its transactions in worker threads: group commit of `enqueue_avatar_job`,
cancellation, closing, and SQLite's single writer thread; on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from psycopg import errors as pg_errors
from sqlalchemy import Connection, insert, select
from sqlalchemy.exc import OperationalError

from tests.integration.test_store import make_instance
from wagate.core.errors import UnknownInstance, WagateError
from wagate.core.model import AvatarJob
from wagate.stores import SqlStore, _connect, migrate, open_store
from wagate.stores._threads import SqlRunner
from wagate.stores.schema import avatar_jobs, meta

pytestmark = pytest.mark.anyio

FIRST = 1101000001


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def create_instances(store: SqlStore, count: int) -> list[int]:
    ids = [FIRST + n for n in range(count)]
    for n, instance_id in enumerate(ids):
        await store.create_instance(make_instance(instance_id, f"1100123456{n}"))
    return ids


@asynccontextmanager
async def store_thread_held(writer: SqlRunner) -> AsyncIterator[None]:
    """SQLite: keep the one store thread busy in a write of its own for the block, so that what
    the block starts waits in its queue; then let it go and wait for that write."""
    started, release = threading.Event(), threading.Event()

    def hold(conn: Connection) -> None:
        started.set()
        assert release.wait(10)

    holding = asyncio.create_task(writer.run(hold))
    try:
        assert await asyncio.to_thread(started.wait, 10)
        yield
    finally:
        release.set()
        await holding


class BatchSpy:
    """Wraps the store's group-commit writer: records each batch, and can hold the first one
    in the writer thread until released, so that later calls queue up behind it."""

    def __init__(self, store: SqlStore, *, hold_first: bool = False) -> None:
        self.batches: list[list[Any]] = []
        self.first_started = threading.Event()
        self.release = threading.Event()
        if not hold_first:
            self.release.set()
        group = store._jobs
        write = group._write

        def spy(items: Sequence[Any]) -> Sequence[Any]:
            self.batches.append(list(items))
            if len(self.batches) == 1:
                self.first_started.set()
                assert self.release.wait(10)
            return write(items)

        group._write = spy

    async def wait_first(self) -> None:
        assert await asyncio.to_thread(self.first_started.wait, 10)


async def job_ids_in_database(database_url: str) -> dict[int, list[int]]:
    """Every job id per instance, read through a second store object."""
    async with open_store(database_url) as other:
        writer, _ = other.engines
        query = select(avatar_jobs.c.instance_id, avatar_jobs.c.id).order_by(avatar_jobs.c.id)
        rows = await writer.run(lambda conn: conn.execute(query).all())
    found: dict[int, list[int]] = {}
    for instance_id, job_id in rows:
        found.setdefault(instance_id, []).append(job_id)
    return found


# -- group commit -----------------------------------------------------------------------------


async def test_concurrent_enqueues_are_committed_together_in_call_order(
    database_url: str,
) -> None:
    async with open_store(database_url) as store:
        instance_ids = await create_instances(store, 4)
        spy = BatchSpy(store)
        calls = [(instance_ids[n % 4], f"7900000{n:04d}@c.us") for n in range(600)]
        jobs = await asyncio.gather(*(store.enqueue_avatar_job(i, c) for i, c in calls))

    assert [(job.instance_id, job.chat_id) for job in jobs] == calls
    assert len({job.id for job in jobs}) == len(calls)
    # Calls made while a batch was being written share the next one, up to the cap.
    assert max(len(batch) for batch in spy.batches) > 1
    assert max(len(batch) for batch in spy.batches) <= 256
    assert sum(len(batch) for batch in spy.batches) == len(calls)
    for instance_id in instance_ids:
        ids = [job.id for job in jobs if job.instance_id == instance_id]
        assert ids == sorted(ids)  # per instance, call order
    # Committed: another store object sees exactly these jobs.
    stored = await job_ids_in_database(database_url)
    for instance_id in instance_ids:
        assert stored[instance_id] == [job.id for job in jobs if job.instance_id == instance_id]


async def test_a_lone_enqueue_is_written_at_once(store: SqlStore) -> None:
    (instance_id,) = await create_instances(store, 1)
    spy = BatchSpy(store)
    for n in range(3):
        await store.enqueue_avatar_job(instance_id, f"{n}@c.us")
    assert [len(batch) for batch in spy.batches] == [1, 1, 1]


async def test_a_gone_instance_fails_only_its_own_caller(database_url: str) -> None:
    async with open_store(database_url) as store:
        instance_ids = await create_instances(store, 2)
        spy = BatchSpy(store, hold_first=True)
        first = asyncio.create_task(store.enqueue_avatar_job(instance_ids[0], "first@c.us"))
        await spy.wait_first()
        # Queued behind the held batch: these five make one batch, the ghost in the middle.
        targets = [instance_ids[0], instance_ids[1], 1109999999, instance_ids[1], instance_ids[0]]
        calls = [
            asyncio.create_task(store.enqueue_avatar_job(target, f"{n}@c.us"))
            for n, target in enumerate(targets)
        ]
        await asyncio.sleep(0)
        spy.release.set()
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        await first

    assert [len(batch) for batch in spy.batches[:2]] == [1, 5]
    assert isinstance(outcomes[2], UnknownInstance)
    assert "1109999999" in str(outcomes[2])
    jobs = [outcome for n, outcome in enumerate(outcomes) if n != 2]
    assert all(isinstance(job, AvatarJob) for job in jobs)
    stored = await job_ids_in_database(database_url)
    assert sum(len(ids) for ids in stored.values()) == 5
    for instance_id in instance_ids:
        mine = [
            job.id for job in jobs if isinstance(job, AvatarJob) and job.instance_id == instance_id
        ]
        assert stored[instance_id][-2:] == mine == sorted(mine)


async def test_a_database_error_fails_the_whole_batch(store: SqlStore) -> None:
    (instance_id,) = await create_instances(store, 1)
    group = store._jobs

    def broken(items: Sequence[Any]) -> Sequence[Any]:
        raise WagateError("database error (OperationalError)")

    group._write = broken
    results = await asyncio.gather(
        *(store.enqueue_avatar_job(instance_id, f"{n}@c.us") for n in range(5)),
        return_exceptions=True,
    )
    assert all(isinstance(result, WagateError) for result in results)
    assert await store.count_avatar_jobs() == 0


# -- cancellation -----------------------------------------------------------------------------


async def test_a_caller_cancelled_while_queued_is_left_out(database_url: str) -> None:
    async with open_store(database_url) as store:
        (instance_id,) = await create_instances(store, 1)
        spy = BatchSpy(store, hold_first=True)
        first = asyncio.create_task(store.enqueue_avatar_job(instance_id, "first@c.us"))
        await spy.wait_first()
        calls = [
            asyncio.create_task(store.enqueue_avatar_job(instance_id, f"{n}@c.us"))
            for n in range(4)
        ]
        await asyncio.sleep(0)
        calls[1].cancel()
        spy.release.set()
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        await first
        assert isinstance(outcomes[1], asyncio.CancelledError)
        assert [job.chat_id for job in outcomes if isinstance(job, AvatarJob)] == [
            "0@c.us",
            "2@c.us",
            "3@c.us",
        ]
        # The store goes on working.
        await store.enqueue_avatar_job(instance_id, "after@c.us")
        assert await store.count_avatar_jobs() == 5


async def test_a_caller_cancelled_mid_transaction_still_commits(store: SqlStore) -> None:
    writer, _ = store.engines
    started, release = threading.Event(), threading.Event()

    def slow_write(conn: Connection) -> None:
        conn.execute(insert(meta).values(key="slow", value="done"))
        started.set()
        assert release.wait(10)

    task = asyncio.create_task(writer.run(slow_write))
    assert await asyncio.to_thread(started.wait, 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    release.set()
    # The writer connection is not left inside that transaction: writes go on, and the
    # cancelled caller's write is committed.
    await store.set_meta("next", "1")
    for _ in range(100):
        if await store.get_meta("slow") == "done":
            break
        await asyncio.sleep(0.05)
    assert await store.get_meta("slow") == "done"
    assert await store.get_meta("next") == "1"


async def test_a_caller_cancelled_before_its_turn_writes_nothing(sqlite_url: str) -> None:
    # SQLite: while its one writer thread is busy, the next write waits in its queue.
    async with open_store(sqlite_url) as store:
        writer, _ = store.engines
        async with store_thread_held(writer):
            queued = asyncio.create_task(store.set_meta("queued", "1"))
            await asyncio.sleep(0)
            queued.cancel()
        with pytest.raises(asyncio.CancelledError):
            await queued
        await store.set_meta("after", "1")
        assert await store.get_meta("queued") is None
        assert await store.get_meta("after") == "1"


# -- closing ----------------------------------------------------------------------------------


def store_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(("wagate-sqlite", "wagate-db"))]


async def test_aclose_waits_for_running_and_queued_work(database_url: str) -> None:
    store = await open_store(database_url)
    (instance_id,) = await create_instances(store, 1)
    spy = BatchSpy(store, hold_first=True)
    calls = [
        asyncio.create_task(store.enqueue_avatar_job(instance_id, f"{n}@c.us")) for n in range(3)
    ]
    await spy.wait_first()
    closing = asyncio.create_task(store.aclose())
    await asyncio.sleep(0.05)
    assert not closing.done()  # held by the write in progress
    spy.release.set()
    await closing
    assert all(isinstance(call.result(), AvatarJob) for call in calls)
    assert store_threads() == []
    with pytest.raises(WagateError, match="closed"):
        await store.get_instance(instance_id)
    with pytest.raises(WagateError, match="closed"):
        await store.enqueue_avatar_job(instance_id, "late@c.us")
    await store.aclose()  # idempotent
    assert sum(len(ids) for ids in (await job_ids_in_database(database_url)).values()) == 3


async def test_open_store_either_way_leaves_no_threads(database_url: str) -> None:
    async with open_store(database_url) as store:
        await store.get_meta("x")
        assert store_threads()
    assert store_threads() == []
    store = await open_store(database_url)
    await store.set_meta("x", "1")
    await store.aclose()
    assert store_threads() == []


# -- SQLite's writer --------------------------------------------------------------------------


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A migrated SQLite database (for behaviour only SQLite's single writer thread has)."""
    url = f"sqlite:///{tmp_path / 'wagate.sqlite3'}"
    migrate(url)
    return url


async def test_sqlite_writes_run_on_one_thread(sqlite_url: str) -> None:
    async with open_store(sqlite_url) as store:
        writer, _ = store.engines
        seen: set[int] = set()

        def note(conn: Connection) -> None:
            seen.add(threading.get_ident())

        await asyncio.gather(*(writer.run(note) for _ in range(50)))
        (instance_id,) = await create_instances(store, 1)
        spy = BatchSpy(store)
        original: Callable[[Sequence[Any]], Sequence[Any]] = store._jobs._write

        def noting(items: Sequence[Any]) -> Sequence[Any]:
            seen.add(threading.get_ident())
            return original(items)

        store._jobs._write = noting
        await asyncio.gather(*(store.enqueue_avatar_job(instance_id, "x@c.us") for _ in range(50)))
        assert spy.batches
    assert len(seen) == 1


async def test_sqlite_calls_made_while_the_thread_is_busy_share_one_hop(sqlite_url: str) -> None:
    async with open_store(sqlite_url) as store:
        writer, reader = store.engines
        workers = writer._workers
        put = workers.put
        hops: list[object] = []

        def counting_put(job: Callable[[], None]) -> None:
            hops.append(job)
            put(job)

        workers.put = counting_put  # type: ignore[method-assign]
        ran: list[str] = []

        def write(key: str, *, fail: bool = False) -> Callable[[Connection], str]:
            def run(conn: Connection) -> str:
                ran.append(key)
                conn.execute(insert(meta).values(key=key, value="1"))
                if fail:
                    raise ValueError(key)
                return key

            return run

        def read(conn: Connection) -> list[str]:
            ran.append("read")
            return sorted(conn.execute(select(meta.c.key)).scalars())

        async with store_thread_held(writer):
            hops.clear()  # the holding write's own
            calls = [
                asyncio.create_task(call)
                for call in (
                    writer.run(write("a")),
                    writer.run(write("b", fail=True)),
                    reader.run(read),
                    writer.run(write("c")),
                )
            ]
            for _ in range(3):
                await asyncio.sleep(0)  # every call is queued behind the one holding the thread
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        assert len(hops) == 1
        assert ran == ["a", "b", "read", "c"]  # in call order
        assert outcomes[0] == "a"
        assert isinstance(outcomes[1], ValueError)
        assert outcomes[2] == ["a"]  # b rolled back alone, c not yet written
        assert outcomes[3] == "c"
        assert await store.get_meta("a") == "1"
        assert await store.get_meta("b") is None
        assert await store.get_meta("c") == "1"
        assert len(hops) == 4  # an idle thread takes each call up at once: a hop each


async def test_sqlite_write_lock_held_elsewhere_is_a_wagate_error(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Connections opened from here on wait 0.2 s for the write lock, not 5 s.
    monkeypatch.setattr(_connect, "SQLITE_BUSY_TIMEOUT_MS", 200)
    async with open_store(sqlite_url) as store:
        other = await open_store(sqlite_url)
        try:
            other_writer, _ = other.engines
            locked, release = threading.Event(), threading.Event()

            def hold_lock(conn: Connection) -> None:
                conn.execute(insert(meta).values(key="held", value="1"))
                locked.set()
                assert release.wait(10)

            holding = asyncio.create_task(other_writer.run(hold_lock))
            assert await asyncio.to_thread(locked.wait, 10)
            with pytest.raises(WagateError, match="database error"):
                await store.set_meta("blocked", "1")
            release.set()
            await holding
        finally:
            await other.aclose()
        # The writer connection recovers once the lock is free.
        await store.set_meta("blocked", "1")
        assert await store.get_meta("blocked") == "1"
        assert await store.get_meta("held") == "1"


async def test_a_deadlock_victim_transaction_is_run_again(store: SqlStore) -> None:
    writer, _ = store.engines
    calls: list[int] = []

    def deadlocks_once(conn: Connection) -> str:
        calls.append(1)
        if len(calls) == 1:
            raise OperationalError("DELETE ...", {}, pg_errors.DeadlockDetected("deadlock"))
        return "committed"

    assert await writer.run(deadlocks_once) == "committed"
    assert len(calls) == 2

    def always_fails(conn: Connection) -> str:
        raise OperationalError("SELECT ...", {}, pg_errors.InsufficientPrivilege("no"))

    with pytest.raises(WagateError, match="database error"):
        await writer.run(always_fails)
