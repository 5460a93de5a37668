"""The multi-statement queue operations of `SqlStore`, each run inside the caller's transaction."""

from __future__ import annotations

import functools
import itertools
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import (
    JSON,
    BigInteger,
    ColumnElement,
    Connection,
    Dialect,
    Select,
    Table,
    Text,
    any_,
    bindparam,
    cast,
    delete,
    exists,
    func,
    insert,
    literal_column,
    select,
    update,
)
from sqlalchemy.sql.dml import Insert
from sqlalchemy.types import TypeEngine

from wagate.core.model import MAX_ID, AvatarJob, Notification, NotificationStatus
from wagate.stores._prepared import Prepared, convert_distinct, execute_on_sqlite
from wagate.stores.schema import UtcDateTime, avatar_jobs, instances, notifications
from wagate.wire.json_text import dumps_text

QUEUED = NotificationStatus.QUEUED.value
DEAD = NotificationStatus.DEAD.value


def _insert_ordered(
    table: Table, columns: Sequence[tuple[str, TypeEngine[Any]]], *scalars: str
) -> Insert:
    """PostgreSQL: INSERT of rows bound as one JSON array of arrays ("rows", `_json_rows`),
    each holding the values of `columns` (name, type) in that order, and the `scalars` columns
    the same for every row (bound under their names); ids assigned in row order and returned.

    One short statement text and one text parameter whatever the row count. SQLAlchemy's
    multi-row VALUES (its `sort_by_parameter_order`) grew with the batch past psycopg's 4 KiB
    limit for caching a statement's conversion, so every parameter of every batch was parsed
    again, and arrays (`unnest`) of text are escaped element by element in Python: either way
    tens of microseconds of the node's CPU per row, against ~2 for the JSON text
    (docs/benchmarks.md). As SQLAlchemy's form does, this relies on PostgreSQL drawing the
    ids of an INSERT ... SELECT ... ORDER BY in that order."""
    batch = (
        func.json_array_elements(cast(bindparam("rows", type_=Text), JSON))
        .table_valued("value", with_ordinality="position")
        .render_derived()
    )
    field = batch.c.value.op("->>")
    rows = select(
        *(cast(field(literal_column(str(i))), kind) for i, (_, kind) in enumerate(columns)),
        *(bindparam(name, type_=table.c[name].type) for name in scalars),
    ).order_by(batch.c.position)
    [key] = table.primary_key.columns
    names = [name for name, _ in columns]
    return insert(table).from_select([*names, *scalars], rows).returning(key)


def _json_rows(rows: Iterable[Sequence[Any]]) -> str:
    """The "rows" parameter of an `_insert_ordered` statement."""
    return orjson.dumps(list(rows)).decode()


# Statements of the frequent calls, built once (see sql.py).
_INSERT_JOBS_ORDERED = _insert_ordered(
    avatar_jobs, [("instance_id", BigInteger()), ("chat_id", Text())], "created_at"
)
_DELETE_JOBS = (
    delete(avatar_jobs)
    .where(avatar_jobs.c.id.in_(bindparam("job_ids", expanding=True)))
    .returning(avatar_jobs.c.id)
)
_ADD_NOTIFICATIONS_ORDERED = _insert_ordered(
    notifications,
    [("instance_id", BigInteger()), ("body", Text()), ("webhook_id", Text())],
    "status",
    "created_at",
    "attempts",
    "last_error",
)
# SQLite: which of the given jobs exist, as one text value ("1,2,5"), then their deletion.
_EXISTING_JOBS = Prepared(
    select(func.group_concat(avatar_jobs.c.id)).where(
        avatar_jobs.c.id.in_(bindparam("job_ids", expanding=True))
    )
)
_DELETE_JOBS_QUIETLY = Prepared(
    delete(avatar_jobs).where(avatar_jobs.c.id.in_(bindparam("job_ids", expanding=True)))
)


def now_utc() -> datetime:
    return datetime.now(UTC)


