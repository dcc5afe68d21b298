"""check_results by day on PostgreSQL: partitions made ahead, dropped past retention, a result
for a day without one kept (default partition, moved when the day's is made); retention in
batches on SQLite."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select, text

from app.db import utcnow
from app.monitoring.maintenance import purge_results
from app.monitoring.models import CheckResult
from app.monitoring.partitions import AHEAD, DEFAULT, create_partition, partition_days, partition_name
from tests.monitoring.helpers import add_monitors, add_store


def _row(monitor_id, at):
    return {"monitor_id": monitor_id, "checked_at": at, "outcome": "fail", "steps": [], "manual": False}


async def _monitor(db):
    store = await add_store(db)
    [m] = await add_monitors(db, [{"store_id": store, "kind": "tcp", "target": "127.79.0.1:1"}])
    return m


async def _count(conn, table):
    return await conn.scalar(text(f"SELECT count(*) FROM {table}"))


async def test_partitions_are_made_ahead_and_dropped_past_retention(pg_db):
    m = await _monitor(pg_db)
    now = utcnow()
    today = now.date()
    old = [today - timedelta(days=d) for d in (20, 16, 13)]
    async with pg_db.engine.begin() as conn:
        for day in old:
            await create_partition(conn, day)
        at = [datetime(d.year, d.month, d.day, 12, tzinfo=UTC) for d in old]
        await conn.execute(CheckResult.__table__.insert(), [_row(m, a) for a in at for _ in range(3)])
        assert await _count(conn, partition_name(old[0])) == 3  # routed to its day
    removed = await purge_results(pg_db, now - timedelta(days=14))
    async with pg_db.engine.connect() as conn:
        days = await partition_days(conn)
        left = await conn.scalar(select(func.count()).select_from(CheckResult))
    assert removed == 6  # two days of three results, each day in one DROP TABLE
    assert old[0] not in days and old[1] not in days and old[2] in days
    assert left == 3
    assert all(today + timedelta(days=i) in days for i in range(AHEAD + 1))  # made ahead


async def test_a_result_for_a_day_without_a_partition_is_kept_and_moved_into_it(pg_db):
    m = await _monitor(pg_db)
    far = utcnow().date() + timedelta(days=40)  # a clock far ahead: no partition yet
    at = datetime(far.year, far.month, far.day, 8, tzinfo=UTC)
    async with pg_db.engine.begin() as conn:
        assert far not in await partition_days(conn)
        await conn.execute(CheckResult.__table__.insert(), [_row(m, at), _row(m, at + timedelta(days=1))])
        assert await _count(conn, DEFAULT) == 2
    try:
        async with pg_db.engine.begin() as conn:
            assert await create_partition(conn, far)
            assert not await create_partition(conn, far)  # once
        async with pg_db.engine.connect() as conn:
            assert await _count(conn, partition_name(far)) == 1
            assert await _count(conn, DEFAULT) == 1  # the next day's stays where it was
            got = (await conn.execute(select(CheckResult.checked_at).order_by(CheckResult.checked_at))).all()
        assert [r.checked_at for r in got] == [at, at + timedelta(days=1)]
    finally:
        async with pg_db.engine.begin() as conn:
            await conn.execute(text(f"DROP TABLE IF EXISTS {partition_name(far)}"))


async def test_retention_keeps_what_is_recent_on_both_databases(db):
    m = await _monitor(db)
    now = utcnow()
    async with db.engine.begin() as conn:
        await conn.execute(
            CheckResult.__table__.insert(),
            [_row(m, now - timedelta(days=d, minutes=i)) for d in (1, 15, 40) for i in range(25)],
        )
    assert await purge_results(db, now - timedelta(days=14), batch=10) == 50
    async with db.sessionmaker() as s:
        assert await s.scalar(select(func.count()).select_from(CheckResult)) == 25
