"""The batch tier: ai_jobs.deliver_by and batch_id, and the llm_batches and llm_batch_items tables.

A job that can wait (`deliverBy`) is `batched` until its vendor batch ends or its `deliverBy`
nears; `llm_batches` is one vendor batch (OpenAI Batch or Anthropic Message Batch) and
`llm_batch_items` each job sent in one, with whether its result was settled.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

OLD_STATUSES = "'queued', 'running', 'succeeded', 'failed', 'cancelled'"
STATUSES = f"{OLD_STATUSES}, 'batched'"


def upgrade() -> None:
    op.create_table(
        "llm_batches",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("vendor_batch_id", sa.String(128), nullable=True),
        sa.Column("vendor_status", sa.String(32), nullable=True),
        sa.Column("request_count", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
        sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("next_poll_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_llm_batches_status_poll", "llm_batches", ["status", "next_poll_at"])
    op.create_table(
        "llm_batch_items",
        sa.Column("batch_id", sa.Uuid(), sa.ForeignKey("llm_batches.id"), primary_key=True),
        sa.Column("job_id", sa.Uuid(), sa.ForeignKey("ai_jobs.id"), primary_key=True),
        sa.Column("outcome", sa.String(16), nullable=True),
        sa.Column("settled_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_llm_batch_items_job", "llm_batch_items", ["job_id"])
    # Nullable, no default: rows written before were never batched.
    with op.batch_alter_table("ai_jobs") as batch:
        batch.add_column(sa.Column("deliver_by", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("batch_id", sa.Uuid(), nullable=True))
        batch.create_foreign_key("fk_ai_jobs_batch", "llm_batches", ["batch_id"], ["id"])
        batch.drop_constraint("ck_ai_jobs_status", type_="check")
        batch.create_check_constraint("ck_ai_jobs_status", f"status IN ({STATUSES})")


def downgrade() -> None:
    with op.batch_alter_table("ai_jobs") as batch:
        batch.drop_constraint("ck_ai_jobs_status", type_="check")
        batch.create_check_constraint("ck_ai_jobs_status", f"status IN ({OLD_STATUSES})")
        batch.drop_constraint("fk_ai_jobs_batch", type_="foreignkey")
        batch.drop_column("batch_id")
        batch.drop_column("deliver_by")
    op.drop_index("ix_llm_batch_items_job", "llm_batch_items")
    op.drop_table("llm_batch_items")
    op.drop_index("ix_llm_batches_status_poll", "llm_batches")
    op.drop_table("llm_batches")