# Why SQLite gets its own statements below: its driver gives up Python's GIL around every step
# of a statement (one step per row returned) and must win it back from the event loop's thread,
# which under load keeps it for up to the interpreter's switch interval. A RETURNING of 64 rows
# could then take tens of milliseconds on the one writer thread that also commits every
# acknowledgement. One multi-row INSERT without RETURNING is a single step, and SQLite gives
# the rows of one INSERT consecutive rowids (AUTOINCREMENT, inside the writer's exclusive
# transaction), so the ids are the last one and those just before it.


# The SQL is written here rather than built as a Core statement: SQLAlchemy compiles a
# multi-row VALUES anew for every row count, which for a large batch costs more than the write.
# It runs on the bare driver: SQLAlchemy's execution path and a dict per row cost about as much
# as SQLite's own work for a batch of acknowledgements.
def _insert_sqlite(
    conn: Connection, table: Table, columns: tuple[str, ...], rows: Sequence[Sequence[Any]]
) -> list[int]:
    """Insert `rows` (values in `columns` order) in one statement; their ids, in order."""
    processors = _bind_processors(conn.dialect, table, columns)
    if any(processors):
        # Each distinct value converted once: a batch's rows mostly share their timestamps, and
        # converting a datetime to SQLite's text costs more than the rest of its row.
        by_column = [
            [row[position] for row in rows]
            if process is None
            else convert_distinct([row[position] for row in rows], process)
            for position, process in enumerate(processors)
        ]
        rows = list(zip(*by_column, strict=True))
    params = list(itertools.chain.from_iterable(rows))
    last = execute_on_sqlite(conn, _insert_sql(table.name, columns, len(rows)), params).lastrowid
    assert last is not None
    return list(range(last - len(rows) + 1, last + 1))


@functools.lru_cache(maxsize=1024)
def _insert_sql(table_name: str, columns: tuple[str, ...], count: int) -> str:
    values = "(" + ", ".join("?" * len(columns)) + ")"
    # Names from wagate's own table metadata; every value is a bound parameter.
    return f"INSERT INTO {table_name} ({', '.join(columns)}) VALUES " + ", ".join(  # noqa: S608
        [values] * count
    )


@functools.cache
def _bind_processors(
    dialect: Dialect, table: Table, columns: tuple[str, ...]
) -> list[Callable[[Any], Any] | None]:
    """The columns' conversions to driver values (a UTC datetime to SQLite's text), made once."""
    return [table.c[name].type.bind_processor(dialect) for name in columns]


def _delete_existing_jobs(conn: Connection, job_ids: list[int], *, postgres: bool) -> set[int]:
    """Delete the jobs; the ids of those that were there."""
    if postgres:
        return set(conn.execute(_DELETE_JOBS, {"job_ids": job_ids}).scalars())
    params = {"job_ids": job_ids}
    [(found,)] = _EXISTING_JOBS.rows(conn, params)
    if not found:
        return set()
    _DELETE_JOBS_QUIETLY.rowcount(conn, params)
    return {int(text) for text in str(found).split(",")}


def insert_jobs(
    conn: Connection,
    requests: Sequence[tuple[int, str]],
    created_at: datetime,
    *,
    postgres: bool,
) -> list[AvatarJob]:
    """Insert jobs given as (instance_id, chat_id), all created at `created_at`, in one
    statement, ids growing in list order; returns them in list order. IntegrityError if an
    instance is gone.

    On PostgreSQL one INSERT … SELECT … FROM json_array_elements(rows) ORDER BY assigns ids
    in list order (`_insert_ordered`). SQLite gets one multi-row INSERT without RETURNING
    (`_insert_sqlite`).
    """
    if not requests:
        return []
    if postgres:
        params = {"rows": _json_rows(requests), "created_at": created_at}
        ids = sorted(conn.execute(_INSERT_JOBS_ORDERED, params).scalars())
    else:
        ids = _insert_sqlite(
            conn,
            avatar_jobs,
            _JOB_COLUMNS,
            [(instance_id, chat_id, created_at) for instance_id, chat_id in requests],
        )
    return [
        AvatarJob(job_id, instance_id, chat_id, created_at)
        for job_id, (instance_id, chat_id) in zip(ids, requests, strict=True)
    ]


