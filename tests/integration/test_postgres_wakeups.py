"""Wake-ups cross processes through PostgreSQL LISTEN/NOTIFY: two objects play two nodes."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from wagate.core.errors import WagateError
from wagate.core.ports import ANY_INSTANCE
from wagate.stores.postgres_wakeups import PostgresWakeUps

pytestmark = pytest.mark.anyio

# A wake-up must end a wait this much sooner than its timeout: that is the point of it.
PROMPT_S = 2.0
LONG_TIMEOUT_S = 10.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def url(postgres_database: Callable[[str | None], str]) -> str:
    # A database of its own: NOTIFY is per database, so other test runs cannot interfere.
    return postgres_database(None)


@pytest.fixture
async def node_a(url: str) -> AsyncIterator[PostgresWakeUps]:
    async with PostgresWakeUps(url) as wakeups:
        yield wakeups


@pytest.fixture
async def node_b(url: str) -> AsyncIterator[PostgresWakeUps]:
    async with PostgresWakeUps(url) as wakeups:
        yield wakeups


async def started(wait: Awaitable[object]) -> asyncio.Task[float]:
    """Run `wait` in a task that returns how long it took; returns once it is waiting."""

    async def timed() -> float:
        began = time.monotonic()
        await wait
        return time.monotonic() - began

    task = asyncio.create_task(timed())
    await asyncio.sleep(0)  # the waiter registers before its first suspension
    return task


@pytest.mark.postgres
async def test_notification_on_one_node_ends_a_long_poll_on_another(
    node_a: PostgresWakeUps, node_b: PostgresWakeUps
) -> None:
    waiter = await started(node_b.wait_notification(5, timeout_s=LONG_TIMEOUT_S))
    await node_a.notification_added(5)
    assert await waiter < PROMPT_S


@pytest.mark.postgres
async def test_job_on_one_node_wakes_the_worker_of_another(
    node_a: PostgresWakeUps, node_b: PostgresWakeUps
) -> None:
    waiter = await started(node_b.wait_job(timeout_s=LONG_TIMEOUT_S))
    await node_a.job_added(7)
    assert await waiter < PROMPT_S
    # The instance crosses with the wake-up; one named by no instance stands for any.
    await node_a.job_added(9)
    assert await node_b.wait_job(timeout_s=LONG_TIMEOUT_S) == {9}
    await node_a.job_added()
    assert await node_b.wait_job(timeout_s=LONG_TIMEOUT_S) == {ANY_INSTANCE}


@pytest.mark.postgres
async def test_concurrent_wake_ups_share_notify_statements(
    node_a: PostgresWakeUps, node_b: PostgresWakeUps, monkeypatch: pytest.MonkeyPatch
) -> None:
    statements: list[list[str]] = []
    send = node_a._send

    async def counted(payloads: list[str]) -> None:
        statements.append(payloads)
        await send(payloads)

    monkeypatch.setattr(node_a, "_send", counted)
    heard: set[int] = set()
    wanted = set(range(1, 201))

    async def listen() -> None:
        while not wanted <= heard:
            heard.update(await node_b.wait_job(timeout_s=LONG_TIMEOUT_S))

    listening = asyncio.create_task(listen())
    await asyncio.gather(*(node_a.job_added(instance_id) for instance_id in sorted(wanted)))
    # One in flight, the rest queued behind it: two statements, not one per wake-up.
    assert len(statements) <= 2
    assert sorted(p for batch in statements for p in batch) == sorted(
        f"{node_a._origin}:j:{instance_id}" for instance_id in wanted
    )
    await asyncio.wait_for(listening, PROMPT_S)
    assert wanted <= heard


@pytest.mark.postgres
async def test_notification_on_one_node_wakes_push_on_another(
    node_a: PostgresWakeUps, node_b: PostgresWakeUps
) -> None:
    waiter = await started(node_b.wait_push(timeout_s=LONG_TIMEOUT_S))
    await node_a.notification_added(5)
    assert await waiter < PROMPT_S


@pytest.mark.postgres
async def test_a_polling_instances_notification_wakes_long_polls_not_push_elsewhere(
    node_a: PostgresWakeUps, node_b: PostgresWakeUps
) -> None:
    push = await started(node_b.wait_push(timeout_s=1.0))
    poll = await started(node_b.wait_notification(5, timeout_s=LONG_TIMEOUT_S))
    await node_a.notification_added(5, pushed=False)
    assert await poll < PROMPT_S
    assert await push >= 0.9  # ended by its own timeout only


@pytest.mark.postgres
async def test_a_notification_wakes_only_its_instance(
    node_a: PostgresWakeUps, node_b: PostgresWakeUps
) -> None:
    other = await started(node_b.wait_notification(6, timeout_s=1.0))
    same = await started(node_b.wait_notification(5, timeout_s=LONG_TIMEOUT_S))
    await node_a.notification_added(5)
    assert await same < PROMPT_S
    assert await other >= 0.9  # ended by its own timeout only


@pytest.mark.postgres
async def test_a_mark_catches_a_notification_from_another_node_before_the_wait(
    node_a: PostgresWakeUps, node_b: PostgresWakeUps
) -> None:
    mark = node_b.notification_mark(5)
    await node_a.notification_added(5)
    # The NOTIFY reaches node B before its wait begins (the mark is the local event it sets).
    assert isinstance(mark, asyncio.Event)
    await asyncio.wait_for(mark.wait(), PROMPT_S)
    assert await (await started(node_b.wait_notification(5, LONG_TIMEOUT_S, mark))) < PROMPT_S


@pytest.mark.postgres
async def test_local_waiters_wake_at_once(node_a: PostgresWakeUps) -> None:
    waiter = await started(node_a.wait_notification(5, timeout_s=LONG_TIMEOUT_S))
    await node_a.notification_added(5)
    assert await waiter < PROMPT_S


@pytest.mark.postgres
async def test_waking_the_long_polls_wakes_this_nodes_only(
    node_a: PostgresWakeUps, node_b: PostgresWakeUps
) -> None:
    """A node shutting down answers its own polls; another node's polls go on waiting."""
    here = [await started(node_a.wait_notification(i, timeout_s=LONG_TIMEOUT_S)) for i in (5, 6)]
    elsewhere = await started(node_b.wait_notification(5, timeout_s=0.5))
    node_a.wake_long_polls()
    assert max([await waiter for waiter in here]) < PROMPT_S
    assert await elsewhere >= 0.5  # its own timeout ended it, not a wake-up
    # A wait that begins afterwards waits again.
    assert await (await started(node_a.wait_notification(5, timeout_s=0.2))) >= 0.2


