"""Bulk setup of an SQLite database through SQLAlchemy, bypassing the HTTP edge and the workers.

Setup is never measured; it only has to be fast and to write rows exactly as the store would:
instance rows come from wagate's own row conversion (`instance_values`, `account_values`) and
are inserted with executemany into the declared tables; notification rows are generated inside
SQLite by one INSERT ... SELECT over a recursive CTE (a million rows in seconds).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from common import Instance

if TYPE_CHECKING:
    from sqlalchemy import Engine

_BODY_SQL = (
    '\'{"typeWebhook":"avatarInfo","instanceData":{"idInstance":\' || ids.id || '
    '\',"wid":"11001234567@c.us","typeInstance":"whatsapp"},"timestamp":\' || :ts || '
    '\',"avatarInfo":{"chatId":"\' || (11000000000 + n.i) || '
    ":tail"
)
_TAIL = '@c.us","urlAvatar":"","available":false}}'


def _engine(database_url: str) -> Engine:
    from sqlalchemy import create_engine

    return create_engine(database_url)


def _insert_round_robin(
    database_url: str,
    instance_ids: Sequence[int],
    total: int,
    into: str,
    values: str,
    **params: object,
) -> float:
    """`INSERT INTO <into> SELECT <values>` for rows i = 0 .. total - 1, generated inside SQLite
    by a recursive CTE: `values` may use `n.i` and `ids.id`, the instance
    instance_ids[i % len(instance_ids)]. Returns the seconds it took."""
    from sqlalchemy import text

    started = time.monotonic()
    engine = _engine(database_url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TEMP TABLE ids (k INTEGER PRIMARY KEY, id INTEGER)"))
        conn.execute(
            text("INSERT INTO ids (k, id) VALUES (:k, :id)"),
            [{"k": k, "id": i} for k, i in enumerate(instance_ids)],
        )
        conn.execute(
            text(
                "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < :last) "
                f"INSERT INTO {into} SELECT {values} FROM n JOIN ids ON ids.k = n.i % :count"
            ),
            {"last": total - 1, "count": len(instance_ids), **params},
        )
    engine.dispose()
    return time.monotonic() - started


def fill_notifications(database_url: str, instance_ids: Sequence[int], total: int) -> float:
    """Queue `total` avatarInfo notifications spread round-robin over `instance_ids` (receipt ids
    interleave across instances, as real traffic would). Notification i carries the distinct
    chatId `<11000000000 + i>@c.us`. Returns the seconds it took."""
    now = datetime.now(UTC).replace(tzinfo=None)  # the store keeps naive UTC on SQLite
    return _insert_round_robin(
        database_url,
        instance_ids,
        total,
        "notifications (instance_id, body, status, webhook_id, created_at, attempts, last_error)",
        f"ids.id, {_BODY_SQL}, 'queued', 'msg_' || lower(hex(randomblob(16))), :created, 0, ''",
        ts=int(now.replace(tzinfo=UTC).timestamp()),
        created=now.isoformat(sep=" "),
        tail=_TAIL,
    )


def queue_avatar_jobs(database_url: str, instance_ids: Sequence[int], total: int) -> float:
    """Queue `total` getAvatarAsync jobs spread round-robin over `instance_ids`, unclaimed, as
    an acknowledgement writes them (job i asks for the chat `<12000000000 + i>@c.us`). Returns
    the seconds it took."""
    now = datetime.now(UTC).replace(tzinfo=None)
    return _insert_round_robin(
        database_url,
        instance_ids,
        total,
        "avatar_jobs (instance_id, chat_id, created_at, claimed_until)",
        "ids.id, (12000000000 + n.i) || '@c.us', :created, NULL",
        created=now.isoformat(sep=" "),
    )


def create_instances(
    database_url: str, count: int, first_id: int = 1_150_000_000
) -> list[Instance]:
    """`count` sandbox instances (ids first_id..), each with its push lane and sandbox account,
    written as the store writes them."""
    from wagate.core.instances import new_api_token, new_signing_secret
    from wagate.core.model import Instance as WagateInstance
    from wagate.core.model import InstanceSettings, InstanceState, SandboxAccount
    from wagate.stores._rows import account_values, instance_values
    from wagate.stores.schema import instances, push_lanes, sandbox_accounts

    now = datetime.now(UTC)
    made = [
        WagateInstance(
            id=first_id + k,
            api_token=new_api_token(),
            engine="sandbox",
            phone=f"1190{k:07d}",
            state=InstanceState.AUTHORIZED,
            webhook_signing_secret=new_signing_secret(),
            settings=InstanceSettings(),
            created_at=now,
        )
        for k in range(count)
    ]
    engine = _engine(database_url)
    with engine.begin() as conn:
        conn.execute(
            sandbox_accounts.insert(),
            [account_values(SandboxAccount(phone=i.phone)) for i in made],
        )
        conn.execute(instances.insert(), [instance_values(i) for i in made])
        conn.execute(push_lanes.insert(), [{"instance_id": i.id} for i in made])
    engine.dispose()
    return [Instance(i.id, i.api_token) for i in made]
