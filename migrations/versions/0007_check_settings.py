"""check settings per store, region and network profile: interval, timeout, down/up thresholds

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("stores") as batch:
        batch.add_column(sa.Column("check_interval_s", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("check_timeout_s", sa.Float(), nullable=True))
        batch.add_column(sa.Column("down_after", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("up_after", sa.Integer(), nullable=True))
    op.create_table(
        "check_settings",
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("interval_s", sa.Integer(), nullable=True),
        sa.Column("timeout_s", sa.Float(), nullable=True),
        sa.Column("down_after", sa.Integer(), nullable=True),
        sa.Column("up_after", sa.Integer(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("scope", "name"),
    )


def downgrade() -> None:
    op.drop_table("check_settings")
    with op.batch_alter_table("stores") as batch:
        batch.drop_column("up_after")
        batch.drop_column("down_after")
        batch.drop_column("check_timeout_s")
        batch.drop_column("check_interval_s")
