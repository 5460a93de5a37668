"""`SqlStore`: the `Store` port in SQLAlchemy Core, on SQLite (aiosqlite) or PostgreSQL (psycopg 3).

Statements are dialect-neutral Core with two exceptions, both branched on inside the store:
claiming avatar jobs and push lanes takes row locks on PostgreSQL (SQLite relies on its single
BEGIN IMMEDIATE writer), and upserts use each dialect's own `INSERT … ON CONFLICT` construct.
The push-delivery methods live in `push.py` (`PushDelivery`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Generator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, TypeVar

import anyio
from sqlalchemy import RowMapping, Select, column, delete, func, insert, select, table, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from wagate.core.errors import InstanceConflict, UnknownInstance, WagateError
from wagate.core.model import (
    AvatarJob,
    Instance,
    InstanceSettings,
    InstanceState,
    Notification,
    NotificationStatus,
    SandboxAccount,
    SandboxFault,
    SandboxGroup,
)
from wagate.stores import _rows, queues
from wagate.stores._connect import create_engines
from wagate.stores.migrate import is_outdated
from wagate.stores.push import PushDelivery, ensure_lane
from wagate.stores.schema import (
    avatar_jobs,
    instances,
    meta,
    notifications,
    push_lanes,
    sandbox_accounts,
    sandbox_faults,
    sandbox_groups,
)
from wagate.stores.world import merge_world

T = TypeVar("T")

_alembic_version = table("alembic_version", column("version_num"))


def open_store(database_url: str) -> OpeningStore:
    """Connect to a migrated database given in sync URL form (`sqlite:////abs/path.sqlite3`,
    `postgresql://…`). Does not migrate: call `migrate()` first.

    Use it either way: `async with open_store(url) as store:` closes the store on exit;
    `store = await open_store(url)` leaves closing (`await store.aclose()`) to the caller.
    Raises RuntimeError if the schema is missing or older than this code, ValueError for an
    unsupported URL.
    """
    return OpeningStore(database_url)


class OpeningStore:
    """What `open_store` returns: awaitable, and an async context manager owning the store."""

    def __init__(self, database_url: str) -> None:
        self._database_url = database_url
        self._store: SqlStore | None = None

    def __await__(self) -> Generator[Any, None, SqlStore]:
        return _open(self._database_url).__await__()

    async def __aenter__(self) -> SqlStore:
        self._store = await _open(self._database_url)
        return self._store

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._store is not None:
            store, self._store = self._store, None
            await store.aclose()


async def _open(database_url: str) -> SqlStore:
    writer, reader = create_engines(database_url)
    store = SqlStore(writer, reader)
    try:
        await store._check_schema()
    except BaseException:
        await store.aclose()
        raise
    return store


class SqlStore(PushDelivery):
    """Durable state in one SQL database, shared by every wagate process that uses it.

    Every method commits before it returns, and a method that writes several rows does so in one
    transaction. Unique violations on instances raise `InstanceConflict`; other database failures
    (unreachable server, lock timeout) raise `WagateError` with the driver error as its cause,
    so no SQLAlchemy or driver exception leaves the store. Build it with `open_store`;
    it is also an async context manager that closes itself.
    """

    def __init__(self, writer: AsyncEngine, reader: AsyncEngine) -> None:
        self._writer = writer
        self._reader = reader
        self._is_postgres = writer.dialect.name == "postgresql"

    @property
    def engines(self) -> tuple[AsyncEngine, AsyncEngine]:
        """The writer and reader engines, for adapters keeping their own tables in this database
        (`SqlImageStore`). The store still owns them: closing it disposes them."""
        return self._writer, self._reader

    async def __aenter__(self) -> SqlStore:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._writer.dispose()
        if self._reader.sync_engine.pool is not self._writer.sync_engine.pool:
            await self._reader.dispose()

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        try:
            async with self._writer.begin() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise WagateError(f"database error ({type(exc).__name__})") from exc

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncConnection]:
        try:
            async with self._reader.connect() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise WagateError(f"database error ({type(exc).__name__})") from exc

    async def _check_schema(self) -> None:
        try:
            async with self._reader.connect() as conn:
                revision = (await conn.execute(select(_alembic_version.c.version_num))).scalar()
        except SQLAlchemyError as exc:
            cause = str(getattr(exc, "orig", None) or exc).splitlines()[0]
            message = f"cannot read the wagate schema ({cause}); run `wagate migrate`"
            raise RuntimeError(message) from exc
        if revision is None:
            raise RuntimeError("the database has no wagate schema; run `wagate migrate`")
        if await anyio.to_thread.run_sync(is_outdated, revision):
            raise RuntimeError(f"database schema {revision} is outdated; run `wagate migrate`")

    # -- metadata ----------------------------------------------------------------------------

    async def get_meta(self, key: str) -> str | None:
        async with self._read() as conn:
            value = (await conn.execute(select(meta.c.value).where(meta.c.key == key))).scalar()
        return None if value is None else str(value)

    async def set_meta(self, key: str, value: str) -> None:
        upsert = (postgresql.insert if self._is_postgres else sqlite.insert)(meta)
        statement = upsert.values(key=key, value=value).on_conflict_do_update(
            index_elements=[meta.c.key], set_={"value": value}
        )
        async with self._write() as conn:
            await conn.execute(statement)

    # -- instances ---------------------------------------------------------------------------

    async def create_instance(self, instance: Instance) -> None:
        async with self._write() as conn:
            try:
                await conn.execute(insert(instances).values(_rows.instance_values(instance)))
            except IntegrityError as exc:
                if "phone" in str(exc.orig):
                    raise InstanceConflict(
                        f"an instance for phone {instance.phone} already exists"
                    ) from exc
                raise InstanceConflict(f"instance {instance.id} already exists") from exc
            await conn.execute(insert(push_lanes).values(instance_id=instance.id))

    async def _fetch(self, query: Select[Any], convert: Callable[[RowMapping], T]) -> list[T]:
        async with self._read() as conn:
            return [convert(row) for row in (await conn.execute(query)).mappings()]

    async def _fetch_one(self, query: Select[Any], convert: Callable[[RowMapping], T]) -> T | None:
        found = await self._fetch(query, convert)
        return found[0] if found else None

    async def get_instance(self, instance_id: int) -> Instance | None:
        query = select(instances).where(instances.c.id == instance_id)
        return await self._fetch_one(query, _rows.instance_from_row)

    async def get_instance_by_phone(self, phone: str) -> Instance | None:
        if not phone:
            return None
        query = select(instances).where(instances.c.phone == phone)
        return await self._fetch_one(query, _rows.instance_from_row)

    async def list_instances(self) -> list[Instance]:
        query = select(instances).order_by(instances.c.id)
        return await self._fetch(query, _rows.instance_from_row)

    async def delete_instance(self, instance_id: int) -> bool:
        # Jobs, notifications and the lane go through ON DELETE CASCADE (foreign_keys=ON on SQLite).
        async with self._write() as conn:
            result = await conn.execute(delete(instances).where(instances.c.id == instance_id))
        return result.rowcount > 0

    async def update_instance(
        self,
        instance_id: int,
        *,
        api_token: str | None = None,
        webhook_signing_secret: str | None = None,
        state: InstanceState | None = None,
        settings: InstanceSettings | None = None,
    ) -> Instance | None:
        changes: dict[str, Any] = {}
        if api_token is not None:
            changes["api_token"] = api_token
        if webhook_signing_secret is not None:
            changes["webhook_signing_secret"] = webhook_signing_secret
        if state is not None:
            changes["state"] = state.value
        if settings is not None:
            changes["settings"] = _rows.settings_to_json(settings)
            changes["push_mode"] = _rows.push_mode(settings)
        if not changes:
            return await self.get_instance(instance_id)
        statement = (
            update(instances)
            .where(instances.c.id == instance_id)
            .values(changes)
            .returning(*instances.c)
        )
        async with self._write() as conn:
            row = (await conn.execute(statement)).mappings().first()
            if row is not None and row["push_mode"]:
                await ensure_lane(conn, instance_id, is_postgres=self._is_postgres)
        return None if row is None else _rows.instance_from_row(row)

    # -- sandbox world -----------------------------------------------------------------------

    async def merge_sandbox_world(
        self,
        accounts: Sequence[SandboxAccount],
        groups: Sequence[SandboxGroup],
        faults: Sequence[SandboxFault],
    ) -> None:
        """Insert or replace by key, all in one transaction. Raises `WorldFileError` if an
        account's lid belongs to another account."""
        async with self._write() as conn:
            await merge_world(conn, accounts, groups, faults)

    async def get_sandbox_account(self, phone: str) -> SandboxAccount | None:
        query = select(sandbox_accounts).where(sandbox_accounts.c.phone == phone)
        return await self._fetch_one(query, _rows.account_from_row)

    async def get_sandbox_account_by_lid(self, lid: str) -> SandboxAccount | None:
        query = select(sandbox_accounts).where(sandbox_accounts.c.lid == lid)
        return await self._fetch_one(query, _rows.account_from_row)

    async def get_sandbox_group(self, chat_id: str) -> SandboxGroup | None:
        query = select(sandbox_groups).where(sandbox_groups.c.chat_id == chat_id)
        return await self._fetch_one(query, _rows.group_from_row)

    async def get_sandbox_fault(self, chat_id: str) -> SandboxFault | None:
        query = select(sandbox_faults).where(sandbox_faults.c.chat_id == chat_id)
        return await self._fetch_one(query, _rows.fault_from_row)

    async def list_sandbox_accounts(self) -> list[SandboxAccount]:
        query = select(sandbox_accounts).order_by(sandbox_accounts.c.phone)
        return await self._fetch(query, _rows.account_from_row)

    async def list_sandbox_groups(self) -> list[SandboxGroup]:
        query = select(sandbox_groups).order_by(sandbox_groups.c.chat_id)
        return await self._fetch(query, _rows.group_from_row)

    # -- avatar jobs -------------------------------------------------------------------------

    async def enqueue_avatar_job(self, instance_id: int, chat_id: str) -> AvatarJob:
        """Record the job durably. Raises `UnknownInstance` if the instance is gone."""
        now = queues.now_utc()
        statement = (
            insert(avatar_jobs)
            .values(instance_id=instance_id, chat_id=chat_id, created_at=now)
            .returning(avatar_jobs.c.id)
        )
        async with self._write() as conn:
            try:
                job_id = (await conn.execute(statement)).scalar_one()
            except IntegrityError as exc:
                raise UnknownInstance(f"instance {instance_id} does not exist") from exc
        return AvatarJob(id=job_id, instance_id=instance_id, chat_id=chat_id, created_at=now)

    async def claim_avatar_jobs(self, limit: int, lease: timedelta) -> list[AvatarJob]:
        """Claim up to `limit` jobs, oldest instance queue first: each instance's oldest job, for
        instances with no live claim; claimed jobs carry `claimed_until = now + lease`. No two
        claimers (processes or PostgreSQL nodes) get one job, or two jobs of one instance."""
        if limit <= 0:
            return []
        async with self._write() as conn:
            return await queues.claim_jobs(conn, limit, lease, lock_rows=self._is_postgres)

    async def complete_avatar_job(
        self, job: AvatarJob, notification_body: Mapping[str, Any]
    ) -> Notification:
        """In one transaction: remove the job and queue its notification.

        Raises LookupError, changing nothing, if the job is gone: another worker took it over
        after this one's lease expired and completed it first, or its instance was deleted.
        So exactly one notification per job is ever queued.
        """
        async with self._write() as conn:
            return await queues.complete_job(conn, job, notification_body)

    async def count_avatar_jobs(self, instance_id: int | None = None) -> int:
        query = select(func.count()).select_from(avatar_jobs)
        if instance_id is not None:
            query = query.where(avatar_jobs.c.instance_id == instance_id)
        async with self._read() as conn:
            return int((await conn.execute(query)).scalar_one())

    async def release_leases(self) -> None:
        async with self._write() as conn:
            await conn.execute(update(avatar_jobs).values(claimed_until=None))
            await conn.execute(update(push_lanes).values(lease_until=None))

    # -- notifications -----------------------------------------------------------------------

    async def head_notification(self, instance_id: int) -> Notification | None:
        found = await self.list_notifications(instance_id, NotificationStatus.QUEUED, limit=1)
        return found[0] if found else None

    async def delete_notification(self, instance_id: int, receipt_id: int) -> bool:
        """Delete a queued notification; False if the instance has no such queued one."""
        statement = delete(notifications).where(
            notifications.c.instance_id == instance_id,
            notifications.c.receipt_id == receipt_id,
            notifications.c.status == queues.QUEUED,
        )
        async with self._write() as conn:
            return (await conn.execute(statement)).rowcount > 0

    async def count_notifications(self, instance_id: int) -> int:
        """How many notifications are queued (dead letters are not counted)."""
        query = (
            select(func.count())
            .select_from(notifications)
            .where(
                notifications.c.instance_id == instance_id, notifications.c.status == queues.QUEUED
            )
        )
        async with self._read() as conn:
            return int((await conn.execute(query)).scalar_one())

    async def clear_notifications(self, instance_id: int) -> int:
        """Delete the queued notifications (not the dead letters); returns how many."""
        statement = delete(notifications).where(
            notifications.c.instance_id == instance_id, notifications.c.status == queues.QUEUED
        )
        async with self._write() as conn:
            return (await conn.execute(statement)).rowcount

    async def dead_letter_expired(self, created_before: datetime) -> int:
        statement = (
            update(notifications)
            .where(
                notifications.c.status == queues.QUEUED, notifications.c.created_at < created_before
            )
            .values(status=queues.DEAD)
        )
        async with self._write() as conn:
            return (await conn.execute(statement)).rowcount

    async def list_notifications(
        self, instance_id: int, status: NotificationStatus, limit: int = 100
    ) -> list[Notification]:
        """The instance's notifications with this status, oldest (lowest receipt id) first."""
        query = (
            select(notifications)
            .where(
                notifications.c.instance_id == instance_id, notifications.c.status == status.value
            )
            .order_by(notifications.c.receipt_id)
            .limit(limit)
        )
        return await self._fetch(query, _rows.notification_from_row)

    async def replay_dead(self, instance_id: int, receipt_ids: Sequence[int] | None = None) -> int:
        """Queue dead notifications again at the tail, in their old order, under new receipt ids;
        body and webhook id are kept, attempts start over. Unknown or queued ids are ignored."""
        if receipt_ids is not None and not receipt_ids:
            return 0
        async with self._write() as conn:
            return await queues.replay_dead(conn, instance_id, receipt_ids)