_JOB_COLUMNS = ("instance_id", "chat_id", "created_at")


# claim_jobs: `live`, `queued`, `head` and `batch` are views of avatar_jobs in one statement.
_live = avatar_jobs.alias("live")
_queued = avatar_jobs.alias("queued")
_head = avatar_jobs.alias("head")
_batch = avatar_jobs.alias("batch")
_chosen = instances.alias("chosen")
_NOW = bindparam("now", type_=UtcDateTime)
_oldest_job = (
    select(func.min(_queued.c.id)).where(_queued.c.instance_id == instances.c.id).scalar_subquery()
)
# The instances that have jobs, one index seek each (a loose index scan): the claim's cost then
# follows the instances with work, not every instance there is (with 10,000 instances a claim
# took ~2 ms on either database to ask each of them whether it had a job).
_step = avatar_jobs.alias("step")
_seed = select(func.min(avatar_jobs.c.instance_id).label("instance_id")).cte(
    "job_instances", recursive=True
)
_job_instances = select(
    _seed.union_all(
        select(
            select(func.min(_step.c.instance_id))
            .where(_step.c.instance_id > _seed.c.instance_id)
            .scalar_subquery()
        ).where(_seed.c.instance_id.is_not(None))
    ).c.instance_id
)


# The instances of the `window` oldest jobs (a walk of the primary key). Every instance whose
# oldest job is not among them ranks after all of them, so when these include `limit`
# claimable instances they are exactly the `limit` oldest claimable queues, found without the
# walk over every instance with jobs (with 20,000 instances holding one job each, that walk
# took ~38 ms of SQLite per claim; the window, 64 jobs + 4 per instance asked for, ~0.1 ms).
# A bigger window finds enough more often but costs every claim more.
CLAIM_WINDOW = 64
CLAIM_WINDOW_PER_INSTANCE = 4
_window = avatar_jobs.alias("early")
_window_instances = select(
    select(_window.c.instance_id)
    .order_by(_window.c.id)
    .limit(bindparam("window"))
    .subquery("oldest_jobs")
    .c.instance_id
)


def _claimable_instances(has_jobs: ColumnElement[bool]) -> Select[tuple[int]]:
    return (
        select(instances.c.id)
        .where(
            has_jobs,
            ~exists().where(_live.c.instance_id == instances.c.id, _live.c.claimed_until > _NOW),
        )
        .order_by(_oldest_job)
        .limit(bindparam("limit"))
    )


# NO KEY UPDATE: does not block inserts whose foreign keys point at the instance. PostgreSQL
# plans `IN (the walk)` as a scan of every instance (it guesses the walk's size), but an array
# of them as index lookups.
_LOCK_CLAIMABLE_INSTANCES = Prepared(
    _claimable_instances(
        instances.c.id == any_(func.array(_job_instances.scalar_subquery()))
    ).with_for_update(skip_locked=True, key_share=True)
)
_FREE_CLAIMABLE_INSTANCES = Prepared(_claimable_instances(instances.c.id.in_(_job_instances)))
_LOCK_WINDOW_INSTANCES = Prepared(
    _claimable_instances(
        instances.c.id == any_(func.array(_window_instances.scalar_subquery()))
    ).with_for_update(skip_locked=True, key_share=True)
)
_FREE_WINDOW_INSTANCES = Prepared(_claimable_instances(instances.c.id.in_(_window_instances)))
# The id of a chosen instance's `per_instance`-th oldest job (NULL when it has fewer): the last
# one of its batch. One walk of the (instance_id, id) index, however long the queue is.
_batch_end = (
    select(_head.c.id)
    .where(_head.c.instance_id == _chosen.c.id)
    .order_by(_head.c.id)
    .limit(1)
    .offset(bindparam("end_offset"))
    .scalar_subquery()
)
_CLAIM_OLDEST_JOBS = Prepared(
    update(avatar_jobs)
    .where(
        avatar_jobs.c.id.in_(
            select(_batch.c.id)
            .select_from(_chosen.join(_batch, _batch.c.instance_id == _chosen.c.id))
            .where(
                _chosen.c.id.in_(bindparam("instance_ids", expanding=True)),
                # Checked once per instance (not per job), in this statement's snapshot.
                ~exists().where(_live.c.instance_id == _chosen.c.id, _live.c.claimed_until > _NOW),
                _batch.c.id <= func.coalesce(_batch_end, MAX_ID),
            )
        )
    )
    .values(
        claimed_until=bindparam("until", type_=UtcDateTime),
        attempts=avatar_jobs.c.attempts + 1,
    )
    # In `AvatarJob`'s field order: each row becomes one as it is.
    .returning(
        avatar_jobs.c.id,
        avatar_jobs.c.instance_id,
        avatar_jobs.c.chat_id,
        avatar_jobs.c.created_at,
        avatar_jobs.c.attempts,
    )
)


