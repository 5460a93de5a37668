"""Merging a sandbox world into its tables (`SqlStore.merge_sandbox_world`)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Column, Connection, Table, delete, insert
from sqlalchemy.exc import IntegrityError

from wagate.core.errors import WorldFileError
from wagate.core.model import SandboxAccount, SandboxFault, SandboxGroup
from wagate.stores import _rows
from wagate.stores.schema import sandbox_accounts, sandbox_faults, sandbox_groups

# Below SQLite's and PostgreSQL's limits on bound parameters per statement.
_CHUNK = 500


def _replace(
    conn: Connection, table: Table, key: Column[Any], rows: Iterable[dict[str, Any]]
) -> None:
    # Last one wins when a key repeats, as it would with one upsert after another.
    by_key = {row[key.name]: row for row in rows}
    keys = list(by_key)
    for start in range(0, len(keys), _CHUNK):
        conn.execute(delete(table).where(key.in_(keys[start : start + _CHUNK])))
    if by_key:
        conn.execute(insert(table), list(by_key.values()))


def merge_world(
    conn: Connection,
    accounts: Sequence[SandboxAccount],
    groups: Sequence[SandboxGroup],
    faults: Sequence[SandboxFault],
) -> None:
    """Replace accounts by phone, groups and faults by chat id, inside the caller's transaction.

    Delete-then-insert rather than an upsert: a replaced row takes none of its old values (an
    account listed without an avatar has none afterwards). Raises `WorldFileError` when an
    account's lid is already another account's.
    """
    try:
        _replace(
            conn,
            sandbox_accounts,
            sandbox_accounts.c.phone,
            (_rows.account_values(account) for account in accounts),
        )
    except IntegrityError as exc:
        raise WorldFileError("a lid is given to two different accounts") from exc
    _replace(
        conn,
        sandbox_groups,
        sandbox_groups.c.chat_id,
        (_rows.group_values(group) for group in groups),
    )
    _replace(
        conn,
        sandbox_faults,
        sandbox_faults.c.chat_id,
        ({"chat_id": fault.chat_id, "kind": fault.kind.value} for fault in faults),
    )
