"""ai_jobs.cache_read_tokens and cache_write_tokens: the parts of input_tokens the vendors'
prompt caches served and stored.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable, no default: rows written before stay NULL, "not counted", not "none cached".
    with op.batch_alter_table("ai_jobs") as batch:
        batch.add_column(sa.Column("cache_read_tokens", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("cache_write_tokens", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("ai_jobs") as batch:
        batch.drop_column("cache_write_tokens")
        batch.drop_column("cache_read_tokens")
