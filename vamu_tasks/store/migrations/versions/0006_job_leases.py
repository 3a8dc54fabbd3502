"""ai_jobs.lease_owner, lease_until and retry_at: one runner at a time, and orphan recovery.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("ai_jobs") as batch:
        batch.add_column(sa.Column("lease_owner", sa.String(128), nullable=True))
        batch.add_column(sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("retry_at", sa.DateTime(timezone=True), nullable=True))
    # The reaper looks for running jobs whose lease ran out, and retries that are overdue.
    op.create_index("ix_ai_jobs_status_lease", "ai_jobs", ["status", "lease_until"])
    op.create_index("ix_ai_jobs_status_retry", "ai_jobs", ["status", "retry_at"])


def downgrade() -> None:
    op.drop_index("ix_ai_jobs_status_retry", table_name="ai_jobs")
    op.drop_index("ix_ai_jobs_status_lease", table_name="ai_jobs")
    with op.batch_alter_table("ai_jobs") as batch:
        batch.drop_column("retry_at")
        batch.drop_column("lease_until")
        batch.drop_column("lease_owner")
