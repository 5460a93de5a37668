"""Push delivery: a push-mode flag on instances and a lane lease per instance.

Revision ID: 0002
Revises: 0001
Create Date: 2026-05-27
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Written out rather than imported from wagate.stores.schema: a released migration must not
# change when the schema module does.
_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_UTC = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column(
        "instances",
        sa.Column("push_mode", sa.Boolean(), server_default=sa.false(), nullable=False),
    )
    push_mode = sa.column("push_mode", sa.Boolean())
    op.create_index(
        "ix_instances_push_mode",
        "instances",
        ["id"],
        # The same predicate the store's queries render, so SQLite uses the partial index.
        sqlite_where=push_mode == sa.true(),
        postgresql_where=push_mode == sa.true(),
    )
    op.create_table(
        "push_lanes",
        sa.Column("instance_id", _BIG_ID, autoincrement=False, nullable=False),
        sa.Column("lease_until", _UTC, nullable=True),
        sa.ForeignKeyConstraint(
            ["instance_id"],
            ["instances.id"],
            name="fk_push_lanes_instance_id_instances",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("instance_id", name="pk_push_lanes"),
    )
    _backfill()


def _backfill() -> None:
    """Every instance gets a free lane; push_mode is read from the settings JSON here, in Python,
    because SQLite and PostgreSQL spell JSON access differently."""
    instances = sa.table(
        "instances",
        sa.column("id", _BIG_ID),
        sa.column("settings", sa.Text()),
        sa.column("push_mode", sa.Boolean()),
    )
    lanes = sa.table("push_lanes", sa.column("instance_id", _BIG_ID))
    connection = op.get_bind()
    connection.execute(sa.insert(lanes).from_select(["instance_id"], sa.select(instances.c.id)))
    pushing = [
        {"instance_id": row.id}
        for row in connection.execute(sa.select(instances.c.id, instances.c.settings))
        if _webhook_url(row.settings)
    ]
    if pushing:
        connection.execute(
            sa.update(instances)
            .where(instances.c.id == sa.bindparam("instance_id"))
            .values(push_mode=True),
            pushing,
        )


def _webhook_url(settings: str) -> str:
    try:
        stored = json.loads(settings)
    except ValueError:
        return ""
    url = stored.get("webhook_url", "") if isinstance(stored, dict) else ""
    return url if isinstance(url, str) else ""


def downgrade() -> None:
    # Migrations are forward-only: restore a backup to go back.
    raise NotImplementedError("wagate migrations are forward-only")
