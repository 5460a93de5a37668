"""A partial index of the notifications waiting for a retry, by status and retry time.

The push dispatcher asks for the earliest retry whenever it goes idle (at low rates, once per
request); without the index that read the head of every push-mode instance (~4 ms with 10,000).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    next_attempt_at = sa.column("next_attempt_at", sa.DateTime())
    op.create_index(
        "ix_notifications_retry_due",
        "notifications",
        ["status", "next_attempt_at"],
        sqlite_where=next_attempt_at.is_not(None),
        postgresql_where=next_attempt_at.is_not(None),
    )


def downgrade() -> None:
    # Migrations are forward-only: restore a backup to go back.
    raise NotImplementedError("wagate migrations are forward-only")
