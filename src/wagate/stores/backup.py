"""A consistent copy of a SQLite database, taken while a server may be writing to it.

Copying the database as a file is not enough under WAL: the last transactions live in the
`-wal` file until a checkpoint, and two files copied at different moments need not agree.
`VACUUM INTO` writes one snapshot of the database to a new file without stopping the writer.
The files that go with it (avatar images, the partner token) are copied after it, so that
every image link the copy holds has its image (images are written once and never change).
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Sequence
from pathlib import Path

from wagate.core.errors import WagateError

# How FileImageStore names an image while writing it, before the rename that completes it.
_TEMPORARY_FILES = shutil.ignore_patterns(".*.tmp")


def back_up_sqlite(database: Path, target: Path, after: Sequence[tuple[Path, Path]]) -> None:
    """Snapshot `database` into the new file `target`, then copy each (source, destination)
    of `after` that exists (a file, or a directory tree without half-written images).
    Raises `WagateError`."""
    if target.exists():
        raise WagateError(f"{target} exists already")
    target.parent.mkdir(parents=True, exist_ok=True)
    # Read-only: the copy cannot disturb the server, and a wrong path cannot create a file.
    source = sqlite3.connect(f"{database.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
    try:
        source.execute("VACUUM INTO ?", (str(target),))
    except sqlite3.Error as exc:
        raise WagateError(f"cannot copy the database {database}: {exc}") from exc
    finally:
        source.close()
    for origin, destination in after:
        if origin.is_dir():
            shutil.copytree(origin, destination, ignore=_TEMPORARY_FILES)
        elif origin.is_file():
            shutil.copy2(origin, destination)
