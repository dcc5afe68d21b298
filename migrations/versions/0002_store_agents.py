"""store agents: agents, and which agent runs a store's and a monitor's checks

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 05:35:48.922936
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "agents",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("token_hint", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("state_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_heard_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("version", sa.String(length=32), nullable=True),
        sa.Column("clock_skew_ms", sa.Float(), nullable=True),
        sa.Column("queue_length", sa.Integer(), nullable=False),
        sa.Column("dropped", sa.Integer(), nullable=False),
        sa.Column("heartbeat_s", sa.Integer(), nullable=False),
        sa.Column("instance", sa.String(length=64), nullable=True),
        sa.Column("last_seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agents")),
        sa.UniqueConstraint("name", name=op.f("uq_agents_name")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_agents_token_hash")),
    )
    op.create_table(
        "rollup_redo",
        sa.Column("bucket_start", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("bucket_start", name=op.f("pk_rollup_redo")),
    )
    with op.batch_alter_table("monitors", schema=None) as batch_op:
        batch_op.add_column(sa.Column("agent_id", sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f("ix_monitors_agent_id"), ["agent_id"], unique=False)
        batch_op.create_foreign_key(
            batch_op.f("fk_monitors_agent_id_agents"), "agents", ["agent_id"], ["id"], ondelete="SET NULL"
        )

    with op.batch_alter_table("stores", schema=None) as batch_op:
        batch_op.add_column(sa.Column("status_reason", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("agent_id", sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f("ix_stores_agent_id"), ["agent_id"], unique=False)
        batch_op.create_foreign_key(
            batch_op.f("fk_stores_agent_id_agents"), "agents", ["agent_id"], ["id"], ondelete="SET NULL"
        )


def downgrade() -> None:
    with op.batch_alter_table("stores", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_stores_agent_id_agents"), type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_stores_agent_id"))
        batch_op.drop_column("agent_id")
        batch_op.drop_column("status_reason")

    with op.batch_alter_table("monitors", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_monitors_agent_id_agents"), type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_monitors_agent_id"))
        batch_op.drop_column("agent_id")

    op.drop_table("rollup_redo")
    op.drop_table("agents")
