"""An index that answers "does this instance have a live avatar job claim?" directly.

The job claim asks it for every candidate instance; without the index it read every queued job
of the instance (~2 ms with 20,000 queued), on the writer that also commits acknowledgements.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_avatar_jobs_instance_id_claimed_until",
        "avatar_jobs",
        ["instance_id", "claimed_until"],
    )


def downgrade() -> None:
    # Migrations are forward-only: restore a backup to go back.
    raise NotImplementedError("wagate migrations are forward-only")
