"""The `Store` behaviour suite, run against SQLite and PostgreSQL (`store` in tests/conftest.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest
from sqlalchemy import Connection

from wagate.core.errors import InstanceConflict, UnknownInstance, WorldFileError
from wagate.core.model import (
    AvatarJob,
    FaultKind,
    Instance,
    InstanceSettings,
    InstanceState,
    Notification,
    NotificationStatus,
    PrivacyLevel,
    SandboxAccount,
    SandboxFault,
    SandboxGroup,
)
from wagate.core.ports import Store
from wagate.stores import SqlStore, open_store, queues

pytestmark = pytest.mark.anyio

LONG = timedelta(minutes=5)
BATCH = 64  # the jobs per instance a claim may take, as the avatar worker's default
EXPIRED = timedelta(0)  # claimed_until = now: no longer live for any later claim


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def claimed(jobs: Iterable[AvatarJob], attempts: int = 1) -> list[AvatarJob]:
    """The jobs as a claim returns them: with the claims made of each so far."""
    return [job._replace(attempts=attempts) for job in jobs]


def make_instance(instance_id: int = 1101000001, phone: str = "11001234567") -> Instance:
    return Instance(
        id=instance_id,
        api_token="t" * 50,
        engine="sandbox",
        phone=phone,
        state=InstanceState.AUTHORIZED,
        webhook_signing_secret="whsec_c2VjcmV0",
        settings=InstanceSettings(),
        created_at=datetime(2026, 5, 20, 12, 30, 15, 123456, tzinfo=UTC),
    )


async def queue(store: Store, instance_id: int, n: int) -> list[int]:
    """Queue n notifications through jobs (the only way in); returns their receipt ids."""
    ids = []
    for i in range(n):
        job = await store.enqueue_avatar_job(instance_id, f"7900000000{i}@c.us")
        [done] = await store.complete_avatar_jobs([(job, {"n": i})])
        assert done is not None
        ids.append(done.receipt_id)
    return ids


def test_sql_store_implements_the_port() -> None:
    store: Store = SqlStore.__new__(SqlStore)  # mypy checks the protocol here
    assert isinstance(store, SqlStore)


# -- metadata ---------------------------------------------------------------------------------


async def test_meta_round_trip(store: SqlStore) -> None:
    assert await store.get_meta("public_url") is None
    await store.set_meta("public_url", "http://a")
    await store.set_meta("public_url", "http://b")
    assert await store.get_meta("public_url") == "http://b"


# -- instances --------------------------------------------------------------------------------


async def test_create_and_read_instance(store: SqlStore) -> None:
    instance = make_instance()
    await store.create_instance(instance)
    assert await store.get_instance(instance.id) == instance
    assert await store.get_instance_by_phone(instance.phone) == instance
    assert await store.get_instance(1101000002) is None
    assert await store.get_instance_by_phone("19999999999") is None
    loaded = await store.get_instance(instance.id)
    assert loaded is not None
    assert loaded.created_at.tzinfo is not None
    assert loaded.created_at.utcoffset() == timedelta(0)


async def test_list_instances_in_id_order(store: SqlStore) -> None:
    await store.create_instance(make_instance(1101000002, "11001234562"))
    await store.create_instance(make_instance(1101000001, "11001234561"))
    assert [i.id for i in await store.list_instances()] == [1101000001, 1101000002]


async def test_duplicate_id_or_phone_raises_conflict(store: SqlStore) -> None:
    await store.create_instance(make_instance(1101000001, "11001234567"))
    with pytest.raises(InstanceConflict, match="1101000001"):
        await store.create_instance(make_instance(1101000001, "11001234568"))
    with pytest.raises(InstanceConflict, match="phone"):
        await store.create_instance(make_instance(1101000002, "11001234567"))
    assert len(await store.list_instances()) == 1


async def test_instances_without_phone_do_not_conflict(store: SqlStore) -> None:
    await store.create_instance(make_instance(1101000001, ""))
    await store.create_instance(make_instance(1101000002, ""))
    assert [i.phone for i in await store.list_instances()] == ["", ""]
    assert await store.get_instance_by_phone("") is None


async def test_settings_round_trip_through_update(store: SqlStore) -> None:
    instance = make_instance()
    await store.create_instance(instance)
    settings = instance.settings.with_changes(
        {
            "webhook_url": "https://example.org/hook",
            "webhook_url_token": "Bearer x",
            "delay_send_messages_ms": 500,
            "flags": {"outgoingWebhook": True, "incomingWebhook": False},
        }
    )
    updated = await store.update_instance(instance.id, settings=settings)
    assert updated is not None
    assert updated.settings == settings
    reloaded = await store.get_instance(instance.id)
    assert reloaded is not None
    assert reloaded.settings == settings
    assert dict(reloaded.settings.flags) == {"outgoingWebhook": True, "incomingWebhook": False}


async def test_update_instance_fields(store: SqlStore) -> None:
    instance = make_instance()
    await store.create_instance(instance)
    updated = await store.update_instance(
        instance.id,
        api_token="n" * 50,
        webhook_signing_secret="whsec_bmV3",
        state=InstanceState.BLOCKED,
    )
    assert updated == Instance(
        id=instance.id,
        api_token="n" * 50,
        engine=instance.engine,
        phone=instance.phone,
        state=InstanceState.BLOCKED,
        webhook_signing_secret="whsec_bmV3",
        settings=instance.settings,
        created_at=instance.created_at,
    )
    assert await store.get_instance(instance.id) == updated
    assert await store.update_instance(instance.id) == updated
    assert await store.update_instance(1101000009, state=InstanceState.AUTHORIZED) is None


async def test_delete_instance_cascades(store: SqlStore) -> None:
    keep, gone = make_instance(1101000001, "11001234561"), make_instance(1101000002, "11001234562")
    await store.create_instance(keep)
    await store.create_instance(gone)
    for instance in (keep, gone):
        await queue(store, instance.id, 2)
        await store.enqueue_avatar_job(instance.id, "79001234567@c.us")
    [dead] = await queue(store, gone.id, 1)
    await store.dead_letter_expired(datetime.now(UTC) + timedelta(seconds=1))

    assert await store.delete_instance(gone.id) is True
    assert await store.delete_instance(gone.id) is False
    assert await store.get_instance(gone.id) is None
    assert await store.count_avatar_jobs(gone.id) == 0
    assert await store.list_notifications(gone.id, NotificationStatus.DEAD) == []
    assert await store.count_avatar_jobs(keep.id) == 1
    assert len(await store.list_notifications(keep.id, NotificationStatus.DEAD)) == 2
    assert dead > 0


# -- sandbox world ----------------------------------------------------------------------------


async def test_sandbox_world_round_trip(store: SqlStore) -> None:
    alice = SandboxAccount(
        phone="79001234567",
        name="Alice",
        avatar_digest="a" * 64,
        avatar_privacy=PrivacyLevel.CONTACTS,
        contacts=("79001234568", "79001234569"),
        lid="123456789012",
    )
    bob = SandboxAccount(phone="79001234568", on_whatsapp=False)
    group = SandboxGroup(
        chat_id="120363000000000001@g.us",
        subject="Team",
        avatar_digest="b" * 64,
        participants=(alice.phone, bob.phone),
    )
    fault = SandboxFault(chat_id="79001234570@c.us", kind=FaultKind.TIMEOUT)
    await store.merge_sandbox_world([bob, alice], [group], [fault])

    assert await store.get_sandbox_account(alice.phone) == alice
    assert await store.get_sandbox_account_by_lid("123456789012") == alice
    assert await store.get_sandbox_account_by_lid("999") is None
    assert await store.get_sandbox_account("79000000000") is None
    assert await store.get_sandbox_group(group.chat_id) == group
    assert await store.get_sandbox_group("1@g.us") is None
    assert await store.get_sandbox_fault(fault.chat_id) == fault
    assert await store.get_sandbox_fault("1@c.us") is None
    assert await store.list_sandbox_accounts() == [alice, bob]
    assert await store.list_sandbox_groups() == [group]


async def test_sandbox_merge_replaces_by_key(store: SqlStore) -> None:
    old = SandboxAccount(phone="79001234567", name="Old", avatar_digest="a" * 64, lid="1234567")
    other = SandboxAccount(phone="79001234568", name="Other")
    await store.merge_sandbox_world(
        [old, other],
        [SandboxGroup(chat_id="1@g.us", subject="Old")],
        [SandboxFault(chat_id="x@c.us", kind=FaultKind.TIMEOUT)],
    )
    new = SandboxAccount(phone="79001234567", name="New")  # listed without avatar and lid
    await store.merge_sandbox_world(
        [new],
        [SandboxGroup(chat_id="1@g.us", subject="New")],
        [SandboxFault(chat_id="x@c.us", kind=FaultKind.RATE_LIMITED)],
    )
    assert await store.list_sandbox_accounts() == [new, other]
    assert await store.get_sandbox_account_by_lid("1234567") is None
    assert await store.list_sandbox_groups() == [SandboxGroup(chat_id="1@g.us", subject="New")]
    fault = await store.get_sandbox_fault("x@c.us")
    assert fault is not None
    assert fault.kind is FaultKind.RATE_LIMITED


async def test_sandbox_merge_last_duplicate_wins(store: SqlStore) -> None:
    first, second = SandboxAccount(phone="7900", name="1"), SandboxAccount(phone="7900", name="2")
    await store.merge_sandbox_world([first, second], [], [])
    assert await store.list_sandbox_accounts() == [second]


async def test_sandbox_lid_taken_by_another_account(store: SqlStore) -> None:
    await store.merge_sandbox_world([SandboxAccount(phone="7901", lid="1234567")], [], [])
    with pytest.raises(WorldFileError):
        await store.merge_sandbox_world([SandboxAccount(phone="7902", lid="1234567")], [], [])
    assert [a.phone for a in await store.list_sandbox_accounts()] == ["7901"]


# -- avatar jobs ------------------------------------------------------------------------------


async def test_enqueue_and_count_jobs(store: SqlStore) -> None:
    await store.create_instance(make_instance(1101000001, "11001234561"))
    await store.create_instance(make_instance(1101000002, "11001234562"))
    first = await store.enqueue_avatar_job(1101000001, "79001234567@c.us")
    second = await store.enqueue_avatar_job(1101000002, "79001234568@c.us")
    assert second.id > first.id
    assert first.chat_id == "79001234567@c.us"
    assert first.created_at.tzinfo is not None
    assert await store.count_avatar_jobs() == 2
    assert await store.count_avatar_jobs(1101000001) == 1
    assert await store.count_avatar_jobs(1101000009) == 0


async def test_enqueue_for_unknown_instance(store: SqlStore) -> None:
    with pytest.raises(UnknownInstance):
        await store.enqueue_avatar_job(1101000009, "79001234567@c.us")


async def test_claim_one_live_claim_per_instance_oldest_first(store: SqlStore) -> None:
    await store.create_instance(make_instance(1101000001, "11001234561"))
    await store.create_instance(make_instance(1101000002, "11001234562"))
    a1 = await store.enqueue_avatar_job(1101000001, "a1@c.us")
    b1 = await store.enqueue_avatar_job(1101000002, "b1@c.us")
    a2 = await store.enqueue_avatar_job(1101000001, "a2@c.us")

    assert await store.claim_avatar_jobs(10, LONG, per_instance=1) == claimed([a1, b1])
    # Both instances have a live claim: a2 waits, however many jobs a claim may take.
    assert await store.claim_avatar_jobs(10, LONG, per_instance=BATCH) == []

    await store.complete_avatar_job(a1, {"n": 1})
    assert await store.claim_avatar_jobs(10, LONG, per_instance=1) == claimed([a2])
    assert await store.claim_avatar_jobs(10, LONG, per_instance=1) == []


async def test_a_released_claim_is_claimable_at_once_unless_claimed_again(
    store: SqlStore,
) -> None:
    await store.create_instance(make_instance())
    for i in range(3):
        await store.enqueue_avatar_job(1101000001, f"a{i}@c.us")
    first = await store.claim_avatar_jobs(1, LONG, per_instance=BATCH)
    assert len(first) == 3
    assert await store.claim_avatar_jobs(1, LONG, per_instance=BATCH) == []

    await store.release_avatar_jobs(first)
    second = await store.claim_avatar_jobs(1, LONG, per_instance=BATCH)
    assert [(job.id, job.attempts) for job in second] == [(job.id, 2) for job in first]
    # The first claim released again, late: the second one holds the jobs and keeps them.
    await store.release_avatar_jobs(first)
    assert await store.claim_avatar_jobs(1, LONG, per_instance=BATCH) == []
    # A completed job is gone whatever is released.
    await store.complete_avatar_job(second[0], {"n": 1})
    await store.release_avatar_jobs(second)
    assert [job.id for job in await store.claim_avatar_jobs(1, LONG, per_instance=BATCH)] == [
        job.id for job in second[1:]
    ]


async def test_claim_takes_each_instances_oldest_batch(store: SqlStore) -> None:
    await store.create_instance(make_instance(1101000001, "11001234561"))
    await store.create_instance(make_instance(1101000002, "11001234562"))
    order = [1, 2, 1, 1, 2, 1, 2, 1]  # the instance (last digit) of each job, in order
    jobs = [
        await store.enqueue_avatar_job(1101000000 + n, f"{i}@c.us") for i, n in enumerate(order)
    ]
    a = [job for job in jobs if job.instance_id == 1101000001]
    b = [job for job in jobs if job.instance_id == 1101000002]

    claimed_jobs = await store.claim_avatar_jobs(10, LONG, per_instance=3)
    assert claimed_jobs == claimed(sorted([*a[:3], *b[:3]], key=lambda job: job.id))
    # Nothing more of either instance while its batch is claimed, not even jobs queued later.
    late = await store.enqueue_avatar_job(1101000002, "late@c.us")
    assert await store.claim_avatar_jobs(10, LONG, per_instance=3) == []

    done = await store.complete_avatar_jobs([(job, {"job": job.id}) for job in a[:3]])
    assert all(notification is not None for notification in done)
    assert await store.claim_avatar_jobs(10, LONG, per_instance=3) == claimed(a[3:])  # the 2 left
    assert await store.claim_avatar_jobs(10, LONG, per_instance=3) == []

    await store.complete_avatar_jobs([(job, {}) for job in b[:3]])
    assert await store.claim_avatar_jobs(10, LONG, per_instance=3) == claimed([late])


async def test_a_completion_claims_the_next_batch_in_its_transaction(store: SqlStore) -> None:
    await store.create_instance(make_instance(1101000001, "11001234561"))
    await store.create_instance(make_instance(1101000002, "11001234562"))
    order = [1, 1, 2, 2, 1, 1]  # the instance (last digit) of each job, in order
    jobs = [
        await store.enqueue_avatar_job(1101000000 + n, f"{i}@c.us") for i, n in enumerate(order)
    ]
    a = [job for job in jobs if job.instance_id == 1101000001]
    b = [job for job in jobs if job.instance_id == 1101000002]
    assert await store.claim_avatar_jobs(1, LONG, per_instance=2) == claimed(a[:2])

    # B's queue is now the oldest: the completion of A's batch hands over B's.
    done, next_jobs = await store.complete_and_claim_avatar_jobs(
        [(job, {"job": job.id}) for job in a[:2]], LONG, per_instance=2
    )
    assert [n.body if n else None for n in done] == [{"job": a[0].id}, {"job": a[1].id}]
    assert next_jobs == claimed(b)
    assert await store.count_avatar_jobs() == 4  # completed jobs are gone, claimed ones stay
    # Claimed: nothing of B for anyone else. A's rest (a[2], a[3]) is still free.
    assert await store.claim_avatar_jobs(10, LONG, per_instance=BATCH) == claimed(a[2:])

    # Nothing claimable left: the completion claims nothing, and a gone job is reported.
    done, next_jobs = await store.complete_and_claim_avatar_jobs(
        [(b[0], {}), (b[0], {}), (b[1], {})], LONG, per_instance=2
    )
    assert [n is not None for n in done] == [True, False, True]
    assert next_jobs == []


async def test_concurrent_completions_each_claim_a_different_instance(store: SqlStore) -> None:
    ids = [1101000001, 1101000002, 1101000003]
    for n, instance_id in enumerate(ids):
        await store.create_instance(make_instance(instance_id, f"1100123456{n}"))
    jobs = [await store.enqueue_avatar_job(i, f"{i}-{k}@c.us") for k in range(2) for i in ids]
    first = await store.claim_avatar_jobs(1, LONG, per_instance=1)
    second = await store.claim_avatar_jobs(1, LONG, per_instance=1)
    assert [first[0].instance_id, second[0].instance_id] == ids[:2]

    results = await asyncio.gather(
        store.complete_and_claim_avatar_jobs([(first[0], {})], LONG, per_instance=BATCH),
        store.complete_and_claim_avatar_jobs([(second[0], {})], LONG, per_instance=BATCH),
    )
    claimed = [next_jobs for _, next_jobs in results]
    # Whether or not the two were written together, no instance is handed to both.
    assert all(len({job.instance_id for job in batch}) == 1 for batch in claimed if batch)
    handed = [batch[0].instance_id for batch in claimed if batch]
    assert len(handed) == len(set(handed)) == 2
    assert sorted(job.id for batch in claimed for job in batch) == sorted(
        job.id
        for job in jobs
        if job.id not in (first[0].id, second[0].id) and job.instance_id in handed
    )


async def test_claim_limit_takes_the_oldest_queue(store: SqlStore) -> None:
    await store.create_instance(make_instance(1101000001, "11001234561"))
    await store.create_instance(make_instance(1101000002, "11001234562"))
    b1 = await store.enqueue_avatar_job(1101000002, "b1@c.us")
    a1 = await store.enqueue_avatar_job(1101000001, "a1@c.us")
    b2 = await store.enqueue_avatar_job(1101000002, "b2@c.us")
    assert await store.claim_avatar_jobs(1, LONG, per_instance=BATCH) == claimed([b1, b2])
    assert await store.claim_avatar_jobs(1, LONG, per_instance=BATCH) == claimed([a1])
    assert await store.claim_avatar_jobs(0, LONG, per_instance=BATCH) == []


async def test_claim_finds_the_instances_with_jobs_among_many_without(store: SqlStore) -> None:
    # Instances with jobs between, before and after ones without: the claim seeks the
    # instances that have jobs rather than asking every instance.
    for k in range(1, 31):
        await store.create_instance(make_instance(1101000000 + k, f"110012345{k:02d}"))
    late = await store.enqueue_avatar_job(1101000030, "late@c.us")
    early = await store.enqueue_avatar_job(1101000001, "early@c.us")
    middle = await store.enqueue_avatar_job(1101000017, "middle@c.us")
    assert await store.claim_avatar_jobs(2, LONG, per_instance=BATCH) == claimed([late, early])
    assert await store.claim_avatar_jobs(10, LONG, per_instance=BATCH) == claimed([middle])
    assert await store.claim_avatar_jobs(10, LONG, per_instance=BATCH) == []


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    ("candidates", "params"),
    [
        # now, limit, offset
        (queues._FREE_CLAIMABLE_INSTANCES, ("2026-01-01", 1, 0)),
        # window, its offset, now, limit, offset
        (queues._FREE_WINDOW_INSTANCES, (64, 0, "2026-01-01", 1, 0)),
    ],
    ids=["walk", "window"],
)
async def test_claim_candidates_do_not_scan_the_instances_on_sqlite(
    store: SqlStore, candidates: Any, params: tuple[object, ...]
) -> None:
    writer, _ = store.engines

    def plan(conn: Connection) -> list[str]:
        sql = candidates.sqlite_sql(conn.dialect)
        driver = conn.connection.dbapi_connection
        assert driver is not None
        rows = driver.execute(f"EXPLAIN QUERY PLAN {sql}", params).fetchall()
        return [str(row[3]) for row in rows]

    steps = await writer.run(plan)
    assert "SEARCH instances USING INTEGER PRIMARY KEY (rowid=?)" in steps
    assert not [step for step in steps if step.startswith("SCAN instances")]


def claim_in_window(
    store: SqlStore, limit: int, window: int
) -> Coroutine[Any, Any, list[AvatarJob]]:
    writer, _ = store.engines
    lock_rows = writer.is_postgres
    return writer.run(
        lambda conn: queues.claim_jobs(conn, limit, BATCH, LONG, lock_rows=lock_rows, window=window)
    )


async def test_claim_in_a_window_of_the_oldest_jobs_stays_oldest_queue_first(
    store: SqlStore,
) -> None:
    # Jobs in id order: a1 b1 a2 c1 d1. A window of two jobs holds instances a and b.
    for k in range(1, 5):
        await store.create_instance(make_instance(1101000000 + k, f"110012345{k:02d}"))
    a1 = await store.enqueue_avatar_job(1101000001, "a1@c.us")
    b1 = await store.enqueue_avatar_job(1101000002, "b1@c.us")
    a2 = await store.enqueue_avatar_job(1101000001, "a2@c.us")
    c1 = await store.enqueue_avatar_job(1101000003, "c1@c.us")
    d1 = await store.enqueue_avatar_job(1101000004, "d1@c.us")
    assert await claim_in_window(store, 1, window=2) == claimed([a1, a2])
    # The window now holds one claimable instance (b) for two asked: the walk over every
    # instance with jobs answers, still oldest queue first.
    assert await claim_in_window(store, 2, window=2) == claimed([b1, c1])
    assert await claim_in_window(store, 5, window=2) == claimed([d1])
    assert await claim_in_window(store, 5, window=2) == []


async def test_claim_skips_the_walk_over_every_instance_when_the_window_suffices(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    walks: list[int] = []
    for name in ("_FREE_CLAIMABLE_INSTANCES", "_LOCK_CLAIMABLE_INSTANCES"):
        walk = getattr(queues, name)

        class CountedWalk:
            def __init__(self, walk: Any = walk) -> None:
                self._walk = walk

            def rows(self, conn: Connection, params: Any) -> list[tuple[Any, ...]]:
                walks.append(params["limit"])
                return list(self._walk.rows(conn, params))

        monkeypatch.setattr(queues, name, CountedWalk())
    for k in range(1, 41):
        await store.create_instance(make_instance(1101000000 + k, f"110012345{k:02d}"))
    jobs = [await store.enqueue_avatar_job(1101000000 + k, f"{k}@c.us") for k in range(1, 41)]
    assert await store.claim_avatar_jobs(8, LONG, per_instance=BATCH) == claimed(jobs[:8])
    assert await store.claim_avatar_jobs(8, LONG, per_instance=BATCH) == claimed(jobs[8:16])
    assert walks == []
    # Fewer claimable instances than asked for: the walk makes sure there are no more.
    assert await store.claim_avatar_jobs(30, LONG, per_instance=BATCH) == claimed(jobs[16:])
    assert walks == [30]


async def test_expired_lease_lets_another_claim_take_over(store: SqlStore) -> None:
    await store.create_instance(make_instance())
    first = await store.enqueue_avatar_job(1101000001, "a1@c.us")
    await store.enqueue_avatar_job(1101000001, "a2@c.us")

    assert await store.claim_avatar_jobs(10, EXPIRED, per_instance=1) == claimed([first])  # dies
    await anyio.sleep(0.002)  # the clock moves past claimed_until
    # Still the oldest, and counted as claimed twice.
    assert await store.claim_avatar_jobs(10, LONG, per_instance=1) == claimed([first], 2)
    assert await store.claim_avatar_jobs(10, LONG, per_instance=1) == []

    done = await store.complete_avatar_job(first, {"by": "second worker"})
    with pytest.raises(LookupError):
        await store.complete_avatar_job(first, {"by": "first worker"})
    queued = await store.list_notifications(1101000001, NotificationStatus.QUEUED)
    assert queued == [done]


async def test_expired_batch_is_taken_over_whole(store: SqlStore) -> None:
    await store.create_instance(make_instance())
    jobs = [await store.enqueue_avatar_job(1101000001, f"{i}@c.us") for i in range(5)]

    batch = await store.claim_avatar_jobs(10, EXPIRED, per_instance=3)  # this worker "dies"
    assert batch == claimed(jobs[:3])
    await anyio.sleep(0.002)  # the clock moves past claimed_until
    assert await store.claim_avatar_jobs(10, LONG, per_instance=3) == claimed(jobs[:3], 2)
    assert await store.claim_avatar_jobs(10, LONG, per_instance=3) == []

    second = await store.complete_avatar_jobs([(job, {"by": "second"}) for job in batch])
    # The first worker was only slow: its completion finds every job gone and queues nothing.
    assert await store.complete_avatar_jobs([(job, {"by": "first"}) for job in batch]) == [
        None,
        None,
        None,
    ]
    queued = await store.list_notifications(1101000001, NotificationStatus.QUEUED)
    assert queued == second
    assert await store.claim_avatar_jobs(10, LONG, per_instance=3) == claimed(jobs[3:])


async def test_complete_job_queues_notification_atomically(store: SqlStore) -> None:
    await store.create_instance(make_instance())
    jobs = [await store.enqueue_avatar_job(1101000001, f"{i}@c.us") for i in range(3)]
    body = {"typeWebhook": "avatarInfo", "avatarInfo": {"urlAvatar": "", "available": False}}
    done = [await store.complete_avatar_job(job, body) for job in jobs]

    assert await store.count_avatar_jobs() == 0
    assert [n.receipt_id for n in done] == sorted(n.receipt_id for n in done)
    assert len({n.receipt_id for n in done}) == 3
    assert all(n.receipt_id > 0 for n in done)
    first = done[0]
    assert first.body == body
    assert first.status is NotificationStatus.QUEUED
    assert first.instance_id == 1101000001
    assert first.attempts == 0
    assert first.last_error == ""
    assert first.webhook_id.startswith("msg_")
    assert len({n.webhook_id for n in done}) == 3
    assert await store.head_notification(1101000001) == first


async def test_complete_jobs_queues_in_list_order(store: SqlStore) -> None:
    await store.create_instance(make_instance(1101000001, "11001234561"))
    await store.create_instance(make_instance(1101000002, "11001234562"))
    jobs = [
        await store.enqueue_avatar_job(1101000001 + i % 2, f"{i}@c.us") for i in range(BATCH + 6)
    ]

    done = await store.complete_avatar_jobs([(job, {"job": job.id}) for job in jobs])

    assert await store.count_avatar_jobs() == 0
    receipts = [n.receipt_id for n in done if n is not None]
    assert len(receipts) == len(jobs)
    assert receipts == sorted(receipts)
    assert len({n.webhook_id for n in done if n is not None}) == len(jobs)
    for instance_id in (1101000001, 1101000002):
        queued = await store.list_notifications(instance_id, NotificationStatus.QUEUED, limit=200)
        assert queued == [n for n in done if n is not None and n.instance_id == instance_id]
        assert [n.body["job"] for n in queued] == [
            job.id for job in jobs if job.instance_id == instance_id
        ]


async def test_queued_texts_come_back_exactly_as_written(store: SqlStore) -> None:
    # On PostgreSQL a batch's rows travel as one JSON text and are unpacked by the server.
    await store.create_instance(make_instance())
    chats = ["1@c.us", "120363043968066561@g.us", "12345678@lid"]
    jobs = [await store.enqueue_avatar_job(1101000001, chat) for chat in chats]
    tricky = ['quote " backslash \\ slash / tab \t newline \n', "é ü 漢字 😀", "\u2028 \u001f"]
    done = await store.complete_avatar_jobs(
        [
            (job, {"text": text, "n": i})
            for i, (job, text) in enumerate(zip(jobs, tricky, strict=True))
        ]
    )
    assert [job.chat_id for job in jobs] == chats
    queued = await store.list_notifications(1101000001, NotificationStatus.QUEUED)
    assert queued == done
    assert [n.body for n in queued] == [{"text": text, "n": i} for i, text in enumerate(tricky)]


async def test_complete_jobs_skips_only_the_jobs_already_gone(store: SqlStore) -> None:
    await store.create_instance(make_instance())
    jobs = [await store.enqueue_avatar_job(1101000001, f"{i}@c.us") for i in range(4)]
    assert await store.claim_avatar_jobs(1, LONG, per_instance=BATCH) == claimed(jobs)
    early = await store.complete_avatar_job(jobs[1], {"n": "early"})

    # jobs[2] listed twice (a batch taken over in the same process): completed once.
    completions = [(job, {"n": i}) for i, job in enumerate([*jobs, jobs[2]])]
    done = await store.complete_avatar_jobs(completions)

    assert done[1] is None
    assert done[4] is None
    kept = [done[0], done[2], done[3]]
    assert all(n is not None for n in kept)
    assert [n.body["n"] for n in kept if n is not None] == [0, 2, 3]
    receipts = [early.receipt_id] + [n.receipt_id for n in kept if n is not None]
    assert receipts == sorted(receipts)
    queued = await store.list_notifications(1101000001, NotificationStatus.QUEUED)
    assert queued == [early, *kept]
    assert await store.count_avatar_jobs() == 0
    assert await store.complete_avatar_jobs([]) == []


async def test_concurrent_completions_share_a_transaction_and_keep_their_order(
    store: SqlStore,
) -> None:
    """Calls from several instances at once (group commit): each gets its own outcomes."""
    by_instance: dict[int, list[AvatarJob]] = {}
    for n in range(1, 6):
        instance_id = 1101000000 + n
        await store.create_instance(make_instance(instance_id, f"110012345{n:02d}"))
        by_instance[instance_id] = [
            await store.enqueue_avatar_job(instance_id, f"{i}@c.us") for i in range(7)
        ]
    results: dict[int, list[Notification | None]] = {}

    async def complete(instance_id: int) -> None:
        jobs = by_instance[instance_id]
        results[instance_id] = await store.complete_avatar_jobs(
            [(job, {"job": job.id}) for job in jobs]
        )

    async with anyio.create_task_group() as tg:
        for instance_id in by_instance:
            tg.start_soon(complete, instance_id)

    for instance_id, jobs in by_instance.items():
        done = results[instance_id]
        assert [n.body["job"] if n else None for n in done] == [job.id for job in jobs]
        assert all(n is not None and n.instance_id == instance_id for n in done)
        queued = await store.list_notifications(instance_id, NotificationStatus.QUEUED)
        assert queued == done


async def test_complete_vanished_job_changes_nothing(store: SqlStore) -> None:
    await store.create_instance(make_instance())
    ghost = AvatarJob(
        id=424242, instance_id=1101000001, chat_id="x@c.us", created_at=datetime.now(UTC)
    )
    with pytest.raises(LookupError):
        await store.complete_avatar_job(ghost, {"n": 1})
    assert await store.complete_avatar_jobs([(ghost, {"n": 2})]) == [None]
    assert await store.count_notifications(1101000001) == 0


async def test_concurrent_claimers_never_share_an_instance(database_url: str) -> None:
    """Two stores (two processes or nodes) claiming batches at once: each job is claimed exactly
    once, and no instance's jobs are ever held by two claimers at the same time."""
    instance_ids = [1101000000 + n for n in range(1, 21)]
    async with open_store(database_url) as one, open_store(database_url) as two:
        for n, instance_id in enumerate(instance_ids, start=1):
            await one.create_instance(make_instance(instance_id, f"110012345{n:02d}"))
            for i in range(10):
                await one.enqueue_avatar_job(instance_id, f"{i}@c.us")
        claimed: list[AvatarJob] = []
        holding: dict[int, int] = {}  # instance id -> the claimer holding a batch of it

        async def claimer(number: int, store: SqlStore) -> None:
            while await store.count_avatar_jobs():
                jobs = await store.claim_avatar_jobs(3, LONG, per_instance=4)
                claimed.extend(jobs)
                batches: dict[int, list[AvatarJob]] = {}
                for job in jobs:
                    batches.setdefault(job.instance_id, []).append(job)
                for instance_id in batches:
                    # Its jobs stay claimed until the completion below commits, so whoever
                    # holds it now claimed it while this claim was live.
                    assert instance_id not in holding, (instance_id, holding[instance_id], number)
                    holding[instance_id] = number
                await anyio.sleep(0)  # let the other claimers run while these are held
                for instance_id, batch in batches.items():
                    del holding[instance_id]  # before the COMMIT that lets others claim it
                    done = await store.complete_avatar_jobs(
                        [(job, {"job": job.id}) for job in batch]
                    )
                    assert None not in done
                await anyio.sleep(0)

        async with anyio.create_task_group() as tg:
            for number, store in enumerate((one, two, one, two)):
                tg.start_soon(claimer, number, store)

        assert sorted(job.id for job in claimed) == sorted({job.id for job in claimed})
        assert len(claimed) == 200
        for instance_id in instance_ids:
            bodies = await one.list_notifications(instance_id, NotificationStatus.QUEUED)
            jobs = [b.body["job"] for b in bodies]
            assert len(jobs) == 10
            assert jobs == sorted(jobs)  # per-instance order kept


