"""stored per-terminal daily uptime (closed local days), how far each terminal is filled,
and the late state changes that make days be computed again

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "daily_uptime",
        sa.Column("terminal_id", sa.Integer(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("store_id", sa.Integer(), nullable=False),
        sa.Column("up_s", sa.Float(), nullable=False),
        sa.Column("down_s", sa.Float(), nullable=False),
        sa.Column("unknown_s", sa.Float(), nullable=False),
        sa.Column("paused_s", sa.Float(), nullable=False),
        sa.Column("not_monitored_s", sa.Float(), nullable=False),
        sa.Column("span_s", sa.Float(), nullable=False),
        sa.Column("outages", sa.Integer(), nullable=False),
        sa.Column("longest_outage_s", sa.Float(), nullable=False),
        sa.Column(
            "downs",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["terminal_id"],
            ["terminals.id"],
            name=op.f("fk_daily_uptime_terminal_id_terminals"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("terminal_id", "day", name=op.f("pk_daily_uptime")),
    )
    op.create_index("ix_daily_uptime_store_id_day", "daily_uptime", ["store_id", "day"])
    op.create_index(
        "ix_daily_uptime_outage_days",
        "daily_uptime",
        ["terminal_id", "day"],
        postgresql_where=sa.text("outages > 0"),
        sqlite_where=sa.text("outages > 0"),
    )
    op.create_table(
        "daily_uptime_fill",
        sa.Column("terminal_id", sa.Integer(), nullable=False),
        sa.Column("store_id", sa.Integer(), nullable=False),
        sa.Column("tz", sa.String(length=64), nullable=False),
        sa.Column("monitors", sa.Text(), nullable=False),
        sa.Column("filled_until", sa.Date(), nullable=True),
        sa.ForeignKeyConstraint(
            ["terminal_id"],
            ["terminals.id"],
            name=op.f("fk_daily_uptime_fill_terminal_id_terminals"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("terminal_id", name=op.f("pk_daily_uptime_fill")),
    )
    op.create_table(
        "uptime_redo",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("store_id", sa.Integer(), nullable=False),
        sa.Column("terminal_id", sa.Integer(), nullable=True),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_uptime_redo")),
    )


def downgrade() -> None:
    op.drop_table("uptime_redo")
    op.drop_table("daily_uptime_fill")
    op.drop_index("ix_daily_uptime_outage_days", table_name="daily_uptime")
    op.drop_index("ix_daily_uptime_store_id_day", table_name="daily_uptime")
    op.drop_table("daily_uptime")
