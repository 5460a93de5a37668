"""How many times each avatar job has been claimed.

A job whose lookup keeps failing (a failure of wagate itself, not an answer WhatsApp gives) was
claimed again after every lease, forever, and since an instance's batches run in order it held
back every later request of that instance. The count lets the worker stop retrying it.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "avatar_jobs",
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
    )


def downgrade() -> None:
    # Migrations are forward-only: restore a backup to go back.
    raise NotImplementedError("wagate migrations are forward-only")
