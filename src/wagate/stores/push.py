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

from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Select,
    bindparam,
    delete,
    func,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from wagate.core.model import Notification
from wagate.stores import _rows
from wagate.stores._prepared import Prepared
from wagate.stores._threads import GroupCommit, SqlRunner
from wagate.stores.queues import QUEUED, now_utc
from wagate.stores.schema import UtcDateTime, instances, notifications, push_lanes

# record_delivery_failure keeps this much of an error text.
MAX_ERROR_CHARS = 500


def ensure_lane(conn: Connection, instance_id: int, *, is_postgres: bool) -> None:
    """Give the instance a lane row if it has none (an instance created by a release before 0002
    during a rolling upgrade has none)."""
    upsert = (postgresql.insert if is_postgres else sqlite.insert)(push_lanes)
    conn.execute(
        upsert.values(instance_id=instance_id, lease_until=None).on_conflict_do_nothing(
            index_elements=[push_lanes.c.instance_id]
        )
    )


# The statements below are built once, at import; the current time is bound at each execution.
_NOW = bindparam("now", type_=UtcDateTime)


def _lane_is_free() -> ColumnElement[bool]:
    return or_(push_lanes.c.lease_until.is_(None), push_lanes.c.lease_until <= _NOW)


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


def _head_due_at() -> ColumnElement[datetime]:
    """When the lane's head is due: its next_attempt_at, now if it was never tried, NULL if
    the lane has no queued notification."""
    due_at = func.coalesce(notifications.c.next_attempt_at, _NOW)
    return _head(due_at).scalar_subquery()


def _free_push_lanes(*columns: ColumnElement[Any]) -> Select[Any]:
    return (
        select(*columns)
        .select_from(push_lanes.join(instances, instances.c.id == push_lanes.c.instance_id))
        # `== true()` renders as the partial index's own predicate, so SQLite can use it.
        .where(instances.c.push_mode == true(), _lane_is_free())
    )


_CLAIMABLE_LANES = (
    _free_push_lanes(push_lanes.c.instance_id)
    .where(_head_due_at() <= _NOW)
    .order_by(_head(notifications.c.receipt_id).scalar_subquery())
    .limit(bindparam("limit"))
)
# A claim for the lanes a wake-up named: seeks on their rows, however many lanes there are.
_CLAIMABLE_NAMED_LANES = _CLAIMABLE_LANES.where(
    push_lanes.c.instance_id.in_(bindparam("named", expanding=True))
)
# (lock_rows, named) -> the candidates statement
_CANDIDATES = {
    (True, False): Prepared(_CLAIMABLE_LANES.with_for_update(skip_locked=True, of=push_lanes)),
    (False, False): Prepared(_CLAIMABLE_LANES),
    (True, True): Prepared(_CLAIMABLE_NAMED_LANES.with_for_update(skip_locked=True, of=push_lanes)),
    (False, True): Prepared(_CLAIMABLE_NAMED_LANES),
}
_LEASE_LANES = Prepared(
    update(push_lanes)
    .where(push_lanes.c.instance_id.in_(bindparam("lanes", expanding=True)), _lane_is_free())
    .values(lease_until=bindparam("until", type_=UtcDateTime))
    .returning(push_lanes.c.instance_id)
)
# Only a lane's head is ever given a retry time (the push that failed), so the earliest retry
# pending among free push-mode lanes is the earliest due head: a walk of the small partial index.
_NEXT_PUSH_DUE = Prepared(
    select(notifications.c.next_attempt_at)
    .select_from(
        notifications.join(
            push_lanes, push_lanes.c.instance_id == notifications.c.instance_id
        ).join(instances, instances.c.id == notifications.c.instance_id)
    )
    .where(
        notifications.c.status == QUEUED,
        notifications.c.next_attempt_at.is_not(None),
        instances.c.push_mode == true(),
        _lane_is_free(),
    )
    .order_by(notifications.c.next_attempt_at)
    .limit(1)
)


def claim_lanes(
    conn: Connection,
    limit: int,
    now: datetime,
    until: datetime,
    *,
    lock_rows: bool,
    named: Collection[int] | None = None,
) -> list[int]:
    """Lease the free, due push lanes (of the `named` instances only, if given) until `until`,
    oldest head first; returns their instance ids.

    With `lock_rows` (PostgreSQL), candidate lane rows are locked with SKIP LOCKED, so
    concurrent claimers take different lanes; the lease is then set by a second statement
    whose fresh READ COMMITTED snapshot re-checks that the lane is still free (a claim
    committed between this statement's snapshot and its lock). Without it, the caller's
    BEGIN IMMEDIATE transaction already excludes other writers (SQLite).
    """
    params: dict[str, Any] = {"now": now, "limit": limit}
    if named is not None:
        if not named:
            return []
        params["named"] = sorted(named)
    candidates = _CANDIDATES[lock_rows, named is not None]
    lane_ids = [row[0] for row in candidates.rows(conn, params)]
    if not lane_ids:
        return []
    lease_params = {"now": now, "lanes": lane_ids, "until": until}
    claimed = {row[0] for row in _LEASE_LANES.rows(conn, lease_params)}
    return [lane_id for lane_id in lane_ids if lane_id in claimed]


