"""monitors' agent_id index holds only the monitors that run on a store agent (a partial
index, WHERE agent_id IS NOT NULL)

The result writer rewrites a monitor's row at every check, moving its due time on: an indexed
column, so the row is never a heap-only update and every index of monitors gets an entry per
check. Most monitors run on the central workers (agent_id NULL), and what reads this index looks
monitors up by their agent (agent_id = ..., the foreign key's SET NULL), never the NULLs: with
the partial index the writer's update skips it. Measured with bench/write_cpu.py (20,000
monitors, claims of 500, writes of 1,000, PostgreSQL CPU of each statement): the writer's
monitors UPDATE from 0.033 to 0.026 ms of PostgreSQL CPU per check.

Revision ID: 0017
Revises: 0016
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

_WHERE = sa.text("agent_id IS NOT NULL")


def upgrade() -> None:
    op.drop_index("ix_monitors_agent_id", table_name="monitors")
    op.create_index(
        "ix_monitors_agent_id", "monitors", ["agent_id"], postgresql_where=_WHERE, sqlite_where=_WHERE
    )


def downgrade() -> None:
    op.drop_index("ix_monitors_agent_id", table_name="monitors")
    op.create_index("ix_monitors_agent_id", "monitors", ["agent_id"])