# -- notifications ----------------------------------------------------------------------------


async def test_head_delete_count_clear(store: SqlStore) -> None:
    await store.create_instance(make_instance(1101000001, "11001234561"))
    await store.create_instance(make_instance(1101000002, "11001234562"))
    assert await store.head_notification(1101000001) is None
    ids = await queue(store, 1101000001, 3)
    [other] = await queue(store, 1101000002, 1)

    assert await store.count_notifications(1101000001) == 3
    head = await store.head_notification(1101000001)
    assert head is not None
    assert head.receipt_id == ids[0]
    assert head.body == {"n": 0}

    assert await store.delete_notification(1101000001, ids[0]) is True
    assert await store.delete_notification(1101000001, ids[0]) is False
    assert await store.delete_notification(1101000001, other) is False  # another instance's
    assert await store.delete_notification(1101000001, 999999) is False
    head = await store.head_notification(1101000001)
    assert head is not None
    assert head.receipt_id == ids[1]

    assert await store.clear_notifications(1101000001) == 2
    assert await store.count_notifications(1101000001) == 0
    assert await store.head_notification(1101000001) is None
    assert await store.count_notifications(1101000002) == 1


async def test_delete_notifications_per_instance_in_one_call(store: SqlStore) -> None:
    await store.create_instance(make_instance())
    await store.create_instance(make_instance(1101000002, phone="11001234568"))
    mine = await queue(store, 1101000001, 3)
    theirs = await queue(store, 1101000002, 2)
    deleted = await store.delete_notifications(
        # Another instance's id under this one, and an unknown id, are skipped.
        {1101000001: [mine[0], mine[2], theirs[0], 999999], 1101000002: [theirs[1]]}
    )
    assert deleted == 3
    assert [
        n.receipt_id for n in await store.list_notifications(1101000001, NotificationStatus.QUEUED)
    ] == [mine[1]]
    assert [
        n.receipt_id for n in await store.list_notifications(1101000002, NotificationStatus.QUEUED)
    ] == [theirs[0]]
    assert await store.delete_notifications({1101000001: [mine[0]], 1101000002: []}) == 0


