"""The windows job puts a store's monitors into maintenance at a window's start and out at
its end, through the state machine; history counts the window as maintenance, never down,
even when checks fail during it. PostgreSQL and SQLite."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from app.history.uptime import Period, uptime_for_terminals
from app.inventory.models import Monitor, Store
from app.monitoring.models import StateChange
from app.monitoring.windows import ENDED, IN_WINDOW, OUTSIDE_HOURS, apply_windows
from app.monitoring.writer import CheckOutcome, write_outcomes
from app.vocabulary import Outcome, State
from app.windows.schemas import WindowIn
from app.windows.service import create_window, end_window, set_trading_hours
from tests.history.helpers import monitor, store, terminal, terminal_info
from tests.monitoring.helpers import stored_results

BASE = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)  # Monday 30 November 2026, 10:00 in Amsterdam


def t(minutes: float) -> datetime:
    return BASE + timedelta(minutes=minutes)


async def run_job(db, now, **kw):
    async with db.sessionmaker() as s:
        report = await apply_windows(s, now, **kw)
        await s.commit()
    return report


async def states(db, *ids):
    async with db.sessionmaker() as s:
        rows = (await s.execute(select(Monitor.id, Monitor.state).where(Monitor.id.in_(ids)))).all()
    return {i: st for i, st in rows}


async def changes(db, mid):
    async with db.sessionmaker() as s:
        rows = await s.execute(
            select(StateChange.at, StateChange.from_state, StateChange.to_state, StateChange.diagnosis)
            .where(StateChange.monitor_id == mid)
            .order_by(StateChange.at, StateChange.id)
        )
        return [tuple(r) for r in rows]


async def new_window(db, now, **fields):
    async with db.sessionmaker() as s:
        return await create_window(s, WindowIn(**fields), created_by="test", now=now)


async def fail(db, mids, at):
    await write_outcomes(db, [CheckOutcome(m, Outcome.FAIL, at, diagnosis="tcp_refused") for m in mids])


async def test_window_is_maintenance_in_state_and_history(db):
    sid = await store(db, "S-AMS", tz="Europe/Amsterdam")
    tid = await terminal(db, sid)
    own = await monitor(db, sid, tid, initial="up")
    network = await monitor(db, sid, None, initial="up")
    await new_window(db, t(-30), store="S-AMS", title="Refit", starts_at=t(60), ends_at=t(120))

    assert (await run_job(db, t(59))).entered == 0
    report = await run_job(db, t(60) + timedelta(seconds=4))
    assert report.entered == 2
    assert await states(db, own, network) == {own: State.MAINTENANCE, network: State.MAINTENANCE}
    # Dated at the window's start: nothing happened to the monitors since.
    assert (await changes(db, own))[-1] == (t(60), State.UP, State.MAINTENANCE, IN_WINDOW)
    async with db.sessionmaker() as s:
        assert (await s.get(Store, sid)).status == State.MAINTENANCE

    # Checks keep failing during the refit: stored, but the state stays maintenance.
    for minute in (70, 71, 72, 90):
        await fail(db, [own, network], t(minute))
    assert await states(db, own, network) == {own: State.MAINTENANCE, network: State.MAINTENANCE}
    assert len(await stored_results(db)) == 8
    assert (await run_job(db, t(100))).entered == 0  # nothing to do twice

    # At its end: unknown (we did not watch), until the next results say what it is.
    report = await run_job(db, t(120))
    assert report.left == 2
    assert (await changes(db, own))[-1] == (t(120), State.MAINTENANCE, State.UNKNOWN, ENDED)
    await fail(db, [own], t(121))  # the streak went on during the window: down at once
    assert await states(db, own) == {own: State.DOWN}

    info = await terminal_info(db, tid)
    async with db.sessionmaker() as s:
        (u,) = await uptime_for_terminals(s, [info], Period.rolling(t(0), t(150)), per_day=False, now=t(150))
    f = u.total
    assert f.up == 3600  # 09:00-10:00
    assert f.paused == 3600  # the window: maintenance, not down
    assert f.unknown == 60  # 11:00-11:01
    assert f.down == 29 * 60  # from the first result after the window
    assert f.outages == 1


async def test_end_now_and_delete_return_monitors(db):
    sid = await store(db, "S-1")
    tid = await terminal(db, sid)
    own = await monitor(db, sid, tid, initial="down")
    paused = await monitor(db, sid, tid, initial="paused", kind="cloud")
    window = await new_window(db, t(0), store="S-1", title="Cabling", starts_at=t(0), ends_at=t(600))
    await run_job(db, t(1))
    assert await states(db, own, paused) == {own: State.MAINTENANCE, paused: State.PAUSED}
    async with db.sessionmaker() as s:
        ended = await end_window(s, window.id, now=t(5))
    assert ended is not None and ended.ends_at == t(5)
    await run_job(db, t(5) + timedelta(seconds=3))
    assert await states(db, own, paused) == {own: State.UNKNOWN, paused: State.PAUSED}


async def test_weekly_region_window_follows_each_stores_zone(db):
    ams = await store(db, "S-AMS", tz="Europe/Amsterdam", region="Benelux")
    nyc = await store(db, "S-NYC", tz="America/New_York", region="Benelux")
    other = await store(db, "S-OTHER", tz="Europe/Amsterdam", region="North")
    m = {sid: await monitor(db, sid, await terminal(db, sid), initial="up") for sid in (ams, nyc, other)}
    await new_window(
        db,
        t(0),
        scope="region",
        region="Benelux",
        title="Mondays",
        weekdays=["mon"],
        start_time="10:00",
        duration_minutes=60,
    )
    await run_job(db, t(30))  # 10:30 in Amsterdam, 04:30 in New York
    assert await states(db, *m.values()) == {m[ams]: State.MAINTENANCE, m[nyc]: State.UP, m[other]: State.UP}
    await run_job(db, t(6 * 60 + 15))  # 16:15 Amsterdam, 10:15 New York
    assert await states(db, *m.values()) == {
        m[ams]: State.UNKNOWN,
        m[nyc]: State.MAINTENANCE,
        m[other]: State.UP,
    }


async def test_outside_trading_hours_counts_as_maintenance(db):
    sid = await store(db, "S-SHOP", tz="Europe/Amsterdam")
    mid = await monitor(db, sid, await terminal(db, sid), initial="up")
    async with db.sessionmaker() as s:
        shop = await s.get(Store, sid)
        await set_trading_hours(s, shop, {d: (9 * 60, 18 * 60) for d in range(6)})  # Sunday closed
    await run_job(db, t(0))  # Monday 10:00: open
    assert await states(db, mid) == {mid: State.UP}
    await run_job(db, t(8 * 60 + 1))  # Monday 18:01: closed
    assert await states(db, mid) == {mid: State.MAINTENANCE}
    assert (await changes(db, mid))[-1][3] == OUTSIDE_HOURS
    await run_job(db, t(8 * 60 + 1), trading_hours=False)  # switched off: back to unknown
    assert await states(db, mid) == {mid: State.UNKNOWN}


async def test_the_worker_runs_the_windows_job(db, settings):
    from app.db import utcnow
    from app.monitoring.worker import Worker

    sid = await store(db, "S-W")
    mid = await monitor(db, sid, await terminal(db, sid), initial="up")
    now = utcnow()
    window = await new_window(
        db, now, store="S-W", title="Now", starts_at=now, ends_at=now + timedelta(hours=1)
    )
    worker = Worker(settings, db, cloud=False)
    await worker.run_maintenance("windows")
    assert await states(db, mid) == {mid: State.MAINTENANCE}
    async with db.sessionmaker() as s:
        await end_window(s, window.id)
    await worker.run_maintenance("windows")
    assert await states(db, mid) == {mid: State.UNKNOWN}
