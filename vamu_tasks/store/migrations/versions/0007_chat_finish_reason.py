"""chat_messages.finish_reason: a reply cut by the token limit says so ("length").

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable with no default: rows written before it keep NULL, read as "stop", which is
    # what those replies were reported as (a cut reply was passed off as complete then).
    with op.batch_alter_table("chat_messages") as batch:
        batch.add_column(sa.Column("finish_reason", sa.String(16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("chat_messages") as batch:
        batch.drop_column("finish_reason")