async def test_receipt_ids_grow_after_deleting_the_newest(store: SqlStore) -> None:
    await store.create_instance(make_instance())
    [first] = await queue(store, 1101000001, 1)
    assert await store.delete_notification(1101000001, first)
    [second] = await queue(store, 1101000001, 1)
    assert second > first


async def test_dead_letter_expired(store: SqlStore) -> None:
    await store.create_instance(make_instance())
    old = await queue(store, 1101000001, 2)
    cutoff = datetime.now(UTC)
    await anyio.sleep(0.002)
    new = await queue(store, 1101000001, 1)

    assert await store.dead_letter_expired(cutoff) == 2
    assert await store.dead_letter_expired(cutoff) == 0
    assert await store.count_notifications(1101000001) == 1
    head = await store.head_notification(1101000001)
    assert head is not None
    assert head.receipt_id == new[0]
    dead = await store.list_notifications(1101000001, NotificationStatus.DEAD)
    assert [n.receipt_id for n in dead] == old
    assert all(n.status is NotificationStatus.DEAD for n in dead)
    # Dead letters are neither deleted by receipt id nor cleared.
    assert await store.delete_notification(1101000001, old[0]) is False
    assert await store.clear_notifications(1101000001) == 1
    assert len(await store.list_notifications(1101000001, NotificationStatus.DEAD)) == 2


