"""Avatar images in the database, so that nodes on several hosts need no shared directory.

Revision ID: 0003
Revises: 0002
Create Date: 2026-06-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Written out rather than imported from wagate.stores.schema: a released migration must not
# change when the schema module does.
_UTC = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "avatar_images",
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("content_type", sa.String(32), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", _UTC, nullable=False),
        sa.PrimaryKeyConstraint("digest", name="pk_avatar_images"),
    )


def downgrade() -> None:
    # Migrations are forward-only: restore a backup to go back.
    raise NotImplementedError("wagate migrations are forward-only")
