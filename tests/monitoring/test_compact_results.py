"""Compact results (issue 14): plain successes are folded into a row per monitor and day, not
stored one row each, and every reader still shows what storing every result showed: the
terminal page's recent checks, its latency chart, the last check, the hour rollups; an agent's
replayed buffer is still written once. Both databases."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from app.dashboard.queries import LATENCY_BUCKET_S, terminal_detail
from app.db import in_transaction, utcnow
from app.inventory.models import Monitor, Terminal
from app.monitoring import compact
from app.monitoring.compact import BUCKET_S, Day, Kept, kept_results, recent_folded
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


async def test_scheduled_results_are_folded_manual_checks_are_rows(db):
    monitor, _ = await _terminal(db)
    now = utcnow()
    outcomes = _outcomes(monitor, hour_floor(now) - timedelta(hours=2), 100)
    await _write(db, outcomes)
    async with db.sessionmaker() as s:
        rows = (await s.execute(select(CheckResult).order_by(CheckResult.checked_at))).scalars().all()
        days = (await s.execute(select(LatencyDay))).scalars().all()
    assert [(r.outcome, r.diagnosis, r.manual) for r in rows] == [("ok", None, True)]
    folded = [Day.unpack(d.buckets, d.recent) for d in days]
    assert sum(sum(f.counts) for f in folded) == 100 - 4  # every other scheduled ok, once
    assert all(len(d.buckets) < 400 for d in days)  # a day of buckets is a few hundred bytes
    # The two failures (the second made it down), the ok that ended the outage and the
    # warning, whole.
    kept = [e for d in days for e in Kept.unpack(d.kept).entries]
    assert [(e["outcome"], e["diagnosis"], e["detail"]) for e in kept] == [
        ("fail", "tcp_timeout", "timed out"),
        ("fail", "tcp_timeout", "timed out"),
        ("ok", None, None),
        ("ok", "cert_expires_soon", None),
    ]


def _failing(monitor_id, start, n):
    """Failures as a TCP probe reports them, the same every time but for their timings."""
    return [
        CheckOutcome(
            monitor_id,
            Outcome.FAIL,
            start + timedelta(seconds=60 * i),
            5000.0 + i,
            [
                {"step": "resolve", "ok": True, "ms": 0.5 + i, "detail": ""},
                {
                    "step": "connect",
                    "ok": False,
                    "ms": 5000.0 + i,
                    "detail": f"no answer from 10.0.0.{i // 4}",
                },
            ],
            "tcp_timeout",
            "timed out",
        )
        for i in range(n)
    ]


async def test_failures_while_down_are_kept_whole_in_tens_of_bytes(db):
    monitor, _ = await _terminal(db)
    now = utcnow()
    outcomes = _failing(monitor, now - timedelta(minutes=61), 60)
    await _write(db, outcomes)
    async with db.sessionmaker() as s:
        rows = (await s.execute(select(CheckResult.checked_at))).scalars().all()
        [day] = (await s.execute(select(LatencyDay))).scalars().all()
        listed = await kept_results(s, [monitor], now - timedelta(hours=2), now)
    assert rows == []  # the second made it down: kept too
    expected = outcomes
    assert [(r.checked_at, r.outcome, r.latency_ms, r.diagnosis, r.detail) for r in listed] == [
        (o.checked_at, o.outcome, o.latency_ms, o.diagnosis, o.detail) for o in expected
    ]
    assert [e["steps"] for e in Kept.unpack(day.kept).entries] == [o.steps for o in expected]
    # A repeat (a new address every 4th) is its time and timings: tens of bytes, not a row's ~370.
    assert len(day.kept) < 30 * len(expected)


async def test_past_its_limit_a_day_stores_its_failures_as_rows(db, monkeypatch):
    monkeypatch.setattr(compact, "MAX_KEPT", 5)
    monitor, _ = await _terminal(db)
    now = utcnow()
    outcomes = _failing(monitor, now - timedelta(minutes=11), 10)
    await _write(db, outcomes, batch=3)
    async with db.sessionmaker() as s:
        rows = (
            (await s.execute(select(CheckResult.checked_at).order_by(CheckResult.checked_at))).scalars().all()
        )
        kept = await kept_results(s, [monitor], now - timedelta(hours=1), now)
    # Five fit in the day; the other five are rows.
    assert [k.checked_at for k in kept] == [o.checked_at for o in outcomes[:5]]
    assert rows == [o.checked_at for o in outcomes[5:]]


async def test_the_terminal_page_lists_kept_failures_and_charts_their_latency(db):
    monitor, poiid = await _terminal(db)
    now = utcnow()
    outcomes = _failing(monitor, now - timedelta(minutes=31), 30)
    await _write(db, outcomes)
    async with db.sessionmaker() as s:
        detail = await terminal_detail(s, poiid, now)
    assert detail is not None
    expected = sorted(outcomes, key=lambda o: o.checked_at, reverse=True)[:20]
    assert [(c.checked_at, c.outcome, c.latency_ms, c.diagnosis) for c in detail.checks] == [
        (o.checked_at, o.outcome, o.latency_ms, o.diagnosis) for o in expected
    ]
    assert [(int(at.timestamp()), ms) for at, ms in detail.latency] == [
        (k, pytest.approx(ms)) for k, ms in _quarter_means(outcomes)
    ]


async def test_kept_results_are_cleared_with_the_raw_results(db):
    from app.monitoring.maintenance import purge_results

    monitor, _ = await _terminal(db)
    now = utcnow()
    await _write(db, _failing(monitor, now - timedelta(days=20), 3) + _failing(monitor, now, 3))
    async with db.sessionmaker() as s:
        before = await kept_results(s, [monitor], now - timedelta(days=30), now + timedelta(hours=1))
    await purge_results(db, now - timedelta(days=14))
    async with db.sessionmaker() as s:
        after = await kept_results(s, [monitor], now - timedelta(days=30), now + timedelta(hours=1))
        days = await s.scalar(select(func.count()).select_from(LatencyDay))
    assert len(before) > len(after) > 0
    assert after == [k for k in before if k.checked_at >= now - timedelta(days=14)]
    assert days == 2  # the old day's buckets stay


def test_kept_entries_pack_and_unpack_as_they_were():
    at = utcnow()
    steps = [{"step": "connect", "ok": False, "ms": 3.25, "detail": "refused"}]
    day = Kept([])
    results = [
        {
            "checked_at": at + timedelta(seconds=i),
            "outcome": "fail",
            "latency_ms": None if i else 1.5,
            "diagnosis": "tcp_refused",
            "detail": "refused",
            "steps": steps,
        }
        for i in range(3)
    ] + [
        {
            "checked_at": at,
            "outcome": "ok",
            "latency_ms": 2.0,
            "diagnosis": "cert_expires_soon",
            "detail": None,
            "steps": [],
        }
    ]
    for r in results:
        day.add(r)
    again = Kept.unpack(day.packed()).entries
    assert [datetime.fromtimestamp(e["checked_at"], UTC) for e in again] == [
        at,
        at,
        at + timedelta(seconds=1),
        at + timedelta(seconds=2),
    ]
    assert [(e["outcome"], e["latency_ms"], e["steps"]) for e in again] == [
        ("fail", 1.5, steps),
        ("ok", 2.0, []),
        ("fail", None, steps),
        ("fail", None, steps),
    ]


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
        got = await recent_folded(s, [monitor], midnight + timedelta(minutes=8), limit=15)
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
    kept = sum(len(Kept.unpack(d.kept).entries) for d in days)
    assert (rows, kept, folded) == (0, 1, 19)  # the first ok (unknown -> up) kept whole, once


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


async def test_a_rows_steps_are_stored_compact_and_read_back_in_both_forms(db):
    from sqlalchemy import text

    monitor, _ = await _terminal(db)
    now = utcnow()
    steps = [
        {"step": "resolve", "ok": True, "ms": 0.5, "detail": ""},
        {"step": "connect", "ok": False, "ms": 3.25, "detail": "refused"},
    ]
    # A manual check is a row: written by the writer (compact), and a row as stored before (dicts).
    await _write(db, [CheckOutcome(monitor, Outcome.FAIL, now, 3.25, steps, "tcp_refused", "x", manual=True)])
    async with db.engine.begin() as conn:
        stored = await conn.scalar(text("SELECT steps FROM check_results"))
        await conn.execute(
            text(
                "INSERT INTO check_results (monitor_id, checked_at, outcome, steps, manual)"
                " VALUES (:m, :at, 'fail', :steps, false)"
            ),
            {"m": monitor, "at": now - timedelta(minutes=1), "steps": json.dumps(steps)},
        )
    assert stored == '[["resolve",1,0.5],["connect",0,3.25,"refused"]]'
    async with db.sessionmaker() as s:
        read = (await s.execute(select(CheckResult.steps).order_by(CheckResult.checked_at))).scalars().all()
    assert read == [steps, steps]


def test_kept_results_appended_to_a_packed_day_are_those_added_one_by_one():
    """`Kept.append` splices new entries into the packed text (no re-formatting of the day's
    entries): the same entries, in time order (a late one too), the same overflow past the
    limit, and for in-order results the same bytes as packing the whole list again."""
    rng = random.Random(7)
    at = utcnow()

    def result(i: int, kind: int) -> dict:
        steps = [
            {"step": "connect", "ok": kind == 2, "ms": 1.25 + i % 7, "detail": "refused" if kind else ""}
        ]
        if kind == 3:  # a step this encoding does not compact
            steps.append({"step": "identity", "serial": "X1"})
        return {
            "checked_at": at + timedelta(seconds=60 * i),
            "outcome": ("fail", "error", "ok", "fail")[kind],
            "latency_ms": None if i % 5 == 0 else 2.5 + i,
            "diagnosis": ("tcp_refused", "provider_unavailable", "cert_expires_soon", "tcp_refused")[kind],
            "detail": f"seen {kind % 2}",
            "steps": steps,
        }

    for _ in range(200):
        results = [result(i, rng.choice((0, 0, 0, 1, 2, 3))) for i in range(rng.randint(1, 40))]
        late = rng.random() < 0.3
        if late:  # an agent's buffer: older than what the day holds
            results.append(result(rng.randrange(len(results)), 1) | {"checked_at": at - timedelta(seconds=1)})
        limit = rng.choice((8, 120))
        packed, overflow = None, []
        one_by_one, expected_overflow = Kept([]), []
        while results:
            size = rng.randint(1, 5)
            batch = sorted(results[:size], key=lambda r: r["checked_at"])  # the writer's order
            results = results[size:]
            packed, over = Kept.append(packed, batch, limit)
            overflow += over
            room = max(limit - len(one_by_one.entries), 0)
            for r in batch[:room]:
                one_by_one.add(r)
            expected_overflow += batch[room:]
        assert Kept.unpack(packed).entries == one_by_one.entries
        assert overflow == expected_overflow
        if not late:
            assert packed == one_by_one.packed()