async def test_delete_dead_letters_takes_old_dead_ones_only_oldest_first(store: SqlStore) -> None:
    await store.create_instance(make_instance())
    old = await queue(store, 1101000001, 3)
    assert await store.dead_letter_expired(datetime.now(UTC) + timedelta(seconds=1)) == 3
    cutoff = datetime.now(UTC)
    await anyio.sleep(0.002)
    newer = await queue(store, 1101000001, 2)
    assert await store.dead_letter_expired(datetime.now(UTC) + timedelta(seconds=1)) == 2
    [still_queued] = await queue(store, 1101000001, 1)

    assert await store.delete_dead_letters(cutoff, limit=2) == 2
    dead = await store.list_notifications(1101000001, NotificationStatus.DEAD)
    assert [n.receipt_id for n in dead] == [old[2], *newer]
    assert await store.delete_dead_letters(cutoff, limit=2) == 1
    assert await store.delete_dead_letters(cutoff, limit=2) == 0
    # Dead letters queued after the cutoff and queued notifications of any age stay.
    dead = await store.list_notifications(1101000001, NotificationStatus.DEAD)
    assert [n.receipt_id for n in dead] == newer
    assert await store.delete_dead_letters(datetime.now(UTC) + timedelta(seconds=1), 10) == 2
    head = await store.head_notification(1101000001)
    assert head is not None and head.receipt_id == still_queued


