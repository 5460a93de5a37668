"""Fixtures shared by every suite."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy.engine import make_url

from wagate.stores import SqlStore, migrate, open_store
from wagate.stores.migrate import head_revision
from wagate.stores.schema import metadata


@pytest.fixture(autouse=True)
def _clean_wagate_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests build their own Settings; a WAGATE_* variable of the shell must not leak in."""
    for name in list(os.environ):
        if name.startswith("WAGATE_"):
            monkeypatch.delenv(name)


# =============================================================================================
# Store and database fixtures (wagate.stores)
#
# `database_url` is a migrated database and `empty_database_url` an empty one, each
# parametrised over SQLite (a tmp_path file) and PostgreSQL (at the server named by
# WAGATE_TEST_DATABASE_URL: a migrated copy of the session's template, emptied again after each
# test, or a fresh empty database). `store` is a `SqlStore` open on `database_url`.
# PostgreSQL variants carry the `postgres` marker and skip when the variable is unset, unless
# WAGATE_REQUIRE_POSTGRES=1 turns the skip into a failure.
# =============================================================================================

# Read at import: other fixtures may clear WAGATE_* from the environment before tests run.
_POSTGRES_URL = os.environ.get("WAGATE_TEST_DATABASE_URL", "")
_REQUIRE_POSTGRES = os.environ.get("WAGATE_REQUIRE_POSTGRES", "") == "1"
_DATABASE_KINDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def _postgres_url_for(database: str) -> str:
    return make_url(_POSTGRES_URL).set(database=database).render_as_string(hide_password=False)


def _create_database(name: str, template: str | None = None) -> None:
    statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template is not None:
        statement += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
    # CREATE/DROP DATABASE cannot run inside a transaction.
    with psycopg.connect(_POSTGRES_URL, autocommit=True) as conn:
        conn.execute(statement)


