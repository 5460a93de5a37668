"""Alembic environment: runs on the connection `wagate.stores.migrate` passes in, or, for
developers running `alembic` by hand, on `sqlalchemy.url` from their own configuration."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

from wagate.stores.schema import metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite cannot ALTER most things in place; batch mode copies the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


_connection = context.config.attributes.get("connection")
if isinstance(_connection, Connection):
    _run(_connection)
else:
    _url = context.config.get_main_option("sqlalchemy.url")
    if not _url:
        raise RuntimeError("set sqlalchemy.url, or run migrations through wagate.stores.migrate")
    with create_engine(_url).connect() as _own:
        _run(_own)