async def test_list_notifications_order_and_limit(store: SqlStore) -> None:
    await store.create_instance(make_instance())
    ids = await queue(store, 1101000001, 5)
    listed = await store.list_notifications(1101000001, NotificationStatus.QUEUED, limit=3)
    assert [n.receipt_id for n in listed] == ids[:3]
    assert [n.body for n in listed] == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert await store.list_notifications(1101000001, NotificationStatus.DEAD) == []


async def test_replay_dead_all(store: SqlStore) -> None:
    await store.create_instance(make_instance())
    await queue(store, 1101000001, 3)
    await store.dead_letter_expired(datetime.now(UTC) + timedelta(seconds=1))
    [tail] = await queue(store, 1101000001, 1)
    dead = await store.list_notifications(1101000001, NotificationStatus.DEAD)

    assert await store.replay_dead(1101000001) == 3
    assert await store.list_notifications(1101000001, NotificationStatus.DEAD) == []
    queued = await store.list_notifications(1101000001, NotificationStatus.QUEUED)
    assert queued[0].receipt_id == tail
    replayed = queued[1:]
    assert [n.body for n in replayed] == [n.body for n in dead]
    assert [n.webhook_id for n in replayed] == [n.webhook_id for n in dead]
    assert all(n.receipt_id > tail for n in replayed)
    assert [n.receipt_id for n in replayed] == sorted(n.receipt_id for n in replayed)
    assert all(n.attempts == 0 and n.last_error == "" for n in replayed)
    assert all(n.status is NotificationStatus.QUEUED for n in replayed)
    assert await store.replay_dead(1101000001) == 0


