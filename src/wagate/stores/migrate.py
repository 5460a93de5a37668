"""Apply the schema migrations, under a lock, idempotently.

`wagate serve` and `wagate migrate` call `migrate` at every start. Alembic runs from code: the
migration scripts ship inside the package and no alembic.ini is needed.
"""

from __future__ import annotations

import functools
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, create_engine, text

from wagate.stores._connect import install_sqlite_hooks, sqlite_path, sync_url

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

# pg_advisory_lock key: any constant unlikely to be used by another application on the database.
_PG_LOCK_KEY = 0x7761676174650001  # "wagate" + 1


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic configuration pointing at the packaged scripts, optionally bound to a
    connection (env.py then runs on it instead of opening its own)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@functools.cache
def head_revision() -> str:
    """The newest migration this code knows."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def is_outdated(revision: str | None) -> bool:
    """Whether a database at `revision` (None: never migrated) lacks migrations this code has.

    A revision this code does not know was written by a newer release; the schema is then
    treated as compatible (migrations only add), so a rolling upgrade can run both releases.
    """
    if revision is None:
        return True
    scripts = ScriptDirectory.from_config(alembic_config())
    known = {script.revision for script in scripts.walk_revisions()}
    return revision in known and revision != head_revision()


def migrate(database_url: str) -> None:
    """Bring the database at `database_url` (sync form, `sqlite:///…` or `postgresql://…`) to the
    newest schema. Blocking: async callers run it in a thread.

    Safe at every start and when several processes call it at once: on PostgreSQL a session
    advisory lock serialises migrators; on SQLite the whole upgrade runs in one BEGIN IMMEDIATE
    transaction, which holds the database's write lock. The loser of the race waits, then finds
    the schema current and does nothing. Creates the SQLite file's directory if needed.
    Raises ValueError for an unsupported URL; driver errors propagate (the CLI reports them).
    """
    url = sync_url(database_url)
    path = sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, hide_parameters=True)
        install_sqlite_hooks(engine, immediate=True)
        try:
            with engine.connect() as connection, connection.begin():
                # Alembic sees the open transaction as external and runs inside it.
                command.upgrade(alembic_config(connection), "head")
        finally:
            engine.dispose()
        return
    engine = create_engine(url, hide_parameters=True)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _PG_LOCK_KEY})
            connection.commit()
            try:
                with connection.begin():
                    command.upgrade(alembic_config(connection), "head")
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _PG_LOCK_KEY})
                connection.commit()
    finally:
        engine.dispose()
