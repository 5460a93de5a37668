"""The multi-statement queue operations of `SqlStore`, each run inside the caller's transaction."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, exists, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from wagate.core.model import AvatarJob, Notification, NotificationStatus
from wagate.stores import _rows
from wagate.stores.schema import avatar_jobs, instances, notifications

QUEUED = NotificationStatus.QUEUED.value
DEAD = NotificationStatus.DEAD.value


def now_utc() -> datetime:
    return datetime.now(UTC)


async def claim_jobs(
    conn: AsyncConnection, limit: int, lease: timedelta, *, lock_rows: bool
) -> list[AvatarJob]:
    """Claim each chosen instance's oldest job, for instances with no live claim, oldest queue
    first. With `lock_rows` (PostgreSQL), the instances are locked first with SKIP LOCKED, so
    concurrent claimers take different instances; the jobs are then chosen by a second statement
    whose fresh READ COMMITTED snapshot sees every claim committed before the lock was granted.
    Without it, the caller's BEGIN IMMEDIATE transaction already excludes other writers."""
    now = now_utc()
    live = avatar_jobs.alias("live")
    queued = avatar_jobs.alias("queued")
    oldest_job = (
        select(func.min(queued.c.id))
        .where(queued.c.instance_id == instances.c.id)
        .scalar_subquery()
    )
    candidates = (
        select(instances.c.id)
        .where(
            exists().where(queued.c.instance_id == instances.c.id),
            ~exists().where(live.c.instance_id == instances.c.id, live.c.claimed_until > now),
        )
        .order_by(oldest_job)
        .limit(limit)
    )
    if lock_rows:
        # NO KEY UPDATE: does not block inserts whose foreign keys point at the instance.
        candidates = candidates.with_for_update(skip_locked=True, key_share=True)
    instance_ids = list((await conn.execute(candidates)).scalars())
    if not instance_ids:
        return []
    firsts = (
        select(func.min(queued.c.id))
        .where(queued.c.instance_id.in_(instance_ids))
        .group_by(queued.c.instance_id)
    )
    claim = (
        update(avatar_jobs)
        .where(
            avatar_jobs.c.id.in_(firsts),
            ~exists().where(
                live.c.instance_id == avatar_jobs.c.instance_id, live.c.claimed_until > now
            ),
        )
        .values(claimed_until=now + lease)
        .returning(*avatar_jobs.c)
    )
    rows = (await conn.execute(claim)).mappings().all()
    return sorted((_rows.job_from_row(row) for row in rows), key=lambda job: job.id)


async def complete_job(
    conn: AsyncConnection, job: AvatarJob, body: Mapping[str, Any]
) -> Notification:
    """Delete the job and queue its notification under a fresh webhook id; LookupError, before
    anything is written, if the job is gone."""
    removed = await conn.execute(delete(avatar_jobs).where(avatar_jobs.c.id == job.id))
    if removed.rowcount == 0:
        raise LookupError(f"avatar job {job.id} is no longer queued")
    now = now_utc()
    webhook_id = f"msg_{uuid.uuid4().hex}"
    add = (
        insert(notifications)
        .values(
            instance_id=job.instance_id,
            body=_rows.dump_json(dict(body)),
            status=QUEUED,
            webhook_id=webhook_id,
            created_at=now,
            attempts=0,
            last_error="",
        )
        .returning(notifications.c.receipt_id)
    )
    receipt_id = (await conn.execute(add)).scalar_one()
    return Notification(
        receipt_id=receipt_id,
        instance_id=job.instance_id,
        body=dict(body),
        status=NotificationStatus.QUEUED,
        created_at=now,
        webhook_id=webhook_id,
    )


async def replay_dead(
    conn: AsyncConnection, instance_id: int, receipt_ids: Sequence[int] | None
) -> int:
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
    dead = sorted((await conn.execute(take)).all(), key=lambda row: row.receipt_id)
    if not dead:
        return 0
    now = now_utc()
    # Executed in list order on both drivers, so new receipt ids keep the old order.
    await conn.execute(
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
