"""Initial schema: instances, sandbox world, avatar jobs, notifications, metadata.

Revision ID: 0001
Revises:
Create Date: 2026-05-20
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Written out rather than imported from wagate.stores.schema: a released migration must not
# change when the schema module does.
_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_UTC = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "meta",
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_meta"),
    )
    op.create_table(
        "instances",
        sa.Column("id", _BIG_ID, autoincrement=False, nullable=False),
        sa.Column("api_token", sa.String(200), nullable=False),
        sa.Column("engine", sa.String(50), nullable=False),
        sa.Column("phone", sa.String(32), nullable=True),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("webhook_signing_secret", sa.String(200), nullable=False),
        sa.Column("settings", sa.Text(), nullable=False),
        sa.Column("created_at", _UTC, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_instances"),
        sa.UniqueConstraint("phone", name="uq_instances_phone"),
    )
    op.create_table(
        "sandbox_accounts",
        sa.Column("phone", sa.String(32), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("on_whatsapp", sa.Boolean(), nullable=False),
        sa.Column("avatar_digest", sa.String(64), nullable=True),
        sa.Column("avatar_privacy", sa.String(16), nullable=False),
        sa.Column("contacts", sa.Text(), nullable=False),
        sa.Column("lid", sa.String(32), nullable=True),
        sa.PrimaryKeyConstraint("phone", name="pk_sandbox_accounts"),
        sa.UniqueConstraint("lid", name="uq_sandbox_accounts_lid"),
    )
    op.create_table(
        "sandbox_groups",
        sa.Column("chat_id", sa.String(100), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("avatar_digest", sa.String(64), nullable=True),
        sa.Column("participants", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("chat_id", name="pk_sandbox_groups"),
    )
    op.create_table(
        "sandbox_faults",
        sa.Column("chat_id", sa.String(100), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.PrimaryKeyConstraint("chat_id", name="pk_sandbox_faults"),
    )
    op.create_table(
        "avatar_jobs",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("instance_id", _BIG_ID, nullable=False),
        sa.Column("chat_id", sa.String(100), nullable=False),
        sa.Column("created_at", _UTC, nullable=False),
        sa.Column("claimed_until", _UTC, nullable=True),
        sa.ForeignKeyConstraint(
            ["instance_id"],
            ["instances.id"],
            name="fk_avatar_jobs_instance_id_instances",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_avatar_jobs"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_avatar_jobs_instance_id_id", "avatar_jobs", ["instance_id", "id"])
    op.create_table(
        "notifications",
        sa.Column("receipt_id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("instance_id", _BIG_ID, nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("webhook_id", sa.String(64), nullable=False),
        sa.Column("created_at", _UTC, nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("next_attempt_at", _UTC, nullable=True),
        sa.Column("last_error", sa.Text(), server_default="", nullable=False),
        sa.ForeignKeyConstraint(
            ["instance_id"],
            ["instances.id"],
            name="fk_notifications_instance_id_instances",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("receipt_id", name="pk_notifications"),
        sqlite_autoincrement=True,
    )
    op.create_index(
        "ix_notifications_instance_id_status_receipt_id",
        "notifications",
        ["instance_id", "status", "receipt_id"],
    )
    op.create_index("ix_notifications_status_created_at", "notifications", ["status", "created_at"])


def downgrade() -> None:
    # Migrations are forward-only: restore a backup to go back.
    raise NotImplementedError("wagate migrations are forward-only")
