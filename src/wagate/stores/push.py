"""Push delivery in SQL: lane leases per instance and the queue operations a dispatcher uses.

`SqlStore` inherits these methods from `PushDelivery`; they are a second responsibility of the
store with their own tables (`push_lanes`, `instances.push_mode`), kept here so `sql.py` stays
about instances, jobs and polling.

A lane is an instance's right to have one push in flight. Every instance has a lane row
(created with it, or by `ensure_lane` when push mode is switched on); its lease is free when
NULL or past. Claiming locks lane rows only, never `instances`, so it neither waits for nor
blocks `update_instance` and avatar-job claims on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, delete, func, literal, or_, select, true, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from wagate.core.model import Notification
from wagate.stores import _rows
from wagate.stores.queues import QUEUED, now_utc
from wagate.stores.schema import UtcDateTime, instances, notifications, push_lanes

# record_delivery_failure keeps this much of an error text.
MAX_ERROR_CHARS = 500


async def ensure_lane(conn: AsyncConnection, instance_id: int, *, is_postgres: bool) -> None:
    """Give the instance a lane row if it has none (an instance created by a release before 0002
    during a rolling upgrade has none)."""
    upsert = (postgresql.insert if is_postgres else sqlite.insert)(push_lanes)
    await conn.execute(
        upsert.values(instance_id=instance_id, lease_until=None).on_conflict_do_nothing(
            index_elements=[push_lanes.c.instance_id]
        )
    )


def _lane_is_free(now: datetime) -> ColumnElement[bool]:
    return or_(push_lanes.c.lease_until.is_(None), push_lanes.c.lease_until <= now)


def _head(column: ColumnElement[Any]) -> Select[Any]:
    """`column` of the lane's head: its oldest queued notification (a seek on the
    (instance_id, status, receipt_id) index). NULL when nothing is queued."""
    return (
        select(column)
        .where(
            notifications.c.instance_id == push_lanes.c.instance_id,
            notifications.c.status == QUEUED,
        )
        .order_by(notifications.c.receipt_id)
        .limit(1)
    )


def _head_due_at(now: datetime) -> ColumnElement[datetime]:
    """When the lane's head is due: its next_attempt_at, `now` if it was never tried, NULL if
    the lane has no queued notification."""
    due_at = func.coalesce(notifications.c.next_attempt_at, literal(now, UtcDateTime))
    return _head(due_at).scalar_subquery()


def _free_push_lanes(now: datetime, *columns: ColumnElement[Any]) -> Select[Any]:
    return (
        select(*columns)
        .select_from(push_lanes.join(instances, instances.c.id == push_lanes.c.instance_id))
        # `== true()` renders as the partial index's own predicate, so SQLite can use it.
        .where(instances.c.push_mode == true(), _lane_is_free(now))
    )


async def claim_lanes(
    conn: AsyncConnection, limit: int, lease: timedelta, *, lock_rows: bool
) -> list[int]:
    """Lease the free, due push lanes, oldest head first; returns their instance ids.

    With `lock_rows` (PostgreSQL), candidate lane rows are locked with SKIP LOCKED, so
    concurrent claimers take different lanes; the lease is then set by a second statement
    whose fresh READ COMMITTED snapshot re-checks that the lane is still free (a claim
    committed between this statement's snapshot and its lock). Without it, the caller's
    BEGIN IMMEDIATE transaction already excludes other writers (SQLite).
    """
    now = now_utc()
    head_receipt = _head(notifications.c.receipt_id).scalar_subquery()
    candidates = (
        _free_push_lanes(now, push_lanes.c.instance_id)
        .where(_head_due_at(now) <= now)
        .order_by(head_receipt)
        .limit(limit)
    )
    if lock_rows:
        candidates = candidates.with_for_update(skip_locked=True, of=push_lanes)
    lane_ids = list((await conn.execute(candidates)).scalars())
    if not lane_ids:
        return []
    claim = (
        update(push_lanes)
        .where(push_lanes.c.instance_id.in_(lane_ids), _lane_is_free(now))
        .values(lease_until=now + lease)
        .returning(push_lanes.c.instance_id)
    )
    claimed = set((await conn.execute(claim)).scalars())
    return [lane_id for lane_id in lane_ids if lane_id in claimed]


class PushDelivery:
    """The push-delivery methods of the `Store` port, mixed into `SqlStore`, which provides
    the transaction helpers declared below. Contracts are on `wagate.core.ports.Store`."""

    _is_postgres: bool

    def _write(self) -> AbstractAsyncContextManager[AsyncConnection]:
        raise NotImplementedError

    def _read(self) -> AbstractAsyncContextManager[AsyncConnection]:
        raise NotImplementedError

    async def claim_push_lanes(self, limit: int, lease: timedelta) -> list[int]:
        """Lease up to `limit` free lanes of push-mode instances whose head is due, oldest head
        first. No two claimers (processes or PostgreSQL nodes) get a lane while it is live."""
        if limit <= 0:
            return []
        async with self._write() as conn:
            return await claim_lanes(conn, limit, lease, lock_rows=self._is_postgres)

    async def renew_push_lane(self, instance_id: int, lease: timedelta) -> None:
        statement = (
            update(push_lanes)
            .where(push_lanes.c.instance_id == instance_id)
            .values(lease_until=now_utc() + lease)
        )
        async with self._write() as conn:
            await conn.execute(statement)

    async def release_push_lane(self, instance_id: int) -> None:
        statement = (
            update(push_lanes)
            .where(push_lanes.c.instance_id == instance_id)
            .values(lease_until=None)
        )
        async with self._write() as conn:
            await conn.execute(statement)

    async def queued_notifications(
        self, instance_id: int, limit: int, after_receipt_id: int = 0
    ) -> list[Notification]:
        if limit <= 0:
            return []
        query = (
            select(notifications)
            .where(
                notifications.c.instance_id == instance_id,
                notifications.c.status == QUEUED,
                notifications.c.receipt_id > after_receipt_id,
            )
            .order_by(notifications.c.receipt_id)
            .limit(limit)
        )
        async with self._read() as conn:
            rows = (await conn.execute(query)).mappings()
            return [_rows.notification_from_row(row) for row in rows]

    async def mark_delivered(self, instance_id: int, receipt_ids: Sequence[int]) -> int:
        if not receipt_ids:
            return 0
        statement = delete(notifications).where(
            notifications.c.instance_id == instance_id,
            notifications.c.status == QUEUED,
            notifications.c.receipt_id.in_(list(receipt_ids)),
        )
        async with self._write() as conn:
            return (await conn.execute(statement)).rowcount

    async def record_delivery_failure(
        self, instance_id: int, receipt_id: int, error: str, retry_at: datetime
    ) -> None:
        statement = (
            update(notifications)
            .where(
                notifications.c.instance_id == instance_id,
                notifications.c.receipt_id == receipt_id,
                notifications.c.status == QUEUED,
            )
            .values(
                attempts=notifications.c.attempts + 1,
                last_error=error[:MAX_ERROR_CHARS],
                next_attempt_at=retry_at,
            )
        )
        async with self._write() as conn:
            await conn.execute(statement)

    async def next_push_due(self) -> datetime | None:
        now = now_utc()
        retry_at = _head(notifications.c.next_attempt_at).scalar_subquery()
        query = _free_push_lanes(now, func.min(retry_at))
        async with self._read() as conn:
            due: datetime | None = (await conn.execute(query)).scalar()
        return due