# A renewal or release changes the lease only while it is still the one its holder set: the
# expiry time it last wrote serves as the holder's token (compare and set). A holder that stalled
# past its lease, whose lane another dispatcher then claimed, must neither extend nor free the
# new holder's lease: two holders would push one instance at once, out of order.
_HELD = (push_lanes.c.instance_id == bindparam("lane")) & (
    push_lanes.c.lease_until == bindparam("held", type_=UtcDateTime)
)
_SET_HELD_LEASE = Prepared(
    update(push_lanes).where(_HELD).values(lease_until=bindparam("until", type_=UtcDateTime))
)
# Columns in `Notification`'s field order (`_rows.notification_from_values`).
_QUEUED_AFTER = Prepared(
    select(*_rows.NOTIFICATION_COLUMNS)
    .where(
        notifications.c.instance_id == bindparam("instance_id"),
        notifications.c.status == QUEUED,
        notifications.c.receipt_id > bindparam("after_receipt_id"),
    )
    .order_by(notifications.c.receipt_id)
    .limit(bindparam("limit"))
)
_MARK_DELIVERED = Prepared(
    delete(notifications).where(
        notifications.c.instance_id == bindparam("instance_id"),
        notifications.c.status == QUEUED,
        notifications.c.receipt_id.in_(bindparam("receipt_ids", expanding=True)),
    )
)
_RECORD_FAILURE = (
    update(notifications)
    .where(
        # Not the column names: an UPDATE reserves those for its SET clause.
        notifications.c.instance_id == bindparam("instance"),
        notifications.c.receipt_id == bindparam("receipt"),
        notifications.c.status == QUEUED,
    )
    .values(
        attempts=notifications.c.attempts + 1,
        last_error=bindparam("error", type_=notifications.c.last_error.type),
        next_attempt_at=bindparam("retry_at", type_=UtcDateTime),
    )
)


class PushDelivery:
    """The push-delivery methods of the `Store` port, mixed into `SqlStore`, which provides
    the runners declared below. Contracts are on `wagate.core.ports.Store`."""

    _is_postgres: bool
    _writer: SqlRunner
    _reader: SqlRunner
    _marks: GroupCommit[tuple[int, list[int]], int]
    # The lanes this store leased, with the expiry it last wrote for each (see `_HELD`).
    _held_leases: dict[int, datetime]

    async def claim_push_lanes(
        self, limit: int, lease: timedelta, named: Collection[int] | None = None
    ) -> list[int]:
        if limit <= 0 or (named is not None and not named):
            return []
        lock_rows = self._is_postgres
        now = now_utc()
        until = now + lease
        lanes: list[int] = await self._writer.run(
            lambda conn: claim_lanes(conn, limit, now, until, lock_rows=lock_rows, named=named)
        )
        for lane in lanes:
            self._held_leases[lane] = until
        return lanes

    async def renew_push_lane(self, instance_id: int, lease: timedelta) -> bool:
        held = self._held_leases.get(instance_id)
        if held is None:
            return False
        until = now_utc() + lease
        params = {"lane": instance_id, "held": held, "until": until}
        renewed = await self._writer.run(lambda conn: _SET_HELD_LEASE.rowcount(conn, params)) > 0
        # Checked again: a release may have run meanwhile, and then the lease is no longer held.
        if renewed and self._held_leases.get(instance_id) == held:
            self._held_leases[instance_id] = until
        else:
            self._held_leases.pop(instance_id, None)
        return renewed

    async def release_push_lane(self, instance_id: int, delivered: Sequence[int] = ()) -> None:
        held = self._held_leases.pop(instance_id, None)
        params = {"lane": instance_id, "held": held, "until": None}
        marks = {"instance_id": instance_id, "receipt_ids": list(delivered)}

        def release(conn: Connection) -> None:
            # Delivered is delivered, whoever holds the lane now.
            if marks["receipt_ids"]:
                _MARK_DELIVERED.rowcount(conn, marks)
            if held is not None:
                _SET_HELD_LEASE.rowcount(conn, params)

        if held is not None or delivered:
            await self._writer.run(release)

    async def queued_notifications(
        self, instance_id: int, limit: int, after_receipt_id: int = 0
    ) -> list[Notification]:
        if limit <= 0:
            return []
        params = {"instance_id": instance_id, "after_receipt_id": after_receipt_id, "limit": limit}
        return await self._reader.run(
            lambda conn: [
                _rows.notification_from_values(row) for row in _QUEUED_AFTER.rows(conn, params)
            ]
        )

    async def mark_delivered(self, instance_id: int, receipt_ids: Sequence[int]) -> int:
        """Take delivered notifications off the queue; how many were still queued. Lanes
        marking at the same time share one transaction (group commit)."""
        if not receipt_ids:
            return 0
        return await self._marks.submit((instance_id, list(receipt_ids)))

    def _mark_batch(self, marks: Sequence[tuple[int, list[int]]]) -> list[int]:
        """Write one batch of `mark_delivered` calls; runs in a writer thread."""

        def mark(conn: Connection) -> list[int]:
            return [
                _MARK_DELIVERED.rowcount(
                    conn, {"instance_id": instance_id, "receipt_ids": receipt_ids}
                )
                for instance_id, receipt_ids in marks
            ]

        return self._writer.call(mark)

    async def record_delivery_failure(
        self, instance_id: int, receipt_id: int, error: str, retry_at: datetime
    ) -> None:
        params = {
            "instance": instance_id,
            "receipt": receipt_id,
            "error": error[:MAX_ERROR_CHARS],
            "retry_at": retry_at,
        }
        await self._writer.run(lambda conn: conn.execute(_RECORD_FAILURE, params))

    async def next_push_due(self) -> datetime | None:
        params = {"now": now_utc()}
        rows = await self._reader.run(lambda conn: _NEXT_PUSH_DUE.rows(conn, params))
        due: datetime | None = rows[0][0] if rows else None
        return due
