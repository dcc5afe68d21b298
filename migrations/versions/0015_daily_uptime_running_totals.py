"""stored days carry running totals (seconds and days since the terminal's first stored day),
the fill row the first stored day and the totals at the last one; the outage days' index
carries their down spells on PostgreSQL: a year's sums read one day row per terminal, not 365

Existing days get their running totals from a window sum over each terminal's days (the job
always stores a terminal's days as one unbroken run, so the run starts at its first day):
about 8 minutes for 18 M days on a loaded 2-core machine (bench/daily.py's year of 50,000),
and the table's old row versions are space for later days once vacuumed.

Revision ID: 0015
Revises: 0014
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

RUNS = ("run_up_s", "run_down_s", "run_unknown_s", "run_paused_s")


def upgrade() -> None:
    _add_runs("daily_uptime")
    _add_runs("daily_uptime_fill")
    op.add_column("daily_uptime_fill", sa.Column("filled_from", sa.Date(), nullable=True))
    sums = ", ".join(
        f"sum({name[4:]}) OVER (PARTITION BY terminal_id ORDER BY day) AS {name}" for name in RUNS
    )
    sets = ", ".join(f"{name} = w.{name}" for name in RUNS)
    op.execute(
        f"UPDATE daily_uptime SET {sets}, run_days = w.run_days FROM ("
        f"SELECT terminal_id, day, {sums}, "
        "row_number() OVER (PARTITION BY terminal_id ORDER BY day) AS run_days FROM daily_uptime"
        ") AS w WHERE daily_uptime.terminal_id = w.terminal_id AND daily_uptime.day = w.day"
    )
    mine = "daily_uptime.terminal_id = daily_uptime_fill.terminal_id"
    at_last = ", ".join(
        f"{name} = coalesce((SELECT {name} FROM daily_uptime WHERE {mine} "
        f"AND daily_uptime.day = daily_uptime_fill.filled_until), 0)"
        for name in (*RUNS, "run_days")
    )
    op.execute(
        "UPDATE daily_uptime_fill SET "
        f"filled_from = (SELECT min(day) FROM daily_uptime WHERE {mine}), {at_last}"
    )
    _outage_index(include=["downs"])


def downgrade() -> None:
    _outage_index(include=[])
    op.drop_column("daily_uptime_fill", "filled_from")
    for table in ("daily_uptime_fill", "daily_uptime"):
        for name in (*RUNS, "run_days"):
            op.drop_column(table, name)


def _add_runs(table: str) -> None:
    for name in (*RUNS, "run_days"):
        kind = sa.Integer() if name == "run_days" else sa.Float()
        op.add_column(table, sa.Column(name, kind, server_default=sa.text("0"), nullable=False))


def _outage_index(include: list[str]) -> None:
    op.drop_index("ix_daily_uptime_outage_days", table_name="daily_uptime")
    op.create_index(
        "ix_daily_uptime_outage_days",
        "daily_uptime",
        ["terminal_id", "day"],
        postgresql_include=include,
        postgresql_where=sa.text("outages > 0"),
        sqlite_where=sa.text("outages > 0"),
    )
