"""Retention and rollups (seconds down/unknown from the state change intervals)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from app.db import utcnow
from app.monitoring.maintenance import purge_results, rollup_hour, rollup_pending, seconds_by_state
from app.monitoring.models import CheckResult, RolledUpHour, Rollup, StateChange
from tests.monitoring.helpers import add_monitors, add_store

H = datetime(2031, 3, 4, 10, 0, tzinfo=UTC)


def test_seconds_by_state():
    changes = [
        (H + timedelta(minutes=15), "down"),
        (H + timedelta(minutes=30), "unknown"),
        (H + timedelta(minutes=45), "up"),
        (H + timedelta(minutes=70), "down"),
    ]
    spent = seconds_by_state("up", changes, H, H + timedelta(hours=1))
    assert spent == {"up": 1800.0, "down": 900.0, "unknown": 900.0}


async def test_hour_and_day_rollups(db):
    store = await add_store(db)
    m1, m2 = await add_monitors(
        db,
        [
            {"store_id": store, "kind": "tcp", "target": "127.79.0.1:1"},
            {"store_id": store, "kind": "tcp", "target": "127.79.0.2:1"},
        ],
        state="up",
        state_since=H - timedelta(days=1),
    )
    async with db.engine.begin() as conn:
        await conn.execute(
            CheckResult.__table__.insert(),
            [
                {
                    "monitor_id": m1,
                    "checked_at": H + timedelta(minutes=m),
                    "due_at": H + timedelta(minutes=m),
                    "outcome": o,
                    "latency_ms": lat,
                    "steps": [],
                    "manual": False,
                }
                for m, o, lat in ((5, "ok", 2.0), (20, "fail", 5000.0), (50, "ok", 4.0), (59, "ok", 3.0))
            ]
            + [
                {
                    "monitor_id": m1,
                    "checked_at": H + timedelta(minutes=1),
                    "due_at": None,
                    "outcome": "ok",
                    "latency_ms": 1.0,
                    "steps": [],
                    "manual": True,
                }
            ],
        )
        await conn.execute(
            StateChange.__table__.insert(),
            [
                {
                    "monitor_id": m1,
                    "store_id": store,
                    "at": H + timedelta(minutes=a),
                    "from_state": f,
                    "to_state": t,
                }
                for a, f, t in ((15, "up", "down"), (30, "down", "unknown"), (45, "unknown", "up"))
            ],
        )
    async with db.sessionmaker() as s:
        await rollup_hour(s, H)
        await rollup_hour(s, H)  # idempotent
        await s.commit()
        rows = {
            r.monitor_id: r
            for r in (await s.execute(select(Rollup).where(Rollup.period == "hour"))).scalars()
        }
    r1 = rows[m1]
    assert (r1.count, r1.ok_count) == (4, 3)  # manual checks are not samples of the schedule
    assert (r1.latency_sum_ms, r1.latency_min_ms, r1.latency_max_ms) == (5009.0, 2.0, 5000.0)
    assert (r1.seconds_down, r1.seconds_unknown) == (900.0, 900.0)
    assert m2 not in rows  # nothing in its hour: no row (it was up throughout)

    from app.monitoring.maintenance import rollup_day

    async with db.sessionmaker() as s:
        await rollup_day(s, H.replace(hour=0))
        await s.commit()
        day = (
            await s.execute(select(Rollup).where(Rollup.period == "day", Rollup.monitor_id == m1))
        ).scalar_one()
    assert (day.count, day.seconds_down, day.bucket_start) == (4, 900.0, H.replace(hour=0))


async def test_rollup_pending_catches_up_completed_hours(db):
    store = await add_store(db)
    [m] = await add_monitors(
        db,
        [{"store_id": store, "kind": "tcp", "target": "127.79.0.1:1"}],
        state="up",
        state_since=utcnow() - timedelta(days=1),
    )
    now = utcnow()
    async with db.engine.begin() as conn:
        await conn.execute(
            CheckResult.__table__.insert(),
            [
                {
                    "monitor_id": m,
                    "checked_at": now - timedelta(hours=h),
                    "outcome": "ok",
                    "latency_ms": 1.0,
                    "steps": [],
                    "manual": False,
                }
                for h in (0, 1, 2, 3)
            ],
        )
    assert await rollup_pending(db, now) == 3  # the 3 complete hours; not the current one
    assert await rollup_pending(db, now) == 0
    async with db.sessionmaker() as s:
        assert await s.scalar(select(func.count()).select_from(RolledUpHour)) == 3
        # Up throughout: no hour row; the days of those hours count their results.
        assert await s.scalar(select(func.count()).where(Rollup.period == "hour")) == 0
        days = (await s.execute(select(Rollup).where(Rollup.period == "day"))).scalars().all()
    rolled = {d.bucket_start.date() for d in days}
    assert rolled == {(now - timedelta(hours=h)).astimezone(UTC).date() for h in (1, 2, 3)}
    in_them = [h for h in (0, 1, 2, 3) if (now - timedelta(hours=h)).astimezone(UTC).date() in rolled]
    assert sum(d.count for d in days) == len(in_them)


async def test_retention_deletes_old_results_in_batches(db):
    store = await add_store(db)
    [m] = await add_monitors(db, [{"store_id": store, "kind": "tcp", "target": "127.79.0.1:1"}])
    now = utcnow()
    async with db.engine.begin() as conn:
        await conn.execute(
            CheckResult.__table__.insert(),
            [
                {
                    "monitor_id": m,
                    "checked_at": now - timedelta(days=d, minutes=i),
                    "outcome": "ok",
                    "steps": [],
                    "manual": False,
                }
                for d in (1, 40)
                for i in range(25)
            ],
        )
    assert await purge_results(db, now - timedelta(days=30), batch=10) == 25
    async with db.sessionmaker() as s:
        assert await s.scalar(select(func.count()).select_from(CheckResult)) == 25
