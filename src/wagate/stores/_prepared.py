"""Core statements compiled once for SQLite and run on the bare driver: the hottest operations.

SQLAlchemy's execution path (an execution context, parameter and result processing, result
wrappers) costs ~20 µs per statement in a tight loop, and ~40 µs in the server, where it runs
between thread hand-offs with cold caches; sqlite3 runs a typical hot statement in ~5 µs.
Measured under push load, that path was most of the store thread's time for a lane's queue read.

A statement is still written once, in Core, for both dialects: on PostgreSQL `Prepared` hands it
to `Connection.execute`. On SQLite it is compiled on first use; its parameters get the same
conversions SQLAlchemy would apply (the column types' bind processors) and its result columns
theirs (`UtcDateTime`'s text to datetime). A driver error leaves as SQLAlchemy's `DBAPIError`,
as from `Connection.execute`, so the store's error handling sees no difference.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Delete, Dialect, Insert, Select, Update
from sqlalchemy.exc import DBAPIError

Statement = Select[Any] | Insert | Update | Delete


class Prepared:
    """One statement; `rows` (tuples) or `mappings` (by column key) for one that returns rows,
    `rowcount` for DML without RETURNING. Expanding parameters (`bindparam(...,
    expanding=True)`) take a non-empty sequence."""

    def __init__(self, statement: Statement) -> None:
        self._statement = statement
        self._sqlite: _SqliteStatement | None = None

    def rows(self, conn: Connection, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        if conn.dialect.name != "sqlite":
            return [tuple(row) for row in conn.execute(self._statement, params)]
        return self._compiled(conn.dialect).rows(conn, params)

    def mappings(self, conn: Connection, params: Mapping[str, Any]) -> list[Mapping[Any, Any]]:
        if conn.dialect.name != "sqlite":
            return list(conn.execute(self._statement, params).mappings())
        compiled = self._compiled(conn.dialect)
        keys = compiled.keys
        return [dict(zip(keys, row, strict=True)) for row in compiled.rows(conn, params)]

    def rowcount(self, conn: Connection, params: Mapping[str, Any]) -> int:
        if conn.dialect.name != "sqlite":
            count: int = conn.execute(self._statement, params).rowcount
            return count
        return self._compiled(conn.dialect).rowcount(conn, params)

    def sqlite_sql(self, dialect: Dialect) -> str:
        """The SQL run on SQLite, with its `?` placeholders (for query plans)."""
        return self._compiled(dialect).sql

    def _compiled(self, dialect: Dialect) -> _SqliteStatement:
        # Compiled by whichever store thread gets here first; a second compilation in a race
        # would build an identical object.
        if self._sqlite is None:
            self._sqlite = _SqliteStatement(self._statement, dialect)
        return self._sqlite


_REQUIRED = object()


class _SqliteStatement:
    def __init__(self, statement: Statement, dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        self.sql = str(compiled)
        names = compiled.positiontup or []
        defaults = compiled.params
        # (name, value if not given, conversion, expanding); a required one has no fallback.
        self._params: list[tuple[str, Any, Callable[[Any], Any] | None, bool]] = []
        for name in names:
            bind = compiled.binds[name]
            process = bind.type.bind_processor(dialect)
            fallback = _REQUIRED if bind.required else defaults.get(name)
            self._params.append((name, fallback, process, bind.expanding))
            if not bind.expanding and f"__[POSTCOMPILE_{name}]" in self.sql:
                # Rendered into the SQL at execution (literal_execute): not supported here.
                raise ValueError(f"parameter {name!r} must be rendered at execution")
        columns = list(getattr(statement, "exported_columns", ()))
        self.keys = [column.key for column in columns]
        processors = [column.type.result_processor(dialect, None) for column in columns]
        self._result_processors = processors if any(processors) else None

    def rows(self, conn: Connection, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        cursor = self._execute(conn, params)
        fetched: list[tuple[Any, ...]] = cursor.fetchall()
        processors = self._result_processors
        if processors is None or not fetched:
            return fetched
        # Column by column, each distinct value converted once: the rows of a batch mostly
        # share their timestamps, and parsing one costs more than the rest of its row.
        columns: list[Sequence[Any]] = list(zip(*fetched, strict=True))
        for position, process in enumerate(processors):
            if process is not None:
                columns[position] = convert_distinct(columns[position], process)
        return list(zip(*columns, strict=True))

    def rowcount(self, conn: Connection, params: Mapping[str, Any]) -> int:
        count: int = self._execute(conn, params).rowcount
        return count

    def _execute(self, conn: Connection, params: Mapping[str, Any]) -> sqlite3.Cursor:
        sql = self.sql
        values: list[Any] = []
        for name, default, process, expanding in self._params:
            value = params.get(name, default)
            if value is _REQUIRED:
                raise KeyError(f"no value for the required parameter {name!r}")
            if expanding:
                items: Sequence[Any] = value
                if not items:
                    raise ValueError(f"empty sequence for the expanding parameter {name!r}")
                marks = ", ".join("?" * len(items))
                sql = sql.replace(f"__[POSTCOMPILE_{name}]", marks, 1)
                values.extend(items if process is None else [process(item) for item in items])
            else:
                values.append(value if process is None else process(value))
        return execute_on_sqlite(conn, sql, values)


def convert_distinct(values: Sequence[Any], process: Callable[[Any], Any]) -> list[Any]:
    """`process` applied to each value, once per distinct value."""
    converted: dict[Any, Any] = {}
    for value in values:
        if value not in converted:
            converted[value] = process(value)
    return [converted[value] for value in values]


def execute_on_sqlite(conn: Connection, sql: str, values: Sequence[Any]) -> sqlite3.Cursor:
    """Run SQL with `?` placeholders on the connection's bare sqlite3 driver, in the
    connection's transaction; a driver error leaves as SQLAlchemy's `DBAPIError` subclass (an
    `IntegrityError` stays one)."""
    driver = conn.connection.dbapi_connection
    assert isinstance(driver, sqlite3.Connection)
    try:
        return driver.execute(sql, values)
    except sqlite3.Error as exc:
        # Parameters stay out of the message, as with the engines' `hide_parameters`.
        raise DBAPIError.instance(sql, values, exc, sqlite3.Error, hide_parameters=True) from exc
