"""One server per SQLite database: `serve` holds an exclusive lock on a file beside it.

A SQLite server assumes it writes its store alone: at start it drops every avatar-job claim
and push-lane lease in the database as left by a dead process (`Store.release_leases`), which
would hand a running server's work to a second one (webhooks pushed twice, out of order); its
polling windows and deferred deletes would hand out a notification deleted through the other;
each would wake only its own long polls, and both would pin themselves to the same CPU. Two
`serve` on one data directory is an easy mistake (`make run` in a second terminal, a unit file
and a manual start), so the second refuses to start instead. The CLI's other commands do not
take the lock: they may write while a server runs.

The lock is `flock`'s, which the kernel drops when the process ends, however it ends (kill -9
included): a lock file left behind never stops a restart. PostgreSQL nodes need none.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from wagate.core.errors import WagateError

# Beside the database file, like SQLite's own `-wal` and `-shm`.
LOCK_SUFFIX = ".server-lock"


class ServerAlreadyRunning(WagateError):
    """Another wagate server holds the database."""


class ServerLock:
    """Held until `release()` or the end of the process."""

    def __init__(self, path: Path, descriptor: int) -> None:
        self.path = path
        self._descriptor: int | None = descriptor

    def release(self) -> None:
        if self._descriptor is not None:
            os.close(self._descriptor)  # closing the last descriptor drops the lock
            self._descriptor = None


def lock_path(database: Path) -> Path:
    return database.with_name(database.name + LOCK_SUFFIX)


def acquire_server_lock(database: Path) -> ServerLock:
    """Take the server lock of the SQLite file `database`, recording this process's id in it.

    Raises `ServerAlreadyRunning`, naming the holder's process id when it is known."""
    path = lock_path(database)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        # Written by the holder just after it took the lock; empty only in that instant.
        holder = os.read(descriptor, 32).decode(errors="replace").strip()
        os.close(descriptor)
        who = f"another wagate server (pid {holder})" if holder.isdigit() else "another server"
        raise ServerAlreadyRunning(
            f"{who} is serving {database}: stop it first, or start this one with another"
            " --data-dir (or --database-url)"
        ) from None
    except BaseException:
        os.close(descriptor)
        raise
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
    return ServerLock(path, descriptor)
