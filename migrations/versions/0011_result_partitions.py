"""compact results and day partitions: plain successes folded into latency_days, hour rollups
only where there is something to say (rolled_up_hours says how far they go); on PostgreSQL
check_results range-partitioned by day on checked_at

Revision ID: 0011
Revises: 0010

On PostgreSQL the existing rows are moved into the partitioned table: one partition per day
they cover plus today and the next 3 days, and a default partition that catches a result
for a day without one (app.monitoring.partitions moves such rows out when it creates the
day's partition). The primary key becomes (id, checked_at): a partitioned table's unique
keys must include its partition key. SQLite keeps one table (retention deletes in batches).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

_COLUMNS = "id, monitor_id, due_at, checked_at, outcome, latency_ms, steps, diagnosis, detail, manual"
_CREATE = """
CREATE TABLE check_results (
    id BIGINT NOT NULL DEFAULT nextval('check_results_id_seq'),
    monitor_id INTEGER NOT NULL,
    due_at TIMESTAMP WITH TIME ZONE,
    checked_at TIMESTAMP WITH TIME ZONE NOT NULL,
    outcome VARCHAR(8) NOT NULL,
    latency_ms FLOAT,
    steps JSONB NOT NULL,
    diagnosis VARCHAR(64),
    detail TEXT,
    manual BOOLEAN NOT NULL,
    CONSTRAINT pk_check_results PRIMARY KEY (id, checked_at),
    CONSTRAINT fk_check_results_monitor_id_monitors FOREIGN KEY (monitor_id)
        REFERENCES monitors (id) ON DELETE CASCADE
) PARTITION BY RANGE (checked_at)
"""


def _partition(day: date) -> str:
    # The same names and bounds as app.monitoring.partitions (a migration stays as written).
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return (
        f"CREATE TABLE IF NOT EXISTS check_results_p{day:%Y%m%d} PARTITION OF check_results "
        f"FOR VALUES FROM ('{start.isoformat()}') TO ('{(start + timedelta(days=1)).isoformat()}')"
    )


def upgrade() -> None:
    op.create_table(
        "latency_days",
        sa.Column("monitor_id", sa.Integer(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("buckets", sa.LargeBinary(), nullable=False),
        sa.Column("recent", sa.LargeBinary(), nullable=True),
        sa.ForeignKeyConstraint(
            ["monitor_id"],
            ["monitors.id"],
            name=op.f("fk_latency_days_monitor_id_monitors"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("monitor_id", "day", name=op.f("pk_latency_days")),
    )
    op.create_table(
        "rolled_up_hours",
        sa.Column("bucket_start", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("bucket_start", name=op.f("pk_rolled_up_hours")),
    )
    op.execute(
        "INSERT INTO rolled_up_hours (bucket_start) "
        "SELECT DISTINCT bucket_start FROM rollups WHERE period = 'hour'"
    )
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP INDEX ix_check_results_at")
    op.execute("DROP INDEX ix_check_results_monitor_at")
    op.execute("ALTER TABLE check_results RENAME TO check_results_unpartitioned")
    op.execute("ALTER TABLE check_results_unpartitioned RENAME CONSTRAINT pk_check_results TO pk_cr_old")
    op.execute(
        "ALTER TABLE check_results_unpartitioned "
        "RENAME CONSTRAINT fk_check_results_monitor_id_monitors TO fk_cr_old"
    )
    op.execute(_CREATE)
    op.execute("ALTER SEQUENCE check_results_id_seq OWNED BY check_results.id")
    op.execute("CREATE TABLE check_results_default PARTITION OF check_results DEFAULT")
    days = {
        row[0]
        for row in op.get_bind().execute(
            sa.text("SELECT DISTINCT (checked_at AT TIME ZONE 'UTC')::date FROM check_results_unpartitioned")
        )
    }
    today = datetime.now(UTC).date()
    days |= {today + timedelta(days=i) for i in range(4)}
    for day in sorted(days):
        op.execute(_partition(day))
    op.execute(f"INSERT INTO check_results ({_COLUMNS}) SELECT {_COLUMNS} FROM check_results_unpartitioned")
    op.execute("DROP TABLE check_results_unpartitioned")
    op.create_index("ix_check_results_at", "check_results", ["checked_at"])
    op.create_index("ix_check_results_monitor_at", "check_results", ["monitor_id", "checked_at"])


def downgrade() -> None:
    op.drop_table("rolled_up_hours")
    op.drop_table("latency_days")
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP INDEX ix_check_results_at")
    op.execute("DROP INDEX ix_check_results_monitor_at")
    op.execute("ALTER TABLE check_results RENAME TO check_results_partitioned")
    op.execute("ALTER TABLE check_results_partitioned RENAME CONSTRAINT pk_check_results TO pk_cr_new")
    op.execute(
        "ALTER TABLE check_results_partitioned "
        "RENAME CONSTRAINT fk_check_results_monitor_id_monitors TO fk_cr_new"
    )
    op.execute(
        _CREATE.replace("PRIMARY KEY (id, checked_at)", "PRIMARY KEY (id)").replace(
            ") PARTITION BY RANGE (checked_at)", ")"
        )
    )
    op.execute("ALTER SEQUENCE check_results_id_seq OWNED BY check_results.id")
    op.execute(f"INSERT INTO check_results ({_COLUMNS}) SELECT {_COLUMNS} FROM check_results_partitioned")
    op.execute("DROP TABLE check_results_partitioned")  # and its partitions
    op.create_index("ix_check_results_at", "check_results", ["checked_at"])
    op.create_index("ix_check_results_monitor_at", "check_results", ["monitor_id", "checked_at"])
