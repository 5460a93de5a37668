"""The server lock of a SQLite database (stores/server_lock.py), in one process: `flock` locks
belong to an open file, so a second open of the lock file conflicts as another process would."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from wagate.stores.server_lock import ServerAlreadyRunning, acquire_server_lock, lock_path


def test_a_second_lock_is_refused_naming_the_holder_until_the_first_is_released(
    tmp_path: Path,
) -> None:
    database = tmp_path / "data" / "wagate.sqlite3"  # the directory does not exist yet
    first = acquire_server_lock(database)
    assert first.path == tmp_path / "data" / "wagate.sqlite3.server-lock"
    assert first.path.read_text() == f"{os.getpid()}\n"
    with pytest.raises(ServerAlreadyRunning) as refused:
        acquire_server_lock(database)
    assert refused.value.message == (
        f"another wagate server (pid {os.getpid()}) is serving {database}: stop it first, or"
        " start this one with another --data-dir (or --database-url)"
    )
    assert first.path.read_text() == f"{os.getpid()}\n"  # the refused one changed nothing
    first.release()
    second = acquire_server_lock(database)
    second.release()


def test_a_lock_file_left_by_a_dead_process_does_not_block(tmp_path: Path) -> None:
    database = tmp_path / "wagate.sqlite3"
    lock_path(database).write_text("4194304999\n")  # no lock held on it: its holder is gone
    lock = acquire_server_lock(database)
    assert lock.path.read_text() == f"{os.getpid()}\n"
    lock.release()


def test_another_database_has_its_own_lock(tmp_path: Path) -> None:
    first = acquire_server_lock(tmp_path / "a.sqlite3")
    second = acquire_server_lock(tmp_path / "b.sqlite3")
    first.release()
    second.release()
