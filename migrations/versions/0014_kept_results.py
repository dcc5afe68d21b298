"""kept results: a scheduled result that is not a plain success (a failure, error, warning, a
state change) is folded into its monitor's day (latency_days.kept, compact JSON, zlib) instead
of a check_results row; on PostgreSQL ix_check_results_at becomes a BRIN (rows come in time
order; a b-tree cost ~23 bytes a row); check_results.steps becomes compact JSON text
(app.checks.result.pack_steps; JSONB spelled every key in every row)

Revision ID: 0014
Revises: 0013

The rows already stored stay rows, their steps as they were (the reader reads both forms)
until the retention removes them. Downgrading drops the kept results (raw results of the
retention period) and leaves the steps of rows written since in the compact form.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("latency_days", sa.Column("kept", sa.LargeBinary(), nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index("ix_check_results_at", table_name="check_results")
        op.create_index("ix_check_results_at", "check_results", ["checked_at"], postgresql_using="brin")
        op.execute("ALTER TABLE check_results ALTER COLUMN steps TYPE TEXT USING steps::text")
    else:
        with op.batch_alter_table("check_results") as batch:
            batch.alter_column("steps", type_=sa.Text(), existing_type=sa.JSON(), existing_nullable=False)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index("ix_check_results_at", table_name="check_results")
        op.create_index("ix_check_results_at", "check_results", ["checked_at"])
        op.execute("ALTER TABLE check_results ALTER COLUMN steps TYPE JSONB USING steps::jsonb")
    else:
        with op.batch_alter_table("check_results") as batch:
            batch.alter_column("steps", type_=sa.JSON(), existing_type=sa.Text(), existing_nullable=False)
    with op.batch_alter_table("latency_days") as batch:
        batch.drop_column("kept")