@pytest.mark.postgres
async def test_aclose_releases_waiters_and_is_idempotent(url: str) -> None:
    wakeups = PostgresWakeUps(url)
    await wakeups.start()
    waiter = await started(wakeups.wait_notification(5, timeout_s=LONG_TIMEOUT_S))
    await wakeups.aclose()
    assert await waiter < PROMPT_S
    await wakeups.aclose()
    await wakeups.notification_added(5)  # after close: a local no-op, no NOTIFY, no error


def backend_pid(connection: psycopg.AsyncConnection[object] | None) -> int:
    assert connection is not None
    return connection.info.backend_pid


async def terminate(admin_url: str, pid: int) -> None:
    async with await psycopg.AsyncConnection.connect(admin_url, autocommit=True) as admin:
        await admin.execute("SELECT pg_terminate_backend(%s)", (pid,))


@pytest.mark.postgres
async def test_the_listener_survives_a_killed_connection(
    url: str,
    node_a: PostgresWakeUps,
    node_b: PostgresWakeUps,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="wagate.stores.postgres_wakeups")
    killed = backend_pid(node_b._listener)
    # A long poll that starts while the listener is deaf...
    deaf = await started(node_b.wait_notification(7, timeout_s=LONG_TIMEOUT_S))
    await terminate(url, killed)
    # ...is woken once it listens again, since a NOTIFY for it might have been missed.
    assert await deaf < 5.0
    assert backend_pid(node_b._listener) != killed
    waiter = await started(node_b.wait_notification(5, timeout_s=LONG_TIMEOUT_S))
    await node_a.notification_added(5)
    assert await waiter < PROMPT_S
    lost = [r for r in caplog.records if r.levelno == logging.WARNING]
    # The loss and the return, one line each, without tracebacks.
    assert [getattr(r, "action", None) for r in lost] == ["wakeups_disconnected"] * 2
    assert " failed: " in lost[0].getMessage() and lost[0].exc_info is None
    assert "works again after 1 failures in " in lost[1].getMessage()


@pytest.mark.postgres
async def test_a_killed_sender_connection_costs_no_wake_up(
    url: str, node_a: PostgresWakeUps, node_b: PostgresWakeUps
) -> None:
    await node_a.job_added()  # opens the sender connection
    await terminate(url, backend_pid(node_a._sender))
    waiter = await started(node_b.wait_notification(5, timeout_s=LONG_TIMEOUT_S))
    await node_a.notification_added(5)
    assert await waiter < PROMPT_S


@pytest.mark.postgres
async def test_start_fails_loudly_without_the_password_in_the_message(url: str) -> None:
    wrong = make_url(url).set(port=1, password="hunter2-secret")
    wakeups = PostgresWakeUps(wrong.render_as_string(hide_password=False))
    with pytest.raises(WagateError) as caught:
        await wakeups.start()
    assert "hunter2-secret" not in str(caught.value)
    await wakeups.aclose()


async def test_a_notify_that_fails_is_logged_and_swallowed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Never started and the server does not exist: waking still works locally.
    wakeups = PostgresWakeUps("postgresql://wagate:hunter2-secret@127.0.0.1:1/none")
    waiter = await started(wakeups.wait_job(timeout_s=LONG_TIMEOUT_S))
    await wakeups.job_added()
    await wakeups.job_added()  # a second failure within the interval is not logged again
    assert await waiter < PROMPT_S
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "hunter2-secret" not in caplog.text
    await wakeups.aclose()


def test_sqlite_urls_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="PostgreSQL"):
        PostgresWakeUps(f"sqlite:///{tmp_path / 'wagate.sqlite3'}")
