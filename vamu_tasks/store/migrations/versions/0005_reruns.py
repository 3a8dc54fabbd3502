"""ai_jobs.notify, rerun_reason and requested_by, for operator reruns.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("ai_jobs") as batch:
        batch.add_column(
            sa.Column("notify", sa.Boolean(), nullable=False, server_default=sa.true())
        )
        batch.add_column(sa.Column("rerun_reason", sa.Text(), nullable=True))
        batch.add_column(sa.Column("requested_by", sa.String(128), nullable=True))
    op.create_index("ix_ai_jobs_rerun_of", "ai_jobs", ["rerun_of"])


def downgrade() -> None:
    op.drop_index("ix_ai_jobs_rerun_of", table_name="ai_jobs")
    with op.batch_alter_table("ai_jobs") as batch:
        batch.drop_column("requested_by")
        batch.drop_column("rerun_reason")
        batch.drop_column("notify")
