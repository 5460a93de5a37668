"""Store transactions in worker threads: one thread hop per store operation.

Each store method hands one plain function, its whole transaction, to a worker thread and awaits
the result (`SqlRunner.run`); the event loop never blocks on the database. On SQLite one thread
does all of it, with two connections: the writer's, which opens every transaction with BEGIN
IMMEDIATE, and the reader's, whose lone SELECTs need no transaction and never hold the write lock.
Reader threads would not read in parallel to any gain: every row a SQLite statement steps through
hands the GIL back and forth, so more threads only meant more hand-offs with the event loop and
each other (measured in docs/benchmarks.md, "one SQLite store thread"). On PostgreSQL one thread
pool serves reads and writes with connections from SQLAlchemy's QueuePool.

The threads are fed by a queue (`Workers`) and hand results back with one
`call_soon_threadsafe`. On SQLite the operations a loop starts while the thread is busy travel
to it and back together (`SharedHops`), each still its own transaction. Cancellation: a caller
cancelled before a thread takes its function up has it skipped; once started, the function runs
to its COMMIT or ROLLBACK in the thread regardless, so a connection is never left inside a
transaction. The caller only stops waiting.

`GroupCommit` gathers concurrent calls of one kind of write and commits them in one transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Generic, NamedTuple, TypeVar

from psycopg import errors as pg_errors
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from wagate.core.errors import WagateError
from wagate.stores._connect import POSTGRES_THREADS, create_engines

logger = logging.getLogger(__name__)

_RETRIES = 3
_RETRYABLE = (pg_errors.DeadlockDetected, pg_errors.SerializationFailure)

T = TypeVar("T")
I = TypeVar("I")  # noqa: E741 - an item of a group commit
R = TypeVar("R")

# What a worker thread hands back to the event loop: a future and its result or exception.
_Outcome = tuple["asyncio.Future[Any]", Any, BaseException | None]


def closed_error() -> WagateError:
    return WagateError("the store is closed")


def _settle_now(outcomes: Sequence[_Outcome]) -> None:
    """On the event loop: resolve futures, skipping those whose caller was cancelled."""
    for future, result, error in outcomes:
        if future.done():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)


def _settle(loop: asyncio.AbstractEventLoop, outcomes: Sequence[_Outcome]) -> None:
    """From a worker thread: resolve the futures on their loop, with one wake-up (none if there
    are none)."""
    if not outcomes:
        return
    # RuntimeError: the loop is closed, so nobody waits for these any more.
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(_settle_now, outcomes)


class Workers:
    """Threads fed by one queue; each runs the queued functions one after another.

    `put` refuses work (`WagateError`) once `close` has begun; `close` lets the queued work
    finish, then stops and joins the threads. The threads are daemons, so a store that was
    never closed does not keep the process alive.
    """

    def __init__(self, count: int, name: str) -> None:
        self._queue: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._closed = False
        self._threads = [
            threading.Thread(
                target=self._work, name=name if count == 1 else f"{name}-{n}", daemon=True
            )
            for n in range(count)
        ]
        for thread in self._threads:
            thread.start()

    def put(self, job: Callable[[], None]) -> None:
        """Queue `job`; it must not raise (what it raises is logged and dropped)."""
        with self._lock:
            if self._closed:
                raise closed_error()
            self._queue.put(job)

    def _work(self) -> None:
        while (job := self._queue.get()) is not None:
            try:
                job()
            except BaseException:  # a bug in a job must not take its thread down
                logger.exception("store worker job failed", extra={"action": "store_job"})

    def close(self) -> None:
        """Blocking: finish the queued work, then stop the threads."""
        with self._lock:
            if not self._closed:
                self._closed = True
                for _ in self._threads:
                    self._queue.put(None)
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join()


class SqlRunner:
    """Runs functions of a connection in worker threads, each in a transaction of its own.

    `run(fn)` (on the event loop) and `call(fn)` (in a worker thread) give `fn` a connection in
    a fresh transaction, commit it when `fn` returns and roll it back when it raises; driver and
    SQLAlchemy errors come out as `WagateError` with the original as its cause, other exceptions
    (the store's own) unchanged. On the reader of a PostgreSQL store the connection is in
    autocommit mode: each statement is its own transaction.
    """

    def __init__(
        self,
        engine: Engine,
        workers: Workers,
        *,
        keep_connections: bool,
        hops: SharedHops | None = None,
    ) -> None:
        self.engine = engine
        self.is_postgres = engine.dialect.name == "postgresql"
        self._workers = workers
        self._hops = hops
        # SQLite: each worker thread keeps one connection for its life (no pool checkout and
        # reset per call). PostgreSQL: a pooled connection per call, so a broken one is replaced.
        self._keep_connections = keep_connections
        self._local = threading.local()
        self._kept: list[Connection] = []
        self._kept_lock = threading.Lock()

    async def run(self, fn: Callable[[Connection], T]) -> T:
        """`fn(connection)` in a worker thread, inside one transaction; its result. Raises
        `WagateError` if the store is closed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        call = _Call(self, fn, future)
        if self._hops is not None:
            self._hops.add(loop, call)
        else:
            self._workers.put(lambda: _settle(loop, call.outcomes()))
        return await future

    def submit(self, job: Callable[[], None]) -> None:
        """Queue a plain function on this runner's threads (`WagateError` once closed)."""
        self._workers.put(job)

    def call(self, fn: Callable[[Connection], T]) -> T:
        """`fn(connection)` inside one transaction, here and now: only from a worker thread.

        A transaction PostgreSQL aborted as a deadlock victim or for a serialization conflict is
        run again (it was rolled back whole): deleting an instance while other nodes complete its
        jobs can deadlock on the cascade, and that is nobody's error.
        """
        for attempt in range(_RETRIES + 1):
            try:
                return self._call_once(fn)
            except OperationalError as exc:
                if attempt == _RETRIES or not isinstance(exc.orig, _RETRYABLE):
                    raise WagateError(f"database error ({type(exc).__name__})") from exc
                logger.info("retrying a transaction after %s", type(exc.orig).__name__)
            except SQLAlchemyError as exc:
                raise WagateError(f"database error ({type(exc).__name__})") from exc
        raise AssertionError("unreachable")

    def _call_once(self, fn: Callable[[Connection], T]) -> T:
        if not self._keep_connections:
            with self.engine.begin() as conn:
                return fn(conn)
        conn = self._thread_connection()
        with conn.begin():
            return fn(conn)

    def _thread_connection(self) -> Connection:
        conn: Connection | None = getattr(self._local, "connection", None)
        if conn is not None and not conn.invalidated:
            return conn
        if conn is not None:  # lost (an I/O error): start over on a fresh one
            conn.close()
        conn = self.engine.connect()
        self._local.connection = conn
        with self._kept_lock:
            self._kept.append(conn)
        return conn

    def close_connections(self) -> None:
        """Close the kept connections; only once the threads have stopped."""
        with self._kept_lock:
            kept, self._kept = self._kept, []
        for conn in kept:
            conn.close()


class _Call(NamedTuple):
    """A `SqlRunner.run` call waiting for a worker thread."""

    runner: SqlRunner
    fn: Callable[[Connection], Any]
    future: asyncio.Future[Any]

    def outcomes(self) -> list[_Outcome]:
        """In a worker thread: run the call in its own transaction; its outcome, or none if
        its caller was cancelled before (read across threads, which is safe for a bool; a
        cancellation that comes later only means the result is dropped)."""
        if self.future.cancelled():
            return []
        try:
            return [(self.future, self.runner.call(self.fn), None)]
        except BaseException as exc:  # the caller gets whatever the transaction raised
            return [(self.future, None, exc)]


class SharedHops:
    """One thread hop for the store operations a loop starts while the store thread is busy
    (SQLite).

    A hop to the store thread and back costs far more CPU than a typical SQLite operation (on
    a 2-core VM ~200 µs of process CPU against 7-35 µs for the transaction itself, measured in
    docs/benchmarks.md): two wake-ups, two context switches and GIL hand-offs, each paid again
    when several operations go one by one. A call is queued at once, as a hop of its own; calls
    the same loop makes before the store thread takes that hop up join it. The hop runs them in
    order, each still in its own transaction, and hands their results back with one wake-up. A
    call cancelled before its turn is skipped.
    """

    def __init__(self, workers: Workers) -> None:
        self._workers = workers
        self._lock = threading.Lock()
        # Per loop, the hop queued and not yet taken up by the store thread.
        self._open: dict[asyncio.AbstractEventLoop, list[_Call]] = {}

    def add(self, loop: asyncio.AbstractEventLoop, call: _Call) -> None:
        with self._lock:
            calls = self._open.get(loop)
            if calls is not None:
                calls.append(call)
                return
            calls = self._open[loop] = [call]
        try:
            self._workers.put(lambda: self._run(loop, calls))
        except WagateError:  # closed
            with self._lock:
                if self._open.get(loop) is calls:
                    del self._open[loop]
            _settle_now([(queued.future, None, closed_error()) for queued in calls])

    def _run(self, loop: asyncio.AbstractEventLoop, calls: list[_Call]) -> None:
        """In the store thread: each call in its own transaction, then one hand-back."""
        with self._lock:
            # Taken up: later calls of the loop start a hop of their own.
            if self._open.get(loop) is calls:
                del self._open[loop]
        _settle(loop, [outcome for call in calls for outcome in call.outcomes()])


class Database:
    """The engines, worker threads and runners behind one store."""

    def __init__(self, database_url: str) -> None:
        writer_engine, reader_engine = create_engines(database_url)
        self._engines = [writer_engine]
        if writer_engine.dialect.name == "sqlite":
            self._engines.append(reader_engine)
            # One thread, which keeps both connections (see the module's docstring).
            self._workers = [Workers(1, "wagate-sqlite")]
            hops = SharedHops(self._workers[0])
            self.writer = SqlRunner(
                writer_engine, self._workers[0], keep_connections=True, hops=hops
            )
            self.reader = SqlRunner(
                reader_engine, self._workers[0], keep_connections=True, hops=hops
            )
        else:
            # The reader is an option view of the writer engine: one pool, disposed once.
            self._workers = [Workers(POSTGRES_THREADS, "wagate-db")]
            self.writer = SqlRunner(writer_engine, self._workers[0], keep_connections=False)
            self.reader = SqlRunner(reader_engine, self._workers[0], keep_connections=False)
        self._closing: asyncio.Future[None] | None = None

    async def aclose(self) -> None:
        """Let queued work finish, stop the threads, close the connections. Idempotent; calls
        made afterwards raise `WagateError`."""
        if self._closing is None:
            self._closing = asyncio.get_running_loop().run_in_executor(None, self.close)
        # Shielded: a cancelled aclose still closes, in the background.
        await asyncio.shield(self._closing)

    def close(self) -> None:
        """`aclose` for a blocking caller."""
        for workers in self._workers:
            workers.close()
        self.writer.close_connections()
        self.reader.close_connections()
        for engine in self._engines:
            engine.dispose()


class _Pending(NamedTuple, Generic[I, R]):
    """A call waiting in a `GroupCommit`."""

    item: I
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[R]


class GroupCommit(Generic[I, R]):
    """Writes concurrent calls of one kind together: one transaction, one COMMIT, many callers.

    `submit(item)` queues the item and awaits its outcome. One batch is written at a time, on the
    writer's threads, by `write(items)`, which returns one outcome per item in order: its result
    or the exception its caller gets (an exception raised by `write` itself goes to every caller
    of the batch). A batch is whatever was queued while the previous one was being written, at
    most `max_batch` items, so an idle store writes a lone call at once. Items are written in
    the order they were submitted. A caller cancelled before its batch is taken is left out of
    it; once taken, its item is written anyway.
    """

    def __init__(
        self,
        runner: SqlRunner,
        write: Callable[[Sequence[I]], Sequence[R | BaseException]],
        *,
        max_batch: int = 256,
    ) -> None:
        self._runner = runner
        self._write = write
        self._max_batch = max_batch
        self._lock = threading.Lock()
        self._pending: deque[_Pending[I, R]] = deque()
        self._scheduled = False  # a flush is queued or running

    async def submit(self, item: I) -> R:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        with self._lock:
            self._pending.append(_Pending(item, loop, future))
            start = not self._scheduled
            self._scheduled = True
        if start:
            try:
                self._runner.submit(self._flush)
            except WagateError:  # closed
                self._fail_pending()
        return await future

    def _fail_pending(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, deque()
            self._scheduled = False
        for _, loop, future in pending:
            _settle(loop, [(future, None, closed_error())])

    def _flush(self) -> None:
        """Write batches until the queue is empty; runs in a worker thread."""
        while True:
            with self._lock:
                count = min(len(self._pending), self._max_batch)
                batch = [self._pending.popleft() for _ in range(count)]
            # A caller cancelled before now is left out: its item is not written.
            live = [entry for entry in batch if not entry.future.cancelled()]
            if live:
                self._write_batch(live)
            with self._lock:
                if not self._pending:
                    self._scheduled = False
                    return
            try:
                # Requeue rather than loop, so that other writes queued meanwhile go first.
                self._runner.submit(self._flush)
                return
            except WagateError:  # closing: finish the queue here
                continue

    def _write_batch(self, batch: list[_Pending[I, R]]) -> None:
        outcomes: Sequence[R | BaseException]
        try:
            outcomes = self._write([item for item, _, _ in batch])
            if len(outcomes) != len(batch):
                raise RuntimeError(f"{len(outcomes)} outcomes for a batch of {len(batch)}")
        except BaseException as exc:  # every caller must hear of it, whatever it is
            outcomes = [exc] * len(batch)
        by_loop: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
        for (_, loop, future), outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                by_loop.setdefault(loop, []).append((future, None, outcome))
            else:
                by_loop.setdefault(loop, []).append((future, outcome, None))
        for loop, settled in by_loop.items():
            _settle(loop, settled)
