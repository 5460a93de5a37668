"""Migrations build exactly the declared schema, idempotently, and under a lock."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect

import wagate
from wagate.stores import migrate, open_store
from wagate.stores._connect import sync_url
from wagate.stores.migrate import MIGRATIONS_DIR, alembic_config, head_revision
from wagate.stores.schema import metadata


def current_revision(database_url: str) -> str | None:
    engine = create_engine(sync_url(database_url))
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def schema_differences(database_url: str) -> list[object]:
    engine = create_engine(sync_url(database_url))
    try:
        with engine.connect() as conn:
            return list(compare_metadata(MigrationContext.configure(conn), metadata))
    finally:
        engine.dispose()


def test_migrating_an_empty_database_builds_the_declared_schema(empty_database_url: str) -> None:
    assert current_revision(empty_database_url) is None
    migrate(empty_database_url)
    assert current_revision(empty_database_url) == head_revision()
    assert schema_differences(empty_database_url) == []


def test_migrations_apply_step_by_step(empty_database_url: str) -> None:
    scripts = ScriptDirectory.from_config(alembic_config())
    revisions = [script.revision for script in scripts.walk_revisions()][::-1]
    assert revisions[0] == "0001"
    assert revisions[-1] == head_revision()
    assert revisions == [f"{n:04d}" for n in range(1, len(revisions) + 1)]  # numbered, linear
    engine = create_engine(sync_url(empty_database_url))
    try:
        for revision in revisions:
            with engine.begin() as conn:
                command.upgrade(alembic_config(conn), revision)
            assert current_revision(empty_database_url) == revision
    finally:
        engine.dispose()
    assert schema_differences(empty_database_url) == []


def test_migrating_twice_is_a_no_op(empty_database_url: str) -> None:
    migrate(empty_database_url)
    engine = create_engine(sync_url(empty_database_url))
    try:
        before = sorted(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    migrate(empty_database_url)
    assert current_revision(empty_database_url) == head_revision()
    assert schema_differences(empty_database_url) == []
    engine = create_engine(sync_url(empty_database_url))
    try:
        assert sorted(inspect(engine).get_table_names()) == before
    finally:
        engine.dispose()


def test_concurrent_migrations_are_serialised(empty_database_url: str) -> None:
    errors: list[BaseException] = []
    start = threading.Barrier(3)

    def run() -> None:
        start.wait()
        try:
            migrate(empty_database_url)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert current_revision(empty_database_url) == head_revision()
    assert schema_differences(empty_database_url) == []


def test_migrate_creates_the_sqlite_directory(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'new' / 'dir' / 'wagate.sqlite3'}"
    migrate(url)
    assert current_revision(url) == head_revision()


def test_sqlite_database_is_in_wal_mode(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'wagate.sqlite3'}"
    migrate(url)
    engine = create_engine(sync_url(url))
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    finally:
        engine.dispose()


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_open_store_refuses_an_unmigrated_database(empty_database_url: str) -> None:
    with pytest.raises(RuntimeError, match="wagate migrate"):
        await open_store(empty_database_url)


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:", "mysql://localhost/x"])
def test_unsupported_urls(url: str) -> None:
    with pytest.raises(ValueError):
        migrate(url)


def test_migration_scripts_ship_inside_the_package() -> None:
    assert MIGRATIONS_DIR.is_relative_to(Path(wagate.__file__).parent)
    assert (MIGRATIONS_DIR / "env.py").is_file()
    assert (MIGRATIONS_DIR / "script.py.mako").is_file()
    assert (MIGRATIONS_DIR / "versions" / "0001_initial.py").is_file()
