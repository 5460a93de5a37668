"""SQL storage: the `Store` port on SQLite and PostgreSQL, and its migrations."""

from __future__ import annotations

from wagate.stores._connect import sqlite_file
from wagate.stores.migrate import migrate
from wagate.stores.sql import SqlStore, open_store

__all__ = ["SqlStore", "migrate", "open_store", "sqlite_file"]
