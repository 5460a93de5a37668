"""Database URLs and per-connection SQLite settings, shared by the store and the migrator."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError

# Writers wait this long for another process's write lock (the CLI, a migration) before failing.
SQLITE_BUSY_TIMEOUT_MS = 5000


def _parse(database_url: str) -> URL:
    url = make_url(database_url)
    backend = url.get_backend_name()
    if backend == "sqlite":
        if not url.database or url.database == ":memory:":
            raise ValueError("wagate needs an SQLite file, not an in-memory database")
    elif backend not in ("postgresql", "postgres"):
        raise ValueError(f"unsupported database URL scheme: {url.drivername!r}")
    return url


def sync_url(database_url: str) -> URL:
    """The database through a blocking driver (stdlib sqlite3, psycopg 3): `sqlite:///…` →
    `sqlite+pysqlite:///…`, `postgresql://…` → `postgresql+psycopg://…`."""
    url = _parse(database_url)
    if url.get_backend_name() == "sqlite":
        return url.set(drivername="sqlite+pysqlite")
    return url.set(drivername="postgresql+psycopg")


def sqlite_path(url: URL) -> Path | None:
    """The file behind an SQLite URL, or None for PostgreSQL."""
    if url.get_backend_name() != "sqlite":
        return None
    return Path(url.database or "")


def sqlite_file(database_url: str) -> Path | None:
    """`sqlite_path` of a database URL as settings hold it."""
    return sqlite_path(sync_url(database_url))


def _ensure_wal(cursor: Any) -> None:
    """WAL lets readers run while one writer commits. The mode is stored in the file, so only
    the first connection ever changes it; switching needs a lock that SQLite does not wait for
    through busy_timeout, so processes opening a new file together retry here."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode")
            if str(cursor.fetchone()[0]).lower() != "wal":
                cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            # Only ever reached while processes create the same new database file at once
            # (concurrent first migrations), so a short blocking pause is acceptable here.
            time.sleep(0.02)


def _pragmas(dbapi_connection: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys = ON")
        _ensure_wal(cursor)
        # NORMAL in WAL mode syncs the WAL at checkpoints, not at each commit. A commit is still
        # written to the WAL file (the OS page cache) before COMMIT returns, so a killed process
        # (kill -9, a crash) loses nothing: the kernel still holds the write and the next open
        # replays the WAL. Only an OS crash or power loss can drop the last commits, and those
        # are out of the guarantee wagate gives (SPEC 5: kill -9 and restart).
        cursor.execute("PRAGMA synchronous = NORMAL")
    finally:
        cursor.close()


def install_sqlite_hooks(engine: Engine, *, immediate: bool) -> None:
    """Apply the pragmas on every new connection and take over transaction control.

    With `immediate`, each transaction opens with BEGIN IMMEDIATE: it takes the write lock up
    front, so two writers queue on busy_timeout instead of one failing on a lock upgrade
    mid-transaction (SQLITE_BUSY without retry), and a read-then-write (claiming jobs) cannot
    interleave with another writer. Without it, the driver's default applies: a lone SELECT
    runs in its own implicit read transaction and needs no BEGIN/COMMIT round trips.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        if immediate:
            # The driver would otherwise open deferred transactions on its own before DML.
            dbapi_connection.isolation_level = None
        _pragmas(dbapi_connection)

    if immediate:

        @event.listens_for(engine, "begin")
        def _on_begin(connection: Any) -> None:
            # Straight to the driver: the statement needs none of SQLAlchemy's execution
            # machinery, which costs more than the BEGIN itself. A failure (the lock not
            # granted within busy_timeout) still leaves as SQLAlchemy's error.
            try:
                connection.connection.dbapi_connection.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise DBAPIError.instance("BEGIN IMMEDIATE", (), exc, sqlite3.Error) from exc


# Worker threads of a PostgreSQL store, shared by reads and writes: each holds at most one pooled
# connection at a time, so the pool (10 kept open, 10 more on demand) never makes one wait.
POSTGRES_THREADS = 20


def create_engines(database_url: str) -> tuple[Engine, Engine]:
    """The writer and reader engines of the store (blocking drivers, used from its worker
    threads); on PostgreSQL both share one pool."""
    url = sync_url(database_url)
    if url.get_backend_name() == "sqlite":
        # One connection for writes (SQLite allows one writer at a time anyway) and one for
        # reads, which then need no BEGIN IMMEDIATE and never hold the write lock (WAL).
        writer = create_engine(
            url, pool_size=1, max_overflow=0, pool_timeout=60, hide_parameters=True
        )
        install_sqlite_hooks(writer, immediate=True)
        reader = create_engine(
            url, pool_size=1, max_overflow=0, pool_timeout=60, hide_parameters=True
        )
        install_sqlite_hooks(reader, immediate=False)
        return writer, reader
    writer = create_engine(url, pool_size=10, max_overflow=10, hide_parameters=True)
    # Single-statement reads need no BEGIN/ROLLBACK round trips.
    return writer, writer.execution_options(isolation_level="AUTOCOMMIT")