def claim_jobs(
    conn: Connection,
    limit: int,
    per_instance: int,
    lease: timedelta,
    *,
    lock_rows: bool,
    window: int | None = None,
) -> list[AvatarJob]:
    """Claim the oldest `per_instance` jobs (or all, if fewer) of up to `limit` instances with no
    live claim, oldest queue first; all get `claimed_until = now + lease` and count one more
    attempt. Returned by id.

    With `lock_rows` (PostgreSQL), the instances are locked first with SKIP LOCKED, so
    concurrent claimers take different instances; the jobs are then chosen by a second statement
    whose fresh READ COMMITTED snapshot sees every claim committed before the lock was granted
    (and skips an instance that has one). Without it, the caller's BEGIN IMMEDIATE transaction
    already excludes other writers. Either way no two claimers ever hold jobs of one instance
    at the same time.

    The candidates are looked for among the instances of the `window` oldest jobs first (by
    default `CLAIM_WINDOW + CLAIM_WINDOW_PER_INSTANCE * limit`); only if those hold fewer than
    `limit` claimable ones (few instances have jobs, or the oldest jobs belong to instances
    being worked on) are all instances with jobs walked."""
    if window is None:
        window = CLAIM_WINDOW + CLAIM_WINDOW_PER_INSTANCE * limit
    now = now_utc()
    if lock_rows:
        in_window, everywhere = _LOCK_WINDOW_INSTANCES, _LOCK_CLAIMABLE_INSTANCES
    else:
        in_window, everywhere = _FREE_WINDOW_INSTANCES, _FREE_CLAIMABLE_INSTANCES
    params = {"now": now, "limit": limit, "window": window}
    instance_ids = [row[0] for row in in_window.rows(conn, params)]
    if len(instance_ids) < limit:
        instance_ids = [row[0] for row in everywhere.rows(conn, {"now": now, "limit": limit})]
    if not instance_ids:
        return []
    params = {
        "now": now,
        "instance_ids": instance_ids,
        "end_offset": per_instance - 1,
        "until": now + lease,
    }
    rows = sorted(_CLAIM_OLDEST_JOBS.rows(conn, params))
    return list(map(AvatarJob._make, rows))


# The claim's attempt count identifies it: a later claim of the job counted one more.
_RELEASE_JOB = (
    update(avatar_jobs)
    .where(
        avatar_jobs.c.id == bindparam("job_id"),
        avatar_jobs.c.attempts == bindparam("claim_attempts"),
    )
    .values(claimed_until=None)
)


def release_jobs(conn: Connection, jobs: Sequence[AvatarJob]) -> None:
    """Drop the claim that returned `jobs`; jobs completed or claimed again since are left."""
    if jobs:
        conn.execute(
            _RELEASE_JOB, [{"job_id": job.id, "claim_attempts": job.attempts} for job in jobs]
        )


