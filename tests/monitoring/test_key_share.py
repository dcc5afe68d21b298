"""A transaction that writes rows pointing at monitors (a rollup, a state change: each foreign
key holds its monitor's KEY SHARE lock until it commits) neither hides those monitors from
the claims nor holds up the writer: both lock monitors FOR NO KEY UPDATE, which a KEY SHARE
does not block. PostgreSQL (SQLite has no row locks)."""

from __future__ import annotations

import asyncio

from sqlalchemy import text

from app.db import Database, utcnow
from app.monitoring.scheduler import claim_due, release_leases
from app.monitoring.writer import CheckOutcome, write_outcomes
from app.vocabulary import Outcome
from tests.monitoring.helpers import add_monitors, add_store


async def _rollup_holding(db: Database, monitor_ids: list[int]):
    """An open transaction that has written an hour rollup for each monitor (not committed)."""
    conn = await db.engine.connect()
    await conn.begin()
    for mid in monitor_ids:
        await conn.execute(
            text(
                "INSERT INTO rollups (monitor_id, period, bucket_start, count, ok_count, latency_sum_ms,"
                " seconds_down, seconds_unknown) VALUES (:m, 'hour', now(), 1, 1, 3, 0, 0)"
            ),
            {"m": mid},
        )
    return conn


async def test_monitors_a_rollup_points_at_are_claimed_and_written(pg_db: Database):
    store = await add_store(pg_db)
    ids = await add_monitors(
        pg_db, [{"store_id": store, "kind": "tcp", "target": f"127.0.0.1:{p}"} for p in (1, 2)]
    )
    rollup = await _rollup_holding(pg_db, ids)
    try:
        async with asyncio.timeout(30):  # blocked, it would wait for the rollup's commit: for ever here
            claimed = await claim_due(pg_db, "w1", 10, lease_s=30, horizon_s=0)
            assert sorted(c.id for c in claimed) == ids  # not skipped as locked
            outcomes = [CheckOutcome(c.id, Outcome.OK, utcnow(), 3.0, due_at=c.due_at) for c in claimed]
            report = await write_outcomes(pg_db, outcomes, lease_owner="w1")
            assert report.written == 2 and report.dropped == 0
            await release_leases(pg_db, "w1")
    finally:
        await rollup.rollback()
        await rollup.close()
