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
# parametrised over SQLite (a tmp_path file) and PostgreSQL (a fresh database per test, at the
# server named by WAGATE_TEST_DATABASE_URL). `store` is a `SqlStore` open on `database_url`.
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


@pytest.fixture
def postgres_database(postgres_server: str) -> Iterator[Callable[[str | None], str]]:
    """Make fresh databases (from a template, or empty with None); all dropped after the test."""
    made: list[str] = []

    def make(template: str | None) -> str:
        name = f"wagate_test_{uuid.uuid4().hex[:12]}"
        _create_database(name, template)
        made.append(name)
        return _postgres_url_for(name)

    yield make
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