def _drop_database(name: str) -> None:
    statement = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
    with psycopg.connect(_POSTGRES_URL, autocommit=True) as conn:
        conn.execute(statement)


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The admin URL of the test PostgreSQL server; skips (or fails) when none is configured."""
    if not _POSTGRES_URL:
        reason = "WAGATE_TEST_DATABASE_URL is not set (e.g. postgresql://postgres@127.0.0.1/test)"
        if _REQUIRE_POSTGRES:
            pytest.fail(f"WAGATE_REQUIRE_POSTGRES=1 but {reason}")
        pytest.skip(reason)
    return _POSTGRES_URL


@pytest.fixture(scope="session")
def postgres_template(postgres_server: str) -> Iterator[str]:
    """A database migrated once per session, copied by `CREATE DATABASE … TEMPLATE`."""
    name = f"wagate_test_tpl_{uuid.uuid4().hex[:12]}"
    _create_database(name)
    try:
        migrate(_postgres_url_for(name))
        yield name
    finally:
        _drop_database(name)


class _MigratedDatabases:
    """Copies of the migrated template, reused from test to test: a copy is emptied after its
    test (every table but `alembic_version` truncated, identities restarted, whoever is still
    connected put out first) instead of dropped, since CREATE and DROP DATABASE were ~0.5 s a
    test, a third of the suite's time. A copy that cannot be emptied, or whose schema a test
    changed, is dropped instead."""

    def __init__(self, template: str) -> None:
        self.template = template
        self._idle: list[str] = []
        self._all: set[str] = set()

    def take(self) -> str:
        if self._idle:
            return self._idle.pop()
        name = f"wagate_test_{uuid.uuid4().hex[:12]}"
        _create_database(name, self.template)
        self._all.add(name)
        return name

    def give_back(self, name: str) -> None:
        try:
            with psycopg.connect(_postgres_url_for(name), autocommit=True) as conn:
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
                conn.execute("SET lock_timeout = '5s'")
                tables = [
                    row[0]
                    for row in conn.execute(
                        "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
                        " AND tablename <> 'alembic_version' ORDER BY tablename"
                    )
                ]
                revision = conn.execute("SELECT version_num FROM alembic_version").fetchone()
                if sorted(tables) != _MIGRATED_TABLES or revision != (head_revision(),):
                    raise RuntimeError("the test changed the schema")
                conn.execute(
                    sql.SQL("TRUNCATE {} RESTART IDENTITY CASCADE").format(
                        sql.SQL(", ").join(sql.Identifier(table) for table in tables)
                    )
                )
        except (psycopg.Error, RuntimeError):
            self._drop(name)
            return
        self._idle.append(name)

    def _drop(self, name: str) -> None:
        self._all.discard(name)
        _drop_database(name)

    def drop_all(self) -> None:
        for name in list(self._all):
            self._drop(name)
        self._idle.clear()


_MIGRATED_TABLES = sorted(metadata.tables)


@pytest.fixture(scope="session")
def migrated_databases(postgres_template: str) -> Iterator[_MigratedDatabases]:
    pool = _MigratedDatabases(postgres_template)
    try:
        yield pool
    finally:
        pool.drop_all()


@pytest.fixture
def postgres_database(
    postgres_server: str, request: pytest.FixtureRequest
) -> Iterator[Callable[[str | None], str]]:
    """Make databases for one test: a migrated one with no rows (`template` is the session's
    `postgres_template`), emptied after the test for the next one, or an empty one (None),
    dropped after the test."""
    made: list[str] = []
    taken: list[str] = []
    pool: _MigratedDatabases | None = None

    def make(template: str | None) -> str:
        nonlocal pool
        if template is not None:
            pool = request.getfixturevalue("migrated_databases")
            assert pool.template == template
            name = pool.take()
            taken.append(name)
        else:
            name = f"wagate_test_{uuid.uuid4().hex[:12]}"
            _create_database(name)
            made.append(name)
        return _postgres_url_for(name)

    yield make
    for name in taken:
        assert pool is not None
        pool.give_back(name)
    for name in made:
        _drop_database(name)


@pytest.fixture(params=_DATABASE_KINDS)
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The sync URL of an empty database, never migrated."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'empty.sqlite3'}"
    make: Callable[[str | None], str] = request.getfixturevalue("postgres_database")
    return make(None)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated once per session, copied for each test that needs one (migrating
    costs ~50 ms a test, copying ~1 ms)."""
    path = tmp_path_factory.mktemp("sqlite-template") / "wagate.sqlite3"
    migrate(f"sqlite:///{path}")
    # Every connection is closed by now, so the write-ahead log is folded into the file.
    assert not path.with_name(path.name + "-wal").exists()
    return path


@pytest.fixture(params=_DATABASE_KINDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The sync URL of a migrated database with no rows."""
    if request.param == "sqlite":
        path = tmp_path / "wagate.sqlite3"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite:///{path}"
    make: Callable[[str | None], str] = request.getfixturevalue("postgres_database")
    return make(request.getfixturevalue("postgres_template"))


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[SqlStore]:
    """A `SqlStore` on `database_url`, closed after the test (needs an anyio test)."""
    async with open_store(database_url) as opened:
        yield opened


# ============================ end of store and database fixtures =============================


# ===================================== Redis fixtures =========================================

# Read at import: the autouse fixture clears WAGATE_* from the environment before tests run.
_REDIS_URL = os.environ.get("WAGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
_REQUIRE_REDIS = os.environ.get("WAGATE_REQUIRE_REDIS", "") == "1"


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The test Redis; skips when unreachable, unless WAGATE_REQUIRE_REDIS=1 (then fails)."""
    client = Redis.from_url(_REDIS_URL, socket_connect_timeout=1, socket_timeout=1)
    try:
        client.ping()
    except RedisError as exc:
        reason = f"no Redis at WAGATE_TEST_REDIS_URL={_REDIS_URL} ({type(exc).__name__})"
        if _REQUIRE_REDIS:
            pytest.fail(f"WAGATE_REQUIRE_REDIS=1 but {reason}")
        pytest.skip(reason)
    finally:
        client.close()
    return _REDIS_URL