async def test_replay_dead_named_ids(store: SqlStore) -> None:
    await store.create_instance(make_instance(1101000001, "11001234561"))
    await store.create_instance(make_instance(1101000002, "11001234562"))
    ids = await queue(store, 1101000001, 3)
    [other] = await queue(store, 1101000002, 1)
    await store.dead_letter_expired(datetime.now(UTC) + timedelta(seconds=1))

    assert await store.replay_dead(1101000001, [ids[2], 999999, other]) == 1
    assert await store.replay_dead(1101000001, []) == 0
    dead = await store.list_notifications(1101000001, NotificationStatus.DEAD)
    assert [n.receipt_id for n in dead] == ids[:2]
    [queued] = await store.list_notifications(1101000001, NotificationStatus.QUEUED)
    assert queued.body == {"n": 2}
    assert queued.receipt_id > other
    assert len(await store.list_notifications(1101000002, NotificationStatus.DEAD)) == 1


async def test_release_leases_frees_claims_and_lanes(store: SqlStore) -> None:
    instance = make_instance()
    await store.create_instance(instance)
    await store.update_instance(
        instance.id, settings=instance.settings.with_changes({"webhook_url": "http://r.test/"})
    )
    job = await store.enqueue_avatar_job(instance.id, "11001234568@c.us")
    await queue(store, instance.id, 1)
    hour = timedelta(hours=1)
    assert [j.id for j in await store.claim_avatar_jobs(10, hour, per_instance=BATCH)] == [job.id]
    assert await store.claim_push_lanes(10, hour) == [instance.id]
    assert await store.claim_avatar_jobs(10, hour, per_instance=BATCH) == []
    assert await store.claim_push_lanes(10, hour) == []

    await store.release_leases()

    assert [j.id for j in await store.claim_avatar_jobs(10, hour, per_instance=BATCH)] == [job.id]
    assert await store.claim_push_lanes(10, hour) == [instance.id]
