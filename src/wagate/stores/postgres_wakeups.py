"""`PostgresWakeUps`: the `WakeUps` port across processes and nodes, over LISTEN/NOTIFY.

Each object wakes its own process's waiters at once (an inner `LocalWakeUps`) and sends a NOTIFY
that every other object listening on the same database forwards to its waiters. Wake-ups stay
hints: a NOTIFY that fails is logged and dropped, and a listener that lost its connection wakes
all its waiters once it listens again, so they re-read the store for whatever they missed.

Payloads are `<origin>:n:<instance_id>` (a notification was added), `<origin>:q:<instance_id>`
(one was added for an instance known to poll: long polls wake, push dispatchers need not) and
`<origin>:j` (a job was added); `origin` is random per object, so a listener skips its own
NOTIFYs, whose waiters were woken already. The channel carries a version: two releases sharing
a database during a rolling upgrade each hear only payloads they understand (a release before
`q` ignores it, and its long polls then see such notifications at their poll interval).
The payloads a process queues while one NOTIFY statement is in flight go out in the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections import Counter
from collections.abc import Set
from types import TracebackType
from typing import Final

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow
from sqlalchemy.engine import URL

from wagate.core.errors import WagateError
from wagate.core.failures import RepeatedFailure
from wagate.core.ports import ANY_INSTANCE
from wagate.core.wakeups import LocalWakeUps
from wagate.stores._connect import sqlite_path, sync_url

logger = logging.getLogger(__name__)

CHANNEL: Final = "wagate_wakeups_v1"

_CONNECT_TIMEOUT_S = 5
# A NOTIFY is a sub-millisecond statement; callers (use cases, workers) must not hang on a sick
# database for the sake of a hint.
_NOTIFY_TIMEOUT_S = 2.0
# notifies() cannot tell a quiet channel from a dead peer (a host that vanished sends no RST), so
# the listener checks its connection with a query whenever it heard nothing for this long.
_HEALTH_CHECK_S = 30.0
_RECONNECT_FIRST_S = 0.2
_RECONNECT_MAX_S = 10.0
# While the database is down every NOTIFY fails; one warning per interval is enough.
_WARNING_INTERVAL_S = 10.0


class PostgresWakeUps:
    """Wake-ups shared by every process listening on one PostgreSQL database.

    `database_url` is the sync form (`postgresql://user:pass@host/db`). Open it with
    `async with PostgresWakeUps(url) as wakeups:`, or `await wakeups.start()` and later
    `await wakeups.aclose()`. `start` raises `WagateError` if it cannot connect and listen;
    afterwards nothing raises for the database's sake: the listener reconnects with backoff
    (logging a warning) and a failed NOTIFY is logged and dropped. ValueError for a non-PostgreSQL
    URL. The password is never logged.
    """

    def __init__(self, database_url: str, *, channel: str = CHANNEL) -> None:
        url = sync_url(database_url)
        if sqlite_path(url) is not None:
            raise ValueError("PostgresWakeUps needs a PostgreSQL URL")
        self._conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._where = _describe(url)
        self._notify_failures = RepeatedFailure(
            logger,
            f"sending wake-ups on {self._where} (other nodes poll meanwhile)",
            "wakeups_notify_failed",
            every_s=_WARNING_INTERVAL_S,
            traceback=False,
        )
        self._listen_failures = RepeatedFailure(
            logger,
            f"the wake-up listener on {self._where}",
            "wakeups_disconnected",
            traceback=False,
        )
        self._channel = channel
        self._origin = secrets.token_hex(4)
        self._local = LocalWakeUps()
        # Instances with a long poll in this process: a reconnected listener wakes them all.
        self._waiting: Counter[int] = Counter()
        self._listener: psycopg.AsyncConnection[TupleRow] | None = None
        self._listen_task: asyncio.Task[None] | None = None
        self._sender: psycopg.AsyncConnection[TupleRow] | None = None
        # Payloads waiting for the next NOTIFY statement, in order, each once, and the future
        # their callers await; one statement is in flight at a time (`_sending`).
        self._queued: dict[str, None] = {}
        self._queued_sent: asyncio.Future[None] | None = None
        self._sending: asyncio.Task[None] | None = None
        self._closed = False

    async def __aenter__(self) -> PostgresWakeUps:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Connect and LISTEN, then start the listener task; raises `WagateError` on failure."""
        if self._listen_task is not None:
            return
        try:
            self._listener = await self._listen()
        except (psycopg.Error, OSError) as exc:
            raise WagateError(f"cannot listen for wake-ups on {self._where}: {exc}") from exc
        self._listen_task = asyncio.create_task(
            self._listen_forever(), name=f"wakeups-listener:{self._channel}"
        )
        self._listen_task.add_done_callback(_report_death)

    async def aclose(self) -> None:
        """Stop listening, close both connections and release every local waiter."""
        if self._closed:
            return
        self._closed = True
        if self._listen_task is not None:
            self._listen_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listen_task
        await _close(self._listener)
        self._listener = None
        if self._sending is not None:
            # Its callers are answered by its own cleanup; hints need not outlive the object.
            self._sending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sending
        await _close(self._sender)
        self._sender = None
        await self._local.aclose()

    # -- the WakeUps port --------------------------------------------------------------------

    async def notification_added(self, instance_id: int, *, pushed: bool = True) -> None:
        await self._local.notification_added(instance_id, pushed=pushed)
        await self._notify(f"{self._origin}:{'n' if pushed else 'q'}:{instance_id}")

    async def job_added(self, instance_id: int = ANY_INSTANCE) -> None:
        await self._local.job_added(instance_id)
        await self._notify(f"{self._origin}:j:{instance_id}")

    def notification_mark(self, instance_id: int) -> object:
        return self._local.notification_mark(instance_id)

    def notified_since(self, mark: object) -> bool:
        return self._local.notified_since(mark)

    async def wait_notification(
        self, instance_id: int, timeout_s: float, since: object | None = None
    ) -> None:
        self._waiting[instance_id] += 1
        try:
            await self._local.wait_notification(instance_id, timeout_s, since)
        finally:
            self._waiting[instance_id] -= 1
            if self._waiting[instance_id] <= 0:
                del self._waiting[instance_id]

    def wake_long_polls(self) -> None:
        self._local.wake_long_polls()

    async def wait_job(self, timeout_s: float) -> Set[int]:
        return await self._local.wait_job(timeout_s)

    async def wait_push(self, timeout_s: float) -> Set[int]:
        return await self._local.wait_push(timeout_s)

    # -- sending -----------------------------------------------------------------------------

    async def _notify(self, payload: str) -> None:
        """Send `payload` to the other listeners; returns once it went out or failed (logged).

        Payloads queued while a NOTIFY statement is in flight go out together in the next one:
        under load every acknowledgement wakes the other nodes, and one round trip (and one
        transaction on the database) each, taken in turn, capped a node's acknowledgements at
        the rate of NOTIFY round trips.
        """
        if self._closed:
            return
        self._queued[payload] = None
        if self._queued_sent is None:
            self._queued_sent = asyncio.get_running_loop().create_future()
        sent = self._queued_sent
        if self._sending is None:
            self._sending = asyncio.create_task(self._send_queued(), name="wakeups-notify")
        # Shielded: a caller that gives up must not cancel the statement others wait for.
        await asyncio.shield(sent)

    async def _send_queued(self) -> None:
        batch_sent: asyncio.Future[None] | None = None
        try:
            while self._queued_sent is not None:
                payloads, batch_sent = list(self._queued), self._queued_sent
                self._queued, self._queued_sent = {}, None
                await self._send(payloads)
                batch_sent.set_result(None)
        finally:
            self._sending = None
            # Cancelled (closing): whoever waits is released, sent or not.
            for future in (batch_sent, self._queued_sent):
                if future is not None and not future.done():
                    future.set_result(None)
            self._queued, self._queued_sent = {}, None

    async def _send(self, payloads: list[str]) -> None:
        for attempt in (1, 2):
            reused = self._sender is not None and not self._sender.closed
            try:
                async with asyncio.timeout(_NOTIFY_TIMEOUT_S):
                    if self._sender is None or self._sender.closed:
                        self._sender = await self._connect()
                    # One statement, one transaction: the listeners get them together.
                    await self._sender.execute(
                        "SELECT pg_notify(%s, payload) FROM unnest(%s::text[]) AS payload",
                        (self._channel, payloads),
                    )
                self._notify_failures.succeeded()
                return
            except (psycopg.Error, OSError, TimeoutError) as exc:
                # A failed or timed-out statement leaves the connection in an unknown state.
                await _close(self._sender)
                self._sender = None
                # An idle connection may have been closed under us (server restart, idle
                # timeout, a proxy): that costs one fresh connection, not the wake-up.
                if attempt == 1 and reused and isinstance(exc, psycopg.OperationalError):
                    continue
                self._notify_failures.failed()
                return

    # -- listening ---------------------------------------------------------------------------

    async def _connect(self) -> psycopg.AsyncConnection[TupleRow]:
        return await psycopg.AsyncConnection.connect(
            self._conninfo, autocommit=True, connect_timeout=_CONNECT_TIMEOUT_S
        )

    async def _listen(self) -> psycopg.AsyncConnection[TupleRow]:
        connection = await self._connect()
        try:
            await connection.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
        except BaseException:
            await _close(connection)
            raise
        return connection

    async def _listen_forever(self) -> None:
        delay_s = _RECONNECT_FIRST_S
        while True:
            try:
                if self._listener is None:
                    self._listener = await self._listen()
                    self._listen_failures.succeeded()
                    delay_s = _RECONNECT_FIRST_S
                    # Whatever was sent while we were deaf is lost: let every waiter re-read.
                    await self._wake_everyone()
                await self._relay(self._listener)
            except (psycopg.Error, OSError, TimeoutError):
                # Once, then once a minute while the database stays away, then its return.
                self._listen_failures.failed()
                await _close(self._listener)
                self._listener = None
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, _RECONNECT_MAX_S)

    async def _relay(self, connection: psycopg.AsyncConnection[TupleRow]) -> None:
        """Forward NOTIFYs until `_HEALTH_CHECK_S` passes in silence, then check the connection."""
        async with contextlib.aclosing(connection.notifies(timeout=_HEALTH_CHECK_S)) as notifies:
            async for notify in notifies:
                await self._dispatch(notify.payload)
        async with asyncio.timeout(_CONNECT_TIMEOUT_S):
            await connection.execute("SELECT 1")

    async def _dispatch(self, payload: str) -> None:
        origin, _, event = payload.partition(":")
        if origin == self._origin:
            return
        kind, _, argument = event.partition(":")
        if kind == "j":
            # From a node of an older release the payload names no instance: any.
            await self._local.job_added(int(argument) if argument.isdigit() else ANY_INSTANCE)
        elif kind in ("n", "q") and argument.isdigit():
            await self._local.notification_added(int(argument), pushed=kind == "n")
        else:
            logger.debug("ignoring wake-up payload %r", payload)

    async def _wake_everyone(self) -> None:
        await self._local.job_added()
        # No long poll waits on it; the push dispatcher takes it for any lane.
        await self._local.notification_added(ANY_INSTANCE)
        for instance_id in list(self._waiting):
            await self._local.notification_added(instance_id)


def _describe(url: URL) -> str:
    """host:port/database, for logs: never the user's password."""
    return f"{url.host or 'localhost'}:{url.port or 5432}/{url.database or ''}"


async def _close(connection: psycopg.AsyncConnection[TupleRow] | None) -> None:
    if connection is not None and not connection.closed:
        with contextlib.suppress(psycopg.Error, OSError):
            await connection.close()


def _report_death(task: asyncio.Task[None]) -> None:
    """The listener only ends by cancellation; anything else is a bug to shout about."""
    if not task.cancelled() and task.exception() is not None:
        logger.error(
            "wake-up listener died; cross-node wake-ups stop (waiters still poll)",
            exc_info=task.exception(),
            extra={"action": "wakeups_listener_died"},
        )
