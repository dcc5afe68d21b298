"""Compact results (issue 14): plain successes are folded into a row per monitor and day, not
stored one row each, and every reader still shows what storing every result showed: the
terminal page's recent checks, its latency chart, the last check, the hour rollups; an agent's
replayed buffer is still written once. Both databases."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from app.dashboard.queries import LATENCY_BUCKET_S, terminal_detail
from app.db import in_transaction, utcnow
from app.inventory.models import Monitor, Terminal
from app.monitoring.compact import BUCKET_S, Day, recent_plain
from app.monitoring.maintenance import rollup_hour
from app.monitoring.models import CheckResult, LatencyDay, Rollup
from app.monitoring.writer import CheckOutcome, apply_outcomes, hour_floor
from app.vocabulary import Outcome
from tests.agents.test_protocol import API, INSTANCE, beat, enrol, fleet, result
from tests.monitoring.helpers import add_monitors, add_store, add_terminals


def _outcomes(monitor_id, start, n):
    """A monitor checked every 60 s: ok, but two failures (down), the ok after them (up
    again), an ok with a warning and a manual check among them."""
    found = []
    for i in range(n):
        at = start + timedelta(seconds=60 * i, milliseconds=137 * i)
        latency = 1.0 + (i % 7) * 0.37
        if i in (40, 41):
            found.append(CheckOutcome(monitor_id, Outcome.FAIL, at, 1000.0, [], "tcp_timeout", "timed out"))
        elif i == 50:
            found.append(CheckOutcome(monitor_id, Outcome.OK, at, latency, [], "cert_expires_soon"))
        else:
            found.append(CheckOutcome(monitor_id, Outcome.OK, at, latency))
        if i == 60:
            manual = at + timedelta(seconds=20)
            found.append(CheckOutcome(monitor_id, Outcome.OK, manual, 9.0, [], manual=True))
    return found


async def _terminal(db):
    store = await add_store(db)
    [terminal] = await add_terminals(db, store, 1)
    [monitor] = await add_monitors(
        db,
        [{"store_id": store, "terminal_id": terminal, "kind": "tcp", "target": "127.79.9.9:8443"}],
        state="up",
        state_since=utcnow() - timedelta(days=2),
    )
    async with db.sessionmaker() as s:
        poiid = await s.scalar(select(Terminal.poiid).where(Terminal.id == terminal))
    return monitor, poiid


async def _write(db, outcomes, batch=7):
    for i in range(0, len(outcomes), batch):
        await in_transaction(db, lambda s, part=outcomes[i : i + batch]: apply_outcomes(s, part))


def _quarter_means(outcomes):
    sums: dict[int, list[float]] = {}
    for o in outcomes:
        key = int(o.checked_at.timestamp()) // LATENCY_BUCKET_S * LATENCY_BUCKET_S
        total = sums.setdefault(key, [0.0, 0])
        total[0] += o.latency_ms
        total[1] += 1
    return [(k, v[0] / v[1]) for k, v in sorted(sums.items())]


async def test_plain_successes_are_folded_the_rest_are_rows(db):
    monitor, _ = await _terminal(db)
    now = utcnow()
    outcomes = _outcomes(monitor, hour_floor(now) - timedelta(hours=2), 100)
    await _write(db, outcomes)
    async with db.sessionmaker() as s:
        rows = (await s.execute(select(CheckResult).order_by(CheckResult.checked_at))).scalars().all()
        days = (await s.execute(select(LatencyDay))).scalars().all()
    # The two failures, the ok that ended the outage, the warning and the manual check.
    assert [(r.outcome, r.diagnosis, r.manual) for r in rows] == [
        ("fail", "tcp_timeout", False),
        ("fail", "tcp_timeout", False),
        ("ok", None, False),
        ("ok", "cert_expires_soon", False),
        ("ok", None, True),
    ]
    folded = [Day.unpack(d.buckets, d.recent) for d in days]
    assert sum(sum(f.counts) for f in folded) == 100 - 4  # every other scheduled ok, once
    assert all(len(d.buckets) < 400 for d in days)  # a day of buckets is a few hundred bytes


async def test_the_terminal_page_shows_what_every_row_showed(db):
    monitor, poiid = await _terminal(db)
    now = utcnow()
    outcomes = _outcomes(monitor, now - timedelta(minutes=101), 100)
    await _write(db, outcomes)
    async with db.sessionmaker() as s:
        detail = await terminal_detail(s, poiid, now)
        m = await s.get(Monitor, monitor)
    assert detail is not None
    # Recent checks: the newest 20 results, plain ones included, as they were.
    expected = sorted(outcomes, key=lambda o: o.checked_at, reverse=True)[:20]
    assert [(c.checked_at, c.outcome, c.manual, c.diagnosis) for c in detail.checks] == [
        (o.checked_at, o.outcome, o.manual, o.diagnosis) for o in expected
    ]
    assert [c.latency_ms for c in detail.checks] == pytest.approx([o.latency_ms for o in expected], rel=1e-6)
    # Latency chart: the mean per quarter hour of every result with a latency (manual ones too).
    assert [(int(at.timestamp()), ms) for at, ms in detail.latency] == [
        (k, pytest.approx(ms, rel=3e-3)) for k, ms in _quarter_means(outcomes)
    ]
    # The last check: from the monitor's row.
    last = max(outcomes, key=lambda o: o.checked_at)
    assert (m.last_checked_at, m.last_latency_ms) == (last.checked_at, last.latency_ms)


async def test_without_a_day_of_results_the_chart_shows_7_days_in_hours(db):
    monitor, poiid = await _terminal(db)
    now = utcnow()
    outcomes = _outcomes(monitor, now - timedelta(days=3), 100)
    await _write(db, outcomes)
    async with db.sessionmaker() as s:
        detail = await terminal_detail(s, poiid, now)
    assert detail is not None and detail.latency_bucket_s == 3600
    hourly: dict[int, list[float]] = {}
    for o in outcomes:
        hourly.setdefault(int(o.checked_at.timestamp()) // 3600 * 3600, []).append(o.latency_ms)
    assert [(int(at.timestamp()), ms) for at, ms in detail.latency] == [
        (k, pytest.approx(sum(v) / len(v), rel=3e-3)) for k, v in sorted(hourly.items())
    ]


async def test_hour_rollups_count_the_folded_successes(db):
    monitor, _ = await _terminal(db)
    hour = hour_floor(utcnow()) - timedelta(hours=3)
    outcomes = _outcomes(monitor, hour, 60)  # one hour: 60 scheduled results and a manual one
    outcomes += [CheckOutcome(monitor, Outcome.OK, hour + timedelta(hours=1, minutes=1), 5.0)]
    await _write(db, outcomes)
    async with db.sessionmaker() as s:
        await rollup_hour(s, hour)
        await s.commit()
        r = (await s.execute(select(Rollup).where(Rollup.monitor_id == monitor))).scalar_one()
    scheduled = [o for o in outcomes[:-1] if not o.manual]
    assert (r.count, r.ok_count) == (60, 58)
    assert r.latency_sum_ms == pytest.approx(sum(o.latency_ms for o in scheduled), rel=2e-3)
    # Min and max of the raw results and of the folded 5-minute means.
    assert (r.latency_min_ms, r.latency_max_ms) == (1.0, 1000.0)


async def test_a_healthy_hour_has_no_hour_row_and_the_day_counts_it(db):
    from app.monitoring.maintenance import rollup_day, rollup_pending
    from app.monitoring.models import RolledUpHour

    monitor, _ = await _terminal(db)
    day = (utcnow() - timedelta(days=2)).replace(hour=0, minute=0, second=0, microsecond=0)
    outcomes = _outcomes(monitor, day + timedelta(hours=5), 120)  # an outage in hour 5
    await _write(db, outcomes)
    assert await rollup_pending(db, day + timedelta(days=1), max_hours=24) == 24
    async with db.sessionmaker() as s:
        await rollup_day(s, day)
        await s.commit()
        hours = (await s.execute(select(Rollup).where(Rollup.period == "hour"))).scalars().all()
        [whole] = (await s.execute(select(Rollup).where(Rollup.period == "day"))).scalars().all()
        marked = await s.scalar(select(func.count()).select_from(RolledUpHour))
    # Hour 5 holds the outage (raw results, a minute down) and the warning; the hours of plain
    # successes only (a manual check is no sample of the schedule) are in latency_days: no row.
    assert [h.bucket_start.hour for h in hours] == [5]
    assert marked == 24  # but every hour is rolled up
    scheduled = [o for o in outcomes if not o.manual]
    assert (whole.count, whole.ok_count) == (len(scheduled), len(scheduled) - 2)
    assert whole.latency_sum_ms == pytest.approx(sum(o.latency_ms for o in scheduled), rel=2e-3)
    assert whole.seconds_down == pytest.approx(sum(h.seconds_down for h in hours)) and whole.seconds_down > 0


async def test_recent_successes_of_two_days_then_forgotten(db):
    from app.monitoring.compact import forget_recent

    monitor, _ = await _terminal(db)
    now = utcnow()
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    # Across midnight: the newest are today's, then yesterday's.
    outcomes = [
        CheckOutcome(monitor, Outcome.OK, midnight + timedelta(seconds=60 * i), 2.0) for i in range(-12, 8)
    ]
    await _write(db, outcomes)
    async with db.sessionmaker() as s:
        got = await recent_plain(s, [monitor], midnight + timedelta(minutes=8), limit=15)
        assert [r.checked_at for r in got] == [o.checked_at for o in outcomes[::-1][:15]]
        await forget_recent(s, (midnight + timedelta(days=1)).date())
        await s.commit()
        assert await s.scalar(select(func.count()).where(LatencyDay.recent.is_not(None))) == 1
        assert await s.scalar(select(func.count()).select_from(LatencyDay)) == 2  # the buckets stay


async def test_a_replayed_agent_buffer_is_folded_once(client, db):
    await fleet(db)
    _, auth = await enrol(client, "S-0001")
    await beat(client, auth)
    config = (await client.get(f"{API}/config", headers=auth)).json()["monitors"][0]
    monitor, every = config["id"], timedelta(seconds=config["interval_s"])
    start = utcnow() - 20 * every
    batch = {
        "instance": INSTANCE,
        "results": [result(i + 1, monitor, "ok", start + i * every) for i in range(20)],
    }
    first = await client.post(f"{API}/results", headers=auth, json=batch)
    assert first.json() == {"accepted": 20, "duplicates": 0, "last_seq": 20}
    again = await client.post(f"{API}/results", headers=auth, json=batch)  # the answer was lost
    assert again.json() == {"accepted": 0, "duplicates": 20, "last_seq": 20}
    async with db.sessionmaker() as s:
        rows = await s.scalar(select(func.count()).where(CheckResult.monitor_id == monitor))
        days = (await s.execute(select(LatencyDay).where(LatencyDay.monitor_id == monitor))).scalars().all()
    folded = sum(sum(Day.unpack(d.buckets, d.recent).counts) for d in days)
    assert rows + folded == 20  # the first ok (unknown -> up) is a row, the others folded, once
    assert rows == 1


def test_a_day_packs_buckets_and_recent():
    day = Day.empty()
    at = utcnow().replace(hour=10, minute=2, second=0, microsecond=0)
    day.add(at, 2.0)
    day.add(at + timedelta(seconds=60), 4.0)
    day.add(at + timedelta(seconds=BUCKET_S), None)
    again = Day.unpack(**day.packed())
    b = (10 * 3600) // BUCKET_S
    assert (again.counts[b], again.timed[b], again.means[b]) == (2, 2, 3.0)
    assert (again.counts[b + 1], again.timed[b + 1]) == (1, 0)
    assert [t for t, _ in again.recent] == [
        (at + timedelta(seconds=s)).timestamp() for s in (0, 60, BUCKET_S)
    ]
