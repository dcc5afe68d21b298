"""check_results on PostgreSQL: one partition per UTC day (check_results_pYYYYMMDD) and a
default partition (check_results_default) for a result whose day has none.

The retention job (`keep_partitions`) creates the partitions of the next `AHEAD` days and
drops the partitions that ended before the retention cutoff: a day of results goes in one
DROP TABLE, not a row at a time. A result never waits for a partition: one for a day
without its partition lands in the default partition, and is moved into the day's
partition when that is created (a late agent replay, a clock far ahead); the default
partition's rows older than the cutoff are deleted with the rest.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

AHEAD = 3  # days of partitions created ahead of today
PARENT = "check_results"
DEFAULT = "check_results_default"
_NAME = re.compile(r"^check_results_p(\d{8})$")


def partition_name(day: date) -> str:
    return f"{PARENT}_p{day:%Y%m%d}"


def is_partition(name: str) -> bool:
    """A table the partitioning made (not in the models: migrations' autogenerate skips it)."""
    return name == DEFAULT or _NAME.match(name) is not None


def _bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return start, start + timedelta(days=1)


async def partition_days(conn: AsyncConnection) -> list[date]:
    """The days that have a partition, in order."""
    rows = await conn.execute(
        text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = CAST(:parent AS regclass)"
        ),
        {"parent": PARENT},
    )
    days = [datetime.strptime(m.group(1), "%Y%m%d").date() for (name,) in rows if (m := _NAME.match(name))]
    return sorted(days)


async def create_partition(conn: AsyncConnection, day: date) -> bool:
    """The day's partition, with the rows the default partition holds for that day moved into
    it (attaching checks that the default holds none). False if it already existed."""
    if day in await partition_days(conn):
        return False
    name = partition_name(day)
    start, end = _bounds(day)
    span = {"start": start, "end": end}
    await conn.execute(text(f"CREATE TABLE {name} (LIKE {PARENT} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"))
    await conn.execute(
        text(
            f"WITH moved AS (DELETE FROM {DEFAULT} WHERE checked_at >= :start AND checked_at < :end "
            f"RETURNING *) INSERT INTO {name} SELECT * FROM moved"
        ),
        span,
    )
    # Bounds as literals: DDL takes no parameters.
    await conn.execute(
        text(
            f"ALTER TABLE {PARENT} ATTACH PARTITION {name} "
            f"FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"
        )
    )
    return True


async def keep_partitions(conn: AsyncConnection, now: datetime, cutoff: datetime) -> int:
    """Create the partitions of today and the next AHEAD days; drop those that ended at or
    before `cutoff` and delete the default partition's rows older than it. Returns the number
    of results removed."""
    today = now.astimezone(UTC).date()
    for i in range(AHEAD + 1):
        await create_partition(conn, today + timedelta(days=i))
    removed = 0
    for day in await partition_days(conn):
        if _bounds(day)[1] > cutoff:
            break
        name = partition_name(day)
        removed += await conn.scalar(text(f"SELECT count(*) FROM {name}")) or 0
        await conn.execute(text(f"DROP TABLE {name}"))
    deleted = await conn.execute(
        text(f"DELETE FROM {DEFAULT} WHERE checked_at < :cutoff"), {"cutoff": cutoff}
    )
    return removed + (deleted.rowcount or 0)