def complete_jobs(
    conn: Connection,
    completions: Sequence[tuple[AvatarJob, Mapping[str, Any]]],
    *,
    postgres: bool,
) -> list[Notification | None]:
    """Delete the jobs and queue a notification for each one that was still there, under a
    fresh webhook id, receipt ids growing in list order. Per completion: its notification, or
    None if the job was gone (another worker took it over and completed it first, or its
    instance was deleted). A fixed number of statements however many jobs (two on PostgreSQL,
    three on SQLite: see `_delete_existing_jobs`)."""
    outcomes: list[Notification | None] = [None] * len(completions)
    if not completions:
        return outcomes
    job_ids = [job.id for job, _ in completions]
    removed = _delete_existing_jobs(conn, job_ids, postgres=postgres)
    kept: list[int] = []  # positions of the completions whose job this transaction removed
    for position, job_id in enumerate(job_ids):
        if job_id in removed:
            removed.discard(job_id)  # a job listed twice is completed once
            kept.append(position)
    if not kept:
        return outcomes
    now = now_utc()
    # 128 random bits each (a uuid4 has 122), from one call for the whole batch.
    random_hex = os.urandom(16 * len(kept)).hex()
    webhook_ids = [f"msg_{random_hex[32 * i : 32 * i + 32]}" for i in range(len(kept))]
    # Completions that share one body object (a batch's repeated chat) share its encoding.
    encoded: dict[int, str] = {}
    bodies: list[str] = []
    for position in kept:
        shared = completions[position][1]
        text = encoded.get(id(shared))
        if text is None:
            text = encoded[id(shared)] = dumps_text(dict(shared))
        bodies.append(text)
    if postgres:
        rows = _json_rows(
            (completions[position][0].instance_id, body, webhook_id)
            for position, body, webhook_id in zip(kept, bodies, webhook_ids, strict=True)
        )
        params = {
            "rows": rows,
            "status": QUEUED,
            "created_at": now,
            "attempts": 0,
            "last_error": "",
        }
        receipt_ids = sorted(conn.execute(_ADD_NOTIFICATIONS_ORDERED, params).scalars())
    else:
        values = [
            (completions[position][0].instance_id, body, QUEUED, webhook_id, now, 0, "")
            for position, webhook_id, body in zip(kept, webhook_ids, bodies, strict=True)
        ]
        receipt_ids = _insert_sqlite(conn, notifications, _NOTIFICATION_COLUMNS, values)
    for position, webhook_id, body, receipt_id in zip(
        kept, webhook_ids, bodies, receipt_ids, strict=True
    ):
        outcomes[position] = Notification(
            receipt_id=receipt_id,
            instance_id=completions[position][0].instance_id,
            body_json=body,
            status=NotificationStatus.QUEUED,
            created_at=now,
            webhook_id=webhook_id,
        )
    return outcomes


_NOTIFICATION_COLUMNS = (
    "instance_id",
    "body",
    "status",
    "webhook_id",
    "created_at",
    "attempts",
    "last_error",
)


def replay_dead(conn: Connection, instance_id: int, receipt_ids: Sequence[int] | None) -> int:
    """Move the dead notifications to the tail of the queue in their old order; returns how many."""
    conditions = [notifications.c.instance_id == instance_id, notifications.c.status == DEAD]
    if receipt_ids is not None:
        conditions.append(notifications.c.receipt_id.in_(list(receipt_ids)))
    # DELETE … RETURNING takes exactly the rows it moves, even while the retention sweep
    # dead-letters more rows concurrently.
    take = (
        delete(notifications)
        .where(*conditions)
        .returning(notifications.c.receipt_id, notifications.c.body, notifications.c.webhook_id)
    )
    dead = sorted(conn.execute(take).all(), key=lambda row: row.receipt_id)
    if not dead:
        return 0
    now = now_utc()
    # Executed in list order on both drivers, so new receipt ids keep the old order.
    conn.execute(
        insert(notifications),
        [
            {
                "instance_id": instance_id,
                "body": row.body,
                "status": QUEUED,
                "webhook_id": row.webhook_id,
                "created_at": now,
                "attempts": 0,
                "last_error": "",
                "next_attempt_at": None,
            }
            for row in dead
        ],
    )
    return len(dead)
