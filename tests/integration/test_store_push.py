"""Push-delivery lanes and queue operations of the `Store`, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import anyio
import pytest
import sqlalchemy as sa
from alembic import command

from tests.integration.test_store import queue
from wagate.core.model import Instance, InstanceSettings, InstanceState, NotificationStatus
from wagate.core.ports import Store
from wagate.stores import SqlStore, migrate, open_store, push
from wagate.stores._connect import sync_url
from wagate.stores.migrate import alembic_config
from wagate.stores.schema import UtcDateTime

pytestmark = pytest.mark.anyio

LONG = timedelta(minutes=5)
EXPIRED = timedelta(0)  # lease_until = now: no longer live for any later claim
HOOK = InstanceSettings(webhook_url="https://hooks.example/wagate")
A, B, C = 1101000001, 1101000002, 1101000003


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def make_instance(instance_id: int, settings: InstanceSettings = HOOK) -> Instance:
    return Instance(
        id=instance_id,
        api_token="t" * 50,
        engine="sandbox",
        phone=f"1100{instance_id % 10_000_000:07d}",
        state=InstanceState.AUTHORIZED,
        webhook_signing_secret="whsec_c2VjcmV0",
        settings=settings,
        created_at=datetime(2026, 5, 20, 12, 30, 15, 123456, tzinfo=UTC),
    )


async def add(store: Store, *instance_ids: int, settings: InstanceSettings = HOOK) -> None:
    for instance_id in instance_ids:
        await store.create_instance(make_instance(instance_id, settings))


async def fail_head(store: Store, instance_id: int, retry_at: datetime) -> None:
    head = await store.head_notification(instance_id)
    assert head is not None
    await store.record_delivery_failure(instance_id, head.receipt_id, "HTTP 500", retry_at)


# -- claiming ---------------------------------------------------------------------------------


async def test_only_push_mode_instances_with_queued_notifications_are_claimed(
    store: SqlStore,
) -> None:
    await add(store, A, B)
    await add(store, C, settings=InstanceSettings())  # polling
    await queue(store, A, 1)
    await queue(store, C, 1)
    assert await store.claim_push_lanes(10, LONG) == [A]  # B has nothing queued, C polls
    assert await store.claim_push_lanes(0, LONG) == []


async def test_dead_letters_alone_do_not_make_a_lane_claimable(store: SqlStore) -> None:
    await add(store, A)
    await queue(store, A, 2)
    await store.dead_letter_expired(datetime.now(UTC) + timedelta(seconds=1))
    assert await store.claim_push_lanes(10, LONG) == []
    assert await store.next_push_due() is None


async def test_live_lease_blocks_a_second_claim_expired_one_does_not(store: SqlStore) -> None:
    await add(store, A)
    await queue(store, A, 2)
    assert await store.claim_push_lanes(10, EXPIRED) == [A]  # this dispatcher "dies"
    await anyio.sleep(0.002)
    assert await store.claim_push_lanes(10, LONG) == [A]  # taken over
    assert await store.claim_push_lanes(10, LONG) == []


async def test_release_and_renew(store: SqlStore) -> None:
    await add(store, A)
    await queue(store, A, 1)
    assert await store.claim_push_lanes(10, LONG) == [A]
    await store.release_push_lane(A)
    assert not await store.renew_push_lane(A, LONG)  # released: no longer held
    assert await store.claim_push_lanes(10, LONG) == [A]  # at once
    assert await store.renew_push_lane(A, EXPIRED)
    await anyio.sleep(0.002)
    assert await store.renew_push_lane(A, LONG)  # lapsed, but nobody took it: held again
    assert await store.claim_push_lanes(10, LONG) == []
    assert not await store.renew_push_lane(424242, LONG)  # unknown instance: no-op
    await store.release_push_lane(424242)


async def test_a_holder_whose_lease_was_taken_over_neither_renews_nor_frees_it(
    database_url: str,
) -> None:
    async with open_store(database_url) as stalled, open_store(database_url) as taker:
        await add(stalled, A)
        [first, second] = await queue(stalled, A, 2)
        assert await stalled.claim_push_lanes(10, EXPIRED) == [A]  # then it stalls
        await anyio.sleep(0.002)
        assert await taker.claim_push_lanes(10, LONG) == [A]  # the lease lapsed: taken over

        assert not await stalled.renew_push_lane(A, LONG)
        await stalled.release_push_lane(A, [first])  # what it delivered still leaves the queue
        assert [n.receipt_id for n in await taker.queued_notifications(A, 10)] == [second]
        assert await stalled.claim_push_lanes(10, LONG) == []  # the taker's lease stands
        assert await taker.renew_push_lane(A, LONG)
        await taker.release_push_lane(A)
        assert await stalled.claim_push_lanes(10, LONG) == [A]


async def test_claimed_lanes_come_oldest_due_head_first(store: SqlStore) -> None:
    await add(store, A, B, C)
    await queue(store, B, 1)
    [a1] = await queue(store, A, 1)
    await queue(store, C, 1)
    await queue(store, A, 1)
    assert await store.claim_push_lanes(1, LONG) == [B]
    assert await store.claim_push_lanes(10, LONG) == [A, C]
    for lane in (A, B, C):
        await store.release_push_lane(lane)

    assert await store.mark_delivered(A, [a1]) == 1  # A's head is now newer than C's
    assert await store.claim_push_lanes(10, LONG) == [B, C, A]
    for lane in (A, B, C):
        await store.release_push_lane(lane)

    await fail_head(store, B, datetime.now(UTC) + timedelta(hours=1))  # B not due: left out
    assert await store.claim_push_lanes(10, LONG) == [C, A]


async def test_a_head_not_due_blocks_its_lane_until_due(store: SqlStore) -> None:
    await add(store, A)
    await queue(store, A, 2)
    assert await store.claim_push_lanes(10, LONG) == [A]
    retry_at = datetime.now(UTC) + timedelta(hours=1)
    await fail_head(store, A, retry_at)
    await store.release_push_lane(A)

    assert await store.claim_push_lanes(10, LONG) == []  # later notifications wait too
    assert await store.next_push_due() == retry_at

    await fail_head(store, A, datetime.now(UTC) - timedelta(seconds=1))  # now due
    assert await store.claim_push_lanes(10, LONG) == [A]


async def test_a_claim_for_named_lanes_takes_only_those(store: SqlStore) -> None:
    await add(store, A, B, C)
    for lane in (A, B, C):
        await queue(store, lane, 1)
    assert await store.claim_push_lanes(10, LONG, named=[C, A]) == [A, C]  # oldest head first
    assert await store.claim_push_lanes(10, LONG, named=[A, B]) == [B]  # A is held
    assert await store.claim_push_lanes(10, LONG, named=[]) == []
    assert await store.claim_push_lanes(10, LONG, named=[424242]) == []
    await store.release_push_lane(A)
    assert await store.claim_push_lanes(10, LONG) == [A]


async def test_a_release_takes_the_delivered_off_the_queue(store: SqlStore) -> None:
    await add(store, A, B)
    a1, a2 = await queue(store, A, 2)
    [b1] = await queue(store, B, 1)
    assert await store.claim_push_lanes(10, LONG) == [A, B]
    await store.release_push_lane(A, [a1, b1])  # b1 is B's: left alone
    assert [n.receipt_id for n in await store.queued_notifications(A, 10)] == [a2]
    assert await store.count_notifications(B) == 1
    assert await store.claim_push_lanes(10, LONG) == [A]  # free again, B still held


async def test_next_push_due(store: SqlStore) -> None:
    assert await store.next_push_due() is None
    await add(store, A, B)
    await add(store, C, settings=InstanceSettings())
    await queue(store, C, 1)
    assert await store.next_push_due() is None  # polling instances never count

    await queue(store, A, 2)
    assert await store.next_push_due() is None  # never tried: claimable now, no retry time

    assert await store.claim_push_lanes(10, LONG) == [A]
    soon = datetime.now(UTC) + timedelta(minutes=1)
    await fail_head(store, A, soon)
    assert await store.next_push_due() is None  # held lanes do not count

    await queue(store, B, 1)
    later = datetime.now(UTC) + timedelta(hours=1)
    await fail_head(store, B, later)
    assert await store.next_push_due() == later
    await store.release_push_lane(A)
    assert await store.next_push_due() == soon  # the earliest of the free heads

    past = datetime.now(UTC) - timedelta(seconds=5)
    await fail_head(store, B, past)
    assert await store.next_push_due() == past  # due already: claim at once
    await store.update_instance(B, settings=InstanceSettings())
    assert await store.next_push_due() == soon  # B polls now


async def test_dead_letters_have_no_retry_due(store: SqlStore) -> None:
    await add(store, A)
    await queue(store, A, 1)
    retry_at = datetime.now(UTC) + timedelta(minutes=1)
    await fail_head(store, A, retry_at)
    assert await store.next_push_due() == retry_at
    assert await store.dead_letter_expired(datetime.now(UTC) + timedelta(days=1)) == 1
    assert await store.next_push_due() is None


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_idle_reads_seek_rather_than_scan_on_sqlite(store: SqlStore) -> None:
    # With 10,000 push-mode instances a read of every lane's head took ~4 ms; the dispatcher
    # makes these reads whenever it goes idle or a wake-up names instances.
    writer, _ = store.engines

    def plans(conn: sa.Connection) -> dict[str, list[str]]:
        driver = conn.connection.dbapi_connection
        assert driver is not None
        found = {}
        for name, statement in (
            ("next due", push._NEXT_PUSH_DUE),
            ("named claim", push._CANDIDATES[False, True]),
        ):
            sql = statement.sqlite_sql(conn.dialect).replace("__[POSTCOMPILE_named]", "?")
            rows = driver.execute(f"EXPLAIN QUERY PLAN {sql}", ("x",) * sql.count("?"))
            found[name] = [str(row[3]) for row in rows.fetchall()]
        return found

    found = await writer.run(plans)
    assert found["next due"][0].startswith(
        "SEARCH notifications USING INDEX ix_notifications_retry_due"
    ), found
    assert found["named claim"][0] == "SEARCH push_lanes USING INTEGER PRIMARY KEY (rowid=?)"
    for steps in found.values():
        assert not [step for step in steps if step.startswith("SCAN")], found


# -- delivery bookkeeping ---------------------------------------------------------------------


async def test_record_delivery_failure(store: SqlStore) -> None:
    await add(store, A, B)
    head, second = await queue(store, A, 2)
    [other] = await queue(store, B, 1)
    first_retry = datetime(2026, 5, 27, 10, 0, 0, 654321, tzinfo=UTC)
    second_retry = first_retry + timedelta(seconds=2)

    await store.record_delivery_failure(A, head, "connection refused", first_retry)
    await store.record_delivery_failure(A, head, "x" * 600, second_retry)
    await store.record_delivery_failure(A, other, "not A's", second_retry)  # ignored

    failed = await store.head_notification(A)
    assert failed is not None
    assert failed.receipt_id == head
    assert failed.attempts == 2
    assert failed.last_error == "x" * 500
    assert failed.next_attempt_at == second_retry
    listed = await store.list_notifications(A, NotificationStatus.QUEUED)
    assert listed[0] == failed
    nxt = listed[1]
    assert (nxt.receipt_id, nxt.attempts, nxt.next_attempt_at) == (second, 0, None)
    untouched = await store.head_notification(B)
    assert untouched is not None
    assert (untouched.attempts, untouched.last_error, untouched.next_attempt_at) == (0, "", None)


async def test_queued_notifications_order_limit_and_cursor(store: SqlStore) -> None:
    await add(store, A, B)
    ids = await queue(store, A, 5)
    await queue(store, B, 2)
    await store.dead_letter_expired(datetime.now(UTC) + timedelta(seconds=1))
    ids += await queue(store, A, 3)  # after the dead letters
    await queue(store, B, 1)

    listed = await store.queued_notifications(A, 100)
    assert [n.receipt_id for n in listed] == ids[5:]
    assert all(n.status is NotificationStatus.QUEUED and n.instance_id == A for n in listed)
    assert [n.body for n in listed] == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert [n.receipt_id for n in await store.queued_notifications(A, 2)] == ids[5:7]
    after = await store.queued_notifications(A, 100, after_receipt_id=ids[5])
    assert [n.receipt_id for n in after] == ids[6:]
    assert await store.queued_notifications(A, 100, after_receipt_id=ids[-1]) == []
    assert await store.queued_notifications(A, 0) == []


async def test_mark_delivered_removes_only_the_named_queued_ones(store: SqlStore) -> None:
    await add(store, A, B)
    dead = await queue(store, A, 2)
    await store.dead_letter_expired(datetime.now(UTC) + timedelta(seconds=1))
    ids = await queue(store, A, 4)
    [other] = await queue(store, B, 1)

    assert await store.mark_delivered(A, [ids[0], ids[1], dead[0], other, 999999]) == 2
    assert await store.mark_delivered(A, [ids[0]]) == 0
    assert await store.mark_delivered(A, []) == 0
    remaining = await store.queued_notifications(A, 100)
    assert [n.receipt_id for n in remaining] == ids[2:]
    assert len(await store.list_notifications(A, NotificationStatus.DEAD)) == 2
    assert await store.count_notifications(B) == 1


async def test_concurrent_marks_each_get_their_own_count(store: SqlStore) -> None:
    await add(store, A, B, C)
    ids = {instance: await queue(store, instance, 3) for instance in (A, B, C)}
    counts = await asyncio.gather(
        store.mark_delivered(A, ids[A][:2]),
        store.mark_delivered(B, ids[B]),
        store.mark_delivered(C, ids[A]),  # another instance's receipts: none of C's
        store.mark_delivered(A, ids[A][:1]),  # already taken by the first call, or about to be
    )
    assert list(counts[1:3]) == [3, 0]
    assert counts[0] + counts[3] == 2
    assert [n.receipt_id for n in await store.queued_notifications(A, 10)] == ids[A][2:]
    assert await store.count_notifications(B) == 0
    assert await store.count_notifications(C) == 3


async def test_a_batch_of_a_hundred(store: SqlStore) -> None:
    await add(store, A)
    ids = await queue(store, A, 120)
    batch = await store.queued_notifications(A, 100)
    assert [n.receipt_id for n in batch] == ids[:100]
    assert await store.mark_delivered(A, [n.receipt_id for n in batch]) == 100
    assert [n.receipt_id for n in await store.queued_notifications(A, 100)] == ids[100:]


# -- push mode follows the settings -----------------------------------------------------------


async def test_switching_the_webhook_url_off_and_on(store: SqlStore) -> None:
    await add(store, A)
    await queue(store, A, 1)
    await store.update_instance(A, settings=InstanceSettings())
    assert await store.claim_push_lanes(10, LONG) == []
    assert await store.next_push_due() is None
    await store.update_instance(A, state=InstanceState.BLOCKED)  # other fields keep the mode
    assert await store.claim_push_lanes(10, LONG) == []

    await store.update_instance(A, settings=HOOK)
    await store.update_instance(A, api_token="u" * 50)
    assert await store.claim_push_lanes(10, LONG) == [A]


async def test_an_instance_without_a_lane_gets_one_when_push_is_switched_on(
    store: SqlStore, database_url: str
) -> None:
    """An instance created by a release before 0002 during a rolling upgrade has no lane row."""
    await add(store, A, settings=InstanceSettings())
    await queue(store, A, 1)
    engine = sa.create_engine(sync_url(database_url))
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM push_lanes"))
    finally:
        engine.dispose()
    await store.update_instance(A, settings=HOOK)
    assert await store.claim_push_lanes(10, LONG) == [A]


async def test_deleting_an_instance_takes_its_lane(store: SqlStore) -> None:
    await add(store, A, B)
    await queue(store, A, 1)
    await queue(store, B, 1)
    assert await store.claim_push_lanes(10, LONG) == [A, B]
    assert await store.delete_instance(A)
    await store.renew_push_lane(A, LONG)
    await store.release_push_lane(B)
    assert await store.claim_push_lanes(10, LONG) == [B]


# -- several dispatchers ----------------------------------------------------------------------


async def test_concurrent_claimers_never_hold_one_lane(database_url: str) -> None:
    """Two stores (two processes or nodes) claiming in parallel, many times: a lane is never
    held twice at once, every notification is delivered once, in order per instance."""
    lanes = [1101000000 + n for n in range(1, 21)]
    async with open_store(database_url) as one, open_store(database_url) as two:
        await add(one, *lanes)
        for lane in lanes:
            await queue(one, lane, 3)
        held: set[int] = set()
        delivered: list[tuple[int, int]] = []

        async def dispatcher(store: SqlStore) -> None:
            while len(delivered) < 60:
                for lane in await store.claim_push_lanes(4, LONG):
                    assert lane not in held
                    held.add(lane)
                    [head] = await store.queued_notifications(lane, 1)
                    await anyio.sleep(0)  # let the other dispatchers claim meanwhile
                    assert await store.mark_delivered(lane, [head.receipt_id]) == 1
                    delivered.append((lane, head.receipt_id))
                    held.discard(lane)  # before the release commits: another may claim it
                    await store.release_push_lane(lane)
                await anyio.sleep(0)

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for store in (one, two, one, two):
                    tg.start_soon(dispatcher, store)

        assert len(delivered) == len(set(delivered)) == 60
        for lane in lanes:
            receipts = [receipt for owner, receipt in delivered if owner == lane]
            assert receipts == sorted(receipts)

        # Bursts of simultaneous claims on the same free lanes: disjoint results.
        for lane in lanes:
            await queue(one, lane, 1)

        async def claim(store: SqlStore, results: list[tuple[SqlStore, list[int]]]) -> None:
            results.append((store, await store.claim_push_lanes(3, LONG)))

        for _ in range(15):
            results: list[tuple[SqlStore, list[int]]] = []
            async with anyio.create_task_group() as tg:
                for i in range(10):
                    tg.start_soon(claim, (one, two)[i % 2], results)
            claimed = [lane for _, result in results for lane in result]
            assert len(claimed) == len(set(claimed))
            assert set(claimed) == set(lanes)  # 10 x 3 claims cover 20 lanes
            for holder, result in results:
                for lane in result:
                    await holder.release_push_lane(lane)  # only the holder frees its lease


# -- migration 0002 ---------------------------------------------------------------------------


async def test_migration_backfills_push_mode_and_lanes(empty_database_url: str) -> None:
    engine = sa.create_engine(sync_url(empty_database_url))
    instances = sa.table(
        "instances",
        *(sa.column(name) for name in ("id", "api_token", "engine", "phone", "state")),
        *(sa.column(name) for name in ("webhook_signing_secret", "settings")),
        sa.column("created_at", UtcDateTime),
    )
    notifications = sa.table(
        "notifications",
        *(sa.column(name) for name in ("instance_id", "body", "status", "webhook_id")),
        sa.column("created_at", UtcDateTime),
    )
    now = datetime.now(UTC)
    try:
        with engine.begin() as conn:
            command.upgrade(alembic_config(conn), "0001")
        with engine.begin() as conn:
            for instance_id, settings in (
                (A, '{"webhook_url":"https://hooks.example/a","flags":{}}'),
                (B, '{"webhook_url":"","flags":{}}'),
                (C, "{}"),
            ):
                conn.execute(
                    sa.insert(instances).values(
                        id=instance_id,
                        api_token="t" * 50,
                        engine="sandbox",
                        phone=None,
                        state="authorized",
                        webhook_signing_secret="whsec_c2VjcmV0",
                        settings=settings,
                        created_at=now,
                    )
                )
                conn.execute(
                    sa.insert(notifications).values(
                        instance_id=instance_id,
                        body="{}",
                        status="queued",
                        webhook_id=f"msg_{instance_id}",
                        created_at=now,
                    )
                )
    finally:
        engine.dispose()

    migrate(empty_database_url)
    async with open_store(empty_database_url) as store:
        assert await store.claim_push_lanes(10, LONG) == [A]
        assert await store.claim_push_lanes(10, LONG) == []
        await store.update_instance(B, settings=HOOK)  # B already has its (free) lane
        assert await store.claim_push_lanes(10, LONG) == [B]
        pushed = await store.get_instance(A)
        assert pushed is not None
        assert pushed.settings.webhook_url == "https://hooks.example/a"
