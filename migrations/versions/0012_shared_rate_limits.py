"""rate limits shared across processes: one counter per key and window (app.web.ratelimit)

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rate_limit_counters",
        sa.Column("key", sa.String(length=100), nullable=False),
        sa.Column("hits", sa.Integer(), nullable=False),
        sa.Column("resets_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
        # Counters need no crash safety: on PostgreSQL the table skips the WAL (lost on a crash,
        # emptied then: every window starts again), which makes a counted call a cheap write.
        prefixes=["UNLOGGED"] if op.get_bind().dialect.name == "postgresql" else [],
    )


def downgrade() -> None:
    op.drop_table("rate_limit_counters")
