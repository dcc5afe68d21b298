"""Long windows from rollups (whole hours and days) plus state changes at the partial edges
give exactly the figures computed from the state changes alone, at every bucket edge."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from app.history.uptime import Period, rollup_buckets, rollup_totals, uptime_for_terminals
from app.monitoring.maintenance import rollup_day, rollup_hour
from tests.history.helpers import at, monitor, store, terminal, terminal_info


def test_buckets():
    ts = lambda *a: at(*a).timestamp()  # noqa: E731
    h0, h1, b = rollup_buckets(ts(0, 17), ts(50, 43))
    assert (h0, h1) == (ts(1), ts(50))
    assert [p for p, _t, _l in b].count("day") == 1 and len(b) == 23 + 1 + 2
    assert (
        b[0] == ("hour", ts(1), 3600) and b[23] == ("day", ts(24), 86400) and b[-1] == ("hour", ts(49), 3600)
    )
    assert rollup_buckets(ts(0, 10), ts(0, 50))[2] == []
    assert rollup_buckets(ts(0), ts(48))[2] == [("day", ts(0), 86400), ("day", ts(24), 86400)]


async def _roll(db, first: datetime, hours: int):
    async with db.sessionmaker() as s:
        for h in range(hours):
            await rollup_hour(s, first + timedelta(hours=h))
        for d in range(hours // 24):
            await rollup_day(s, first + timedelta(days=d))
        await s.commit()


async def test_rollups_equal_the_raw_figures_at_bucket_edges(db):
    s1, s2 = await store(db), await store(db)
    # T1: one monitor, changes on and off bucket edges (exactly at an hour, exactly at midnight)
    t1 = await terminal(db, s1)
    await monitor(
        db,
        s1,
        t1,
        [
            (at(-2), "up"),
            (at(0, 17), "down"),
            (at(3), "up"),
            (at(23, 59, 30), "unknown"),
            (at(24), "down"),
            (at(24, 0, 30), "up"),
            (at(30, 10), "down"),
            (at(50, 20), "up"),
        ],
    )
    # T2 and T3 in store 2, whose network is down all of day 2 (DNS) and flaps (TCP)
    t2, t3 = await terminal(db, s2), await terminal(db, s2)
    await monitor(db, s2, None, [(at(-3), "up"), (at(23, 30), "down"), (at(49, 5), "up")], kind="dns")
    await monitor(
        db,
        s2,
        None,
        [(at(-3), "up"), (at(10, 5), "down"), (at(10, 25), "up"), (at(12), "unknown"), (at(12, 40), "up")],
        kind="tcp",
    )
    # T2's own monitor overlaps the TCP flap in hour 10 (ambiguous from rollups: its state changes are read)
    await monitor(db, s2, t2, [(at(-1), "up"), (at(10, 15), "down"), (at(10, 45), "up")])
    await monitor(db, s2, t3, [(at(-1), "up")])
    # T4: paused in the middle; T5: added inside the window
    t4 = await terminal(db, s1)
    await monitor(db, s1, t4, [(at(-1), "up"), (at(5), "paused"), (at(7), "down"), (at(8), "up")])
    t5 = await terminal(db, s1, created=at(20))
    await monitor(db, s1, t5, [(at(20, 1), "up"), (at(40), "down"), (at(41), "up")])
    await _roll(db, at(-24), 24 * 4)

    terminals = [await terminal_info(db, t) for t in (t1, t2, t3, t4, t5)]
    windows = [
        (at(0), at(48)),
        (at(0, 17), at(50, 43)),
        (at(23, 59, 59), at(24, 0, 1)),
        (at(9, 59), at(13, 1)),
        (at(-0.5), at(72)),
        (at(1), at(2)),
        (at(23, 30), at(49, 5)),
    ]
    used_rollups = 0
    for start, end in windows:
        async with db.sessionmaker() as s:
            exact = {
                u.terminal.id: u.total
                for u in await uptime_for_terminals(
                    s, terminals, Period.rolling(start, end), per_day=False, now=at(100)
                )
            }
            fast, fell_back = await rollup_totals(s, terminals, start, end, now=at(100))
        used_rollups += len(terminals) - fell_back
        for t in terminals:
            e, f = exact[t.id], fast[t.id]
            for name in ("up", "down", "unknown", "paused"):
                assert getattr(f, name) == pytest.approx(getattr(e, name), abs=0.01), (
                    t.poiid,
                    start,
                    end,
                    name,
                )
    assert used_rollups >= 10  # T1 and T3 come from the rollups in the long windows


async def test_buckets_not_rolled_up_yet_come_from_state_changes(db):
    s = await store(db)
    t = await terminal(db, s)
    await monitor(db, s, t, [(at(-1), "up"), (at(30), "down"), (at(31, 30), "up")])
    await _roll(db, at(0), 24)  # only the first day is rolled up
    ti = await terminal_info(db, t)
    async with db.sessionmaker() as ses:
        fast, _ = await rollup_totals(ses, [ti], at(0), at(48), now=at(100))
    assert fast[t].down == 5400 and fast[t].up == 48 * 3600 - 5400
