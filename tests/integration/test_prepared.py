"""`Prepared`: Core statements run on the bare SQLite driver give what `Connection.execute`
gives (values converted by the column types, expanding IN, row counts), on SQLite and
PostgreSQL; misuse and driver errors are reported, not silently run."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Connection, bindparam, delete, insert, select
from sqlalchemy.exc import IntegrityError

from tests.integration.test_store import make_instance
from wagate.core.errors import WagateError
from wagate.stores import SqlStore, migrate, open_store
from wagate.stores._prepared import Prepared
from wagate.stores.schema import UtcDateTime, avatar_jobs

pytestmark = pytest.mark.anyio

INSTANCE = 1101000001
CREATED = datetime(2026, 11, 30, 10, 0, 0, 5, tzinfo=UTC)

_JOBS_OF = (
    select(avatar_jobs.c.id, avatar_jobs.c.chat_id, avatar_jobs.c.created_at)
    .where(
        avatar_jobs.c.id.in_(bindparam("ids", expanding=True)),
        avatar_jobs.c.created_at >= bindparam("since", type_=UtcDateTime),
    )
    .order_by(avatar_jobs.c.id)
)
_DELETE_JOBS = delete(avatar_jobs).where(avatar_jobs.c.id.in_(bindparam("ids", expanding=True)))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def add_jobs(store: SqlStore, count: int) -> list[int]:
    await store.create_instance(make_instance(INSTANCE))
    rows = [
        {"instance_id": INSTANCE, "chat_id": f"7900000000{n}@c.us", "created_at": CREATED}
        for n in range(count)
    ]
    writer, _ = store.engines

    def write(conn: Connection) -> list[int]:
        conn.execute(insert(avatar_jobs), rows)
        return list(conn.execute(select(avatar_jobs.c.id).order_by(avatar_jobs.c.id)).scalars())

    return await writer.run(write)


async def test_rows_are_what_execute_returns(store: SqlStore) -> None:
    ids = await add_jobs(store, 4)
    params = {"ids": [ids[3], ids[0], ids[2]], "since": CREATED}
    _, reader = store.engines
    prepared = await reader.run(lambda conn: Prepared(_JOBS_OF).rows(conn, params))
    executed = await reader.run(lambda conn: [tuple(row) for row in conn.execute(_JOBS_OF, params)])
    assert prepared == executed
    assert [row[0] for row in prepared] == [ids[0], ids[2], ids[3]]
    assert {row[2] for row in prepared} == {CREATED}  # aware UTC, microseconds kept
    later = {"ids": ids, "since": datetime(2026, 11, 30, 10, 0, 1, tzinfo=UTC)}
    assert await reader.run(lambda conn: Prepared(_JOBS_OF).rows(conn, later)) == []


async def test_mappings_are_rows_by_column_key(store: SqlStore) -> None:
    ids = await add_jobs(store, 2)
    params = {"ids": ids, "since": CREATED}
    _, reader = store.engines
    prepared = await reader.run(lambda conn: Prepared(_JOBS_OF).mappings(conn, params))
    executed = await reader.run(
        lambda conn: [dict(row) for row in conn.execute(_JOBS_OF, params).mappings()]
    )
    assert [dict(row) for row in prepared] == executed
    assert [row["chat_id"] for row in prepared] == ["79000000000@c.us", "79000000001@c.us"]


async def test_rowcount_counts_what_was_deleted(store: SqlStore) -> None:
    ids = await add_jobs(store, 3)
    writer, _ = store.engines
    statement = Prepared(_DELETE_JOBS)
    assert await writer.run(lambda conn: statement.rowcount(conn, {"ids": [ids[0], -1]})) == 1
    assert await writer.run(lambda conn: statement.rowcount(conn, {"ids": ids})) == 2
    assert await store.count_avatar_jobs() == 0


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SqlStore]:
    url = f"sqlite:///{tmp_path / 'wagate.sqlite3'}"
    migrate(url)
    async with open_store(url) as store:
        yield store


async def test_misuse_is_refused_before_the_driver_sees_it(sqlite_store: SqlStore) -> None:
    ids = await add_jobs(sqlite_store, 1)
    _, reader = sqlite_store.engines
    statement = Prepared(_JOBS_OF)
    with pytest.raises(KeyError, match="since"):
        await reader.run(lambda conn: statement.rows(conn, {"ids": ids}))
    with pytest.raises(ValueError, match="ids"):
        await reader.run(lambda conn: statement.rows(conn, {"ids": [], "since": CREATED}))


async def test_a_parameter_rendered_at_execution_is_refused(sqlite_store: SqlStore) -> None:
    _, reader = sqlite_store.engines
    rendered = Prepared(
        select(avatar_jobs.c.id).where(avatar_jobs.c.id == bindparam("id", literal_execute=True))
    )
    with pytest.raises(ValueError, match="rendered at execution"):
        await reader.run(lambda conn: rendered.rows(conn, {"id": 1}))


async def test_a_driver_error_is_handled_as_sqlalchemys(sqlite_store: SqlStore) -> None:
    """The runner turns SQLAlchemy's errors (not the driver's) into `WagateError`."""
    writer, _ = sqlite_store.engines
    orphan = Prepared(
        insert(avatar_jobs).values(
            instance_id=bindparam("instance"), chat_id="x@c.us", created_at=CREATED
        )
    )
    with pytest.raises(WagateError) as raised:  # no such instance: the foreign key holds
        await writer.run(lambda conn: orphan.rowcount(conn, {"instance": 4242424}))
    assert isinstance(raised.value.__cause__, IntegrityError)
    assert "4242424" not in str(raised.value.__cause__)  # parameters stay out of messages
    assert await sqlite_store.count_avatar_jobs() == 0
