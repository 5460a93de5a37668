"""`SqlStore`: the `Store` port in SQLAlchemy Core, on SQLite (sqlite3) or PostgreSQL (psycopg 3).

Statements are dialect-neutral Core with two exceptions, both branched on inside the store:
claiming avatar jobs and push lanes takes row locks on PostgreSQL (SQLite relies on its single
BEGIN IMMEDIATE writer), and upserts use each dialect's own `INSERT … ON CONFLICT` construct.
On SQLite the frequent statements run on the bare driver (`_prepared.Prepared`), still written
once in Core.
The push-delivery methods live in `push.py` (`PushDelivery`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Generator, Mapping, Sequence
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, NamedTuple, TypeVar

import anyio
from sqlalchemy import (
    Connection,
    Select,
    bindparam,
    column,
    delete,
    func,
    insert,
    select,
    table,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from wagate.core.errors import InstanceConflict, UnknownInstance, WagateError
from wagate.core.model import (
    AvatarJob,
    ChatId,
    ChatKind,
    Instance,
    InstanceSettings,
    InstanceState,
    Notification,
    NotificationStatus,
    SandboxAccount,
    SandboxFault,
    SandboxGroup,
    SandboxRows,
)
from wagate.stores import _rows, queues
from wagate.stores._prepared import Prepared
from wagate.stores._threads import Database, GroupCommit, SqlRunner
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

# Statements of the frequent calls, built once: on SQLite, building a Core statement costs more
# than running it. Parameters are bound by name at execution.
_GET_META = select(meta.c.value).where(meta.c.key == bindparam("key"))
# Read by the instance cache whenever an entry has expired: once a second per instance in use.
_GET_INSTANCE = Prepared(select(instances).where(instances.c.id == bindparam("instance_id")))
_GET_INSTANCE_BY_PHONE = select(instances).where(instances.c.phone == bindparam("phone"))
_GET_SANDBOX_ACCOUNT = select(sandbox_accounts).where(sandbox_accounts.c.phone == bindparam("key"))
_GET_SANDBOX_ACCOUNT_BY_LID = select(sandbox_accounts).where(
    sandbox_accounts.c.lid == bindparam("key")
)
_GET_SANDBOX_GROUP = select(sandbox_groups).where(sandbox_groups.c.chat_id == bindparam("key"))
_GET_SANDBOX_FAULT = select(sandbox_faults).where(sandbox_faults.c.chat_id == bindparam("key"))
_SANDBOX_FAULTS_OF = Prepared(
    select(sandbox_faults).where(sandbox_faults.c.chat_id.in_(bindparam("keys", expanding=True)))
)
_SANDBOX_ACCOUNTS_OF = Prepared(
    select(sandbox_accounts).where(sandbox_accounts.c.phone.in_(bindparam("keys", expanding=True)))
)
_SANDBOX_ACCOUNTS_BY_LID_OF = Prepared(
    select(sandbox_accounts).where(sandbox_accounts.c.lid.in_(bindparam("keys", expanding=True)))
)
_SANDBOX_GROUPS_OF = Prepared(
    select(sandbox_groups).where(sandbox_groups.c.chat_id.in_(bindparam("keys", expanding=True)))
)
_LIST_NOTIFICATIONS = Prepared(
    select(*_rows.NOTIFICATION_COLUMNS)
    .where(
        notifications.c.instance_id == bindparam("instance_id"),
        notifications.c.status == bindparam("status"),
    )
    .order_by(notifications.c.receipt_id)
    .limit(bindparam("limit"))
)
_DELETE_QUEUED_NOTIFICATION = Prepared(
    delete(notifications).where(
        notifications.c.instance_id == bindparam("instance_id"),
        notifications.c.receipt_id == bindparam("receipt_id"),
        notifications.c.status == queues.QUEUED,
    )
)
_DELETE_QUEUED_NOTIFICATIONS = delete(notifications).where(
    notifications.c.instance_id == bindparam("instance_id"),
    notifications.c.receipt_id.in_(bindparam("receipt_ids", expanding=True)),
    notifications.c.status == queues.QUEUED,
)
_COUNT_QUEUED_NOTIFICATIONS = (
    select(func.count())
    .select_from(notifications)
    .where(
        notifications.c.instance_id == bindparam("instance_id"),
        notifications.c.status == queues.QUEUED,
    )
)

# An `enqueue_avatar_job` call: (instance_id, chat_id).
_JobRequest = tuple[int, str]
# Lanes' delivery marks per transaction: each is one DELETE of up to a lane batch of rows.
_MAX_MARK_BATCH = 64
# The most `enqueue_avatar_job` calls one transaction writes.
_MAX_JOB_BATCH = 256
# A job and the body of its notification, as `complete_avatar_jobs` takes them.
_Completion = tuple[AvatarJob, Mapping[str, Any]]
# The most completion calls (each a list of jobs) one transaction writes.
_MAX_COMPLETION_BATCH = 32


class _CompletionCall(NamedTuple):
    """A `complete_avatar_jobs` call, or a `complete_and_claim_avatar_jobs` call with the
    (lease, per_instance) of the claim it asks for."""

    completions: Sequence[_Completion]
    claim: tuple[timedelta, int] | None


class _CompletionOutcome(NamedTuple):
    notifications: list[Notification | None]
    next_jobs: list[AvatarJob]


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
    store = SqlStore(Database(database_url))
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
    (unreachable server, lock timeout, a closed store) raise `WagateError` with the driver error
    as its cause, so no SQLAlchemy or driver exception leaves the store. Build it with
    `open_store`; it is also an async context manager that closes itself.

    Each method runs its whole transaction as one function in a worker thread (`_threads.py`);
    concurrent `enqueue_avatar_job` calls share one transaction (`GroupCommit`), and so do
    concurrent `complete_avatar_jobs` calls.
    """

    def __init__(self, database: Database) -> None:
        self._database = database
        self._writer = database.writer
        self._reader = database.reader
        self._is_postgres = self._writer.is_postgres
        self._jobs = GroupCommit(self._writer, self._insert_jobs, max_batch=_MAX_JOB_BATCH)
        self._completions = GroupCommit(
            self._writer, self._complete_jobs, max_batch=_MAX_COMPLETION_BATCH
        )
        self._marks = GroupCommit(self._writer, self._mark_batch, max_batch=_MAX_MARK_BATCH)
        self._held_leases = {}

    @property
    def engines(self) -> tuple[SqlRunner, SqlRunner]:
        """The writer and reader runners, for adapters keeping their own tables in this database
        (`SqlImageStore`). The store still owns them: closing it stops them."""
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
        """Finish the queued work, then stop the threads and close the connections."""
        await self._database.aclose()

    async def _check_schema(self) -> None:
        try:
            revision = await self._reader.run(
                lambda conn: conn.execute(select(_alembic_version.c.version_num)).scalar()
            )
        except WagateError as exc:
            error = exc.__cause__ or exc
            cause = str(getattr(error, "orig", None) or error).splitlines()[0]
            message = f"cannot read the wagate schema ({cause}); run `wagate migrate`"
            raise RuntimeError(message) from error
        if revision is None:
            raise RuntimeError("the database has no wagate schema; run `wagate migrate`")
        if await anyio.to_thread.run_sync(is_outdated, revision):
            raise RuntimeError(f"database schema {revision} is outdated; run `wagate migrate`")

    # -- metadata ----------------------------------------------------------------------------

    async def get_meta(self, key: str) -> str | None:
        params = {"key": key}
        value = await self._reader.run(lambda conn: conn.execute(_GET_META, params).scalar())
        return None if value is None else str(value)

    async def set_meta(self, key: str, value: str) -> None:
        upsert = (postgresql.insert if self._is_postgres else sqlite.insert)(meta)
        statement = upsert.values(key=key, value=value).on_conflict_do_update(
            index_elements=[meta.c.key], set_={"value": value}
        )
        await self._writer.run(lambda conn: conn.execute(statement))

    # -- instances ---------------------------------------------------------------------------

    async def create_instance(self, instance: Instance) -> None:
        values = _rows.instance_values(instance)

        def create(conn: Connection) -> None:
            try:
                conn.execute(insert(instances).values(values))
            except IntegrityError as exc:
                if "phone" in str(exc.orig):
                    raise InstanceConflict(
                        f"an instance for phone {instance.phone} already exists"
                    ) from exc
                raise InstanceConflict(f"instance {instance.id} already exists") from exc
            conn.execute(insert(push_lanes).values(instance_id=instance.id))

        await self._writer.run(create)

    async def _fetch(
        self,
        query: Select[Any] | Prepared,
        convert: Callable[[_rows.Row], T],
        params: Mapping[str, Any] | None = None,
    ) -> list[T]:
        if isinstance(query, Prepared):
            prepared, values = query, params or {}
            return await self._reader.run(
                lambda conn: [convert(row) for row in prepared.mappings(conn, values)]
            )
        return await self._reader.run(
            lambda conn: [convert(row) for row in conn.execute(query, params).mappings()]
        )

    async def _fetch_one(
        self,
        query: Select[Any] | Prepared,
        convert: Callable[[_rows.Row], T],
        params: Mapping[str, Any] | None = None,
    ) -> T | None:
        found = await self._fetch(query, convert, params)
        return found[0] if found else None

    async def get_instance(self, instance_id: int) -> Instance | None:
        params = {"instance_id": instance_id}
        return await self._fetch_one(_GET_INSTANCE, _rows.instance_from_row, params)

    async def get_instance_by_phone(self, phone: str) -> Instance | None:
        if not phone:
            return None
        params = {"phone": phone}
        return await self._fetch_one(_GET_INSTANCE_BY_PHONE, _rows.instance_from_row, params)

    async def list_instances(self) -> list[Instance]:
        query = select(instances).order_by(instances.c.id)
        return await self._fetch(query, _rows.instance_from_row)

    async def delete_instance(self, instance_id: int) -> bool:
        # Jobs, notifications and the lane go through ON DELETE CASCADE (foreign_keys=ON on SQLite).
        statement = delete(instances).where(instances.c.id == instance_id)
        deleted: int = await self._writer.run(lambda conn: conn.execute(statement).rowcount)
        return deleted > 0

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
            changes["push_mode"] = settings.push_mode
        if not changes:
            return await self.get_instance(instance_id)
        statement = (
            update(instances)
            .where(instances.c.id == instance_id)
            .values(changes)
            .returning(*instances.c)
        )
        is_postgres = self._is_postgres

        def change(conn: Connection) -> Instance | None:
            row = conn.execute(statement).mappings().first()
            if row is None:
                return None
            if row["push_mode"]:
                ensure_lane(conn, instance_id, is_postgres=is_postgres)
            return _rows.instance_from_row(row)

        return await self._writer.run(change)

    # -- sandbox world -----------------------------------------------------------------------

    async def merge_sandbox_world(
        self,
        accounts: Sequence[SandboxAccount],
        groups: Sequence[SandboxGroup],
        faults: Sequence[SandboxFault],
    ) -> None:
        """Insert or replace by key, all in one transaction. Raises `WorldFileError` if an
        account's lid belongs to another account."""
        await self._writer.run(lambda conn: merge_world(conn, accounts, groups, faults))

    async def get_sandbox_account(self, phone: str) -> SandboxAccount | None:
        params = {"key": phone}
        return await self._fetch_one(_GET_SANDBOX_ACCOUNT, _rows.account_from_row, params)

    async def get_sandbox_account_by_lid(self, lid: str) -> SandboxAccount | None:
        params = {"key": lid}
        return await self._fetch_one(_GET_SANDBOX_ACCOUNT_BY_LID, _rows.account_from_row, params)

    async def get_sandbox_group(self, chat_id: str) -> SandboxGroup | None:
        params = {"key": chat_id}
        return await self._fetch_one(_GET_SANDBOX_GROUP, _rows.group_from_row, params)

    async def get_sandbox_fault(self, chat_id: str) -> SandboxFault | None:
        params = {"key": chat_id}
        return await self._fetch_one(_GET_SANDBOX_FAULT, _rows.fault_from_row, params)

    async def get_sandbox_rows(self, chats: Sequence[ChatId]) -> SandboxRows:
        ids = sorted({str(chat) for chat in chats})
        phones = sorted({chat.user for chat in chats if chat.kind is ChatKind.PERSONAL})
        lids = sorted({chat.user for chat in chats if chat.kind is ChatKind.LID})
        groups = sorted({str(chat) for chat in chats if chat.kind is ChatKind.GROUP})

        def read(conn: Connection) -> SandboxRows:
            def rows(query: Prepared, keys: list[str]) -> list[_rows.Row]:
                if not keys:
                    return []
                return query.mappings(conn, {"keys": keys})

            by_phone = [_rows.account_from_row(r) for r in rows(_SANDBOX_ACCOUNTS_OF, phones)]
            by_lid = [_rows.account_from_row(r) for r in rows(_SANDBOX_ACCOUNTS_BY_LID_OF, lids)]
            return SandboxRows(
                faults={
                    f.chat_id: f for f in map(_rows.fault_from_row, rows(_SANDBOX_FAULTS_OF, ids))
                },
                accounts={a.phone: a for a in by_phone},
                accounts_by_lid={a.lid: a for a in by_lid if a.lid is not None},
                groups={
                    g.chat_id: g
                    for g in map(_rows.group_from_row, rows(_SANDBOX_GROUPS_OF, groups))
                },
            )

        return await self._reader.run(read)

    async def list_sandbox_accounts(self) -> list[SandboxAccount]:
        query = select(sandbox_accounts).order_by(sandbox_accounts.c.phone)
        return await self._fetch(query, _rows.account_from_row)

    async def list_sandbox_groups(self) -> list[SandboxGroup]:
        query = select(sandbox_groups).order_by(sandbox_groups.c.chat_id)
        return await self._fetch(query, _rows.group_from_row)

    # -- avatar jobs -------------------------------------------------------------------------

    async def enqueue_avatar_job(self, instance_id: int, chat_id: str) -> AvatarJob:
        """Record the job durably. Raises `UnknownInstance` if the instance is gone.

        Concurrent calls are written together, in call order, by one transaction (group
        commit): each returns once that transaction has committed.
        """
        return await self._jobs.submit((instance_id, chat_id))

    def _insert_jobs(self, requests: Sequence[_JobRequest]) -> list[AvatarJob | BaseException]:
        """Write one batch of `enqueue_avatar_job` calls; runs in a writer thread. The jobs are
        stamped with the time their batch is written: one timestamp to convert per batch, not
        one per job (a conversion cost more than the rest of a job's row)."""
        postgres = self._is_postgres
        created_at = queues.now_utc()

        def insert_batch(conn: Connection) -> list[AvatarJob]:
            try:
                return queues.insert_jobs(conn, requests, created_at, postgres=postgres)
            except IntegrityError as exc:
                raise UnknownInstance(f"instance {requests[0][0]} does not exist") from exc

        try:
            return list(self._writer.call(insert_batch))
        except UnknownInstance:
            if len(requests) == 1:
                raise
        # Some job's instance is gone, and a multi-row INSERT does not say whose: write the
        # batch again job by job, in order, each in its own transaction, so that only those
        # callers fail. (Other errors, such as a lost connection, fail the whole batch.)
        outcomes: list[AvatarJob | BaseException] = []
        for request in requests:
            try:
                outcomes.extend(self._insert_jobs([request]))
            except Exception as exc:
                outcomes.append(exc)
        return outcomes

    async def claim_avatar_jobs(
        self, limit: int, lease: timedelta, *, per_instance: int
    ) -> list[AvatarJob]:
        """Claim the jobs of up to `limit` instances, oldest instance queue first, among those
        with no live claim: each one's oldest `per_instance` jobs (all, if it has fewer), every
        one with `claimed_until = now + lease`; returned by id. No two claimers (processes or
        PostgreSQL nodes) ever hold jobs of one instance at the same time."""
        if limit <= 0 or per_instance <= 0:
            return []
        lock_rows = self._is_postgres
        return await self._writer.run(
            lambda conn: queues.claim_jobs(conn, limit, per_instance, lease, lock_rows=lock_rows)
        )

    async def complete_avatar_jobs(
        self, completions: Sequence[_Completion]
    ) -> list[Notification | None]:
        """In one transaction, for each (job, notification body) in order: remove the job and
        queue its notification, receipt ids growing in list order; its notification, or None,
        changing nothing for it, if the job is gone (another worker took it over after this
        one's lease expired and completed it first, or its instance was deleted). So exactly one
        notification per job is ever queued.

        Concurrent calls are written together, in call order, by one transaction (group
        commit); each returns once that transaction has committed.
        """
        if not completions:
            return []
        outcome = await self._completions.submit(_CompletionCall(list(completions), None))
        return outcome.notifications

    async def complete_and_claim_avatar_jobs(
        self, completions: Sequence[_Completion], lease: timedelta, *, per_instance: int
    ) -> tuple[list[Notification | None], list[AvatarJob]]:
        """`complete_avatar_jobs`, then, in the same transaction, `claim_avatar_jobs(1, lease,
        per_instance=per_instance)`: the completions and the next batch (oldest instance queue
        first, possibly the same instance's next jobs; empty if none is claimable)."""
        call = _CompletionCall(list(completions), (lease, per_instance))
        outcome = await self._completions.submit(call)
        return outcome.notifications, outcome.next_jobs

    def _complete_jobs(self, calls: Sequence[_CompletionCall]) -> list[_CompletionOutcome]:
        """Write one batch of completion calls, and their claims, in one transaction; runs in a
        writer thread. Each call that asks for a claim gets at most one instance's batch."""
        flat = [completion for call in calls for completion in call.completions]
        postgres = self._is_postgres

        def write(conn: Connection) -> tuple[list[Notification | None], list[list[AvatarJob]]]:
            done = queues.complete_jobs(conn, flat, postgres=postgres)
            claimed: list[list[AvatarJob]] = [[] for _ in calls]
            wanting: dict[tuple[timedelta, int], list[int]] = {}
            for position, call in enumerate(calls):
                if call.claim is not None:
                    wanting.setdefault(call.claim, []).append(position)
            for (lease, per_instance), positions in wanting.items():
                jobs = queues.claim_jobs(
                    conn, len(positions), per_instance, lease, lock_rows=postgres
                )
                by_instance: dict[int, list[AvatarJob]] = {}
                for job in jobs:
                    by_instance.setdefault(job.instance_id, []).append(job)
                for position, batch in zip(positions, by_instance.values(), strict=False):
                    claimed[position] = batch
            return done, claimed

        done, claimed = self._writer.call(write)
        outcomes: list[_CompletionOutcome] = []
        start = 0
        for call, next_jobs in zip(calls, claimed, strict=True):
            end = start + len(call.completions)
            outcomes.append(_CompletionOutcome(done[start:end], next_jobs))
            start = end
        return outcomes

    async def complete_avatar_job(
        self, job: AvatarJob, notification_body: Mapping[str, Any]
    ) -> Notification:
        """`complete_avatar_jobs` for one job; LookupError, changing nothing, if it is gone."""
        [done] = await self.complete_avatar_jobs([(job, notification_body)])
        if done is None:
            raise LookupError(f"avatar job {job.id} is no longer queued")
        return done

    async def release_avatar_jobs(self, jobs: Sequence[AvatarJob]) -> None:
        if jobs:
            await self._writer.run(lambda conn: queues.release_jobs(conn, jobs))

    async def count_avatar_jobs(self, instance_id: int | None = None) -> int:
        query = select(func.count()).select_from(avatar_jobs)
        if instance_id is not None:
            query = query.where(avatar_jobs.c.instance_id == instance_id)
        return await self._reader.run(lambda conn: int(conn.execute(query).scalar_one()))

    async def release_leases(self) -> None:

        def release(conn: Connection) -> None:
            conn.execute(update(avatar_jobs).values(claimed_until=None))
            conn.execute(update(push_lanes).values(lease_until=None))

        await self._writer.run(release)
        self._held_leases.clear()

    # -- notifications -----------------------------------------------------------------------

    async def head_notification(self, instance_id: int) -> Notification | None:
        found = await self.list_notifications(instance_id, NotificationStatus.QUEUED, limit=1)
        return found[0] if found else None

    async def delete_notification(self, instance_id: int, receipt_id: int) -> bool:
        """Delete a queued notification; False if the instance has no such queued one."""
        params = {"instance_id": instance_id, "receipt_id": receipt_id}
        deleted: int = await self._writer.run(
            lambda conn: _DELETE_QUEUED_NOTIFICATION.rowcount(conn, params)
        )
        return deleted > 0

    async def delete_notifications(self, receipt_ids: Mapping[int, Collection[int]]) -> int:
        """Delete queued notifications, named per instance id, in one transaction; returns how
        many were there (ids that are not queued, or not that instance's, are skipped)."""

        def delete_all(conn: Connection) -> int:
            return sum(
                conn.execute(
                    _DELETE_QUEUED_NOTIFICATIONS,
                    {"instance_id": instance_id, "receipt_ids": list(ids)},
                ).rowcount
                for instance_id, ids in receipt_ids.items()
                if ids
            )

        deleted: int = await self._writer.run(delete_all)
        return deleted

    async def count_notifications(self, instance_id: int) -> int:
        """How many notifications are queued (dead letters are not counted)."""
        params = {"instance_id": instance_id}
        return await self._reader.run(
            lambda conn: int(conn.execute(_COUNT_QUEUED_NOTIFICATIONS, params).scalar_one())
        )

    async def clear_notifications(self, instance_id: int) -> int:
        """Delete the queued notifications (not the dead letters); returns how many."""
        statement = delete(notifications).where(
            notifications.c.instance_id == instance_id, notifications.c.status == queues.QUEUED
        )
        cleared: int = await self._writer.run(lambda conn: conn.execute(statement).rowcount)
        return cleared

    async def dead_letter_expired(self, created_before: datetime) -> int:
        statement = (
            update(notifications)
            .where(
                notifications.c.status == queues.QUEUED, notifications.c.created_at < created_before
            )
            .values(status=queues.DEAD)
        )
        expired: int = await self._writer.run(lambda conn: conn.execute(statement).rowcount)
        return expired

    async def delete_dead_letters(self, created_before: datetime, limit: int) -> int:
        oldest = (
            select(notifications.c.receipt_id)
            .where(
                notifications.c.status == queues.DEAD, notifications.c.created_at < created_before
            )
            .order_by(notifications.c.created_at)
            .limit(limit)
        )
        statement = delete(notifications).where(
            notifications.c.receipt_id.in_(oldest.scalar_subquery())
        )
        deleted: int = await self._writer.run(lambda conn: conn.execute(statement).rowcount)
        return deleted

    async def list_notifications(
        self, instance_id: int, status: NotificationStatus, limit: int = 100
    ) -> list[Notification]:
        """The instance's notifications with this status, oldest (lowest receipt id) first."""
        params = {"instance_id": instance_id, "status": status.value, "limit": limit}
        return await self._reader.run(
            lambda conn: [
                _rows.notification_from_values(row)
                for row in _LIST_NOTIFICATIONS.rows(conn, params)
            ]
        )

    async def replay_dead(self, instance_id: int, receipt_ids: Sequence[int] | None = None) -> int:
        """Queue dead notifications again at the tail, in their old order, under new receipt ids;
        body and webhook id are kept, attempts start over. Unknown or queued ids are ignored."""
        if receipt_ids is not None and not receipt_ids:
            return 0
        return await self._writer.run(
            lambda conn: queues.replay_dead(conn, instance_id, receipt_ids)
        )
