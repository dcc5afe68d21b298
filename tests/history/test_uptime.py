"""Exact uptime from hand-made state change sequences, on PostgreSQL and SQLite."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from app.history.uptime import (
    Period,
    combined_segments,
    report,
    tally,
    terminal_history,
    terminal_timeline,
    terminal_uptimes,
    uptime_for_terminals,
)
from tests.history.helpers import at, monitor, store, terminal, terminal_info


async def figures(db, tid, start, end, *, per_day=False):
    t = await terminal_info(db, tid)
    async with db.sessionmaker() as s:
        (u,) = await uptime_for_terminals(
            s, [t], Period.rolling(start, end), per_day=per_day, now=end + timedelta(days=1)
        )
    return u


def test_combined_segments_and_tally():
    # two monitors: A down 10..20, B unknown 15..30 (and down wins over unknown), window 0..40
    a = ("up", [(10.0, "down"), (20.0, "up")])
    b = ("up", [(15.0, "unknown"), (30.0, "up")])
    segs = combined_segments([a, b], 0.0, 40.0)
    assert segs == [(0.0, 10.0, "up"), (10.0, 20.0, "down"), (20.0, 30.0, "unknown"), (30.0, 40.0, "up")]
    total, days = tally(segs, [0.0, 15.0, 40.0])
    assert (total.up, total.down, total.unknown, total.outages, total.longest_outage) == (20, 10, 10, 1, 10)
    assert (days[0].down, days[0].outages, days[1].down, days[1].outages, days[1].longest_outage) == (
        5,
        1,
        5,
        1,
        5,
    )
    # maintenance beats down (the live status rule), all paused is paused, nothing known is not counted
    segs = combined_segments([("maintenance", []), ("down", [])], 0.0, 5.0)
    assert segs == [(0.0, 5.0, "paused")]
    assert combined_segments([("none", [(3.0, "down")])], 0.0, 5.0) == [
        (0.0, 3.0, "none"),
        (3.0, 5.0, "down"),
    ]
    assert tally([(0.0, 3.0, "none")])[0].observed == 0


async def test_exact_seconds_with_a_change_before_the_window(db):
    s = await store(db)
    t = await terminal(db, s)
    # down since long before the window, up 30 min into it, unknown 1 h-1 h 20, down 2 h-2 h 05,
    # paused 3 h-3 h 30
    await monitor(
        db,
        s,
        t,
        [
            (at(-5), "down"),
            (at(0, 30), "up"),
            (at(1), "unknown"),
            (at(1, 20), "up"),
            (at(2), "down"),
            (at(2, 5), "up"),
            (at(3), "paused"),
            (at(3, 30), "up"),
            (at(5), "down"),
        ],
    )
    u = await figures(db, t, at(0), at(4))
    f = u.total
    assert f.down == 35 * 60  # 30 min (from before the window) + 5 min
    assert f.unknown == 20 * 60 and f.paused == 30 * 60
    assert f.up == 4 * 3600 - 35 * 60 - 20 * 60 - 30 * 60
    assert f.outages == 2 and f.longest_outage == 30 * 60  # clipped to the window
    assert f.uptime == pytest.approx(f.up / (f.up + f.down))  # unknown and paused are not counted


async def test_change_exactly_at_the_edges(db):
    s = await store(db)
    t = await terminal(db, s)
    await monitor(db, s, t, [(at(0), "down"), (at(1), "up"), (at(2), "down")])
    f = (await figures(db, t, at(0), at(2))).total
    assert (f.down, f.up, f.outages) == (3600, 3600, 1)  # the change at the end is outside [start, end)
    f = (await figures(db, t, at(1), at(3))).total
    assert (f.down, f.up, f.outages) == (3600, 3600, 1)


async def test_unknown_is_reported_apart_and_never_down(db):
    s = await store(db)
    t = await terminal(db, s)
    await monitor(db, s, t, [(at(-1), "up"), (at(1), "unknown"), (at(3), "up")])
    f = (await figures(db, t, at(0), at(4))).total
    assert (f.up, f.down, f.unknown) == (2 * 3600, 0, 2 * 3600)
    assert f.uptime == 1.0 and f.outages == 0


async def test_paused_and_maintenance_are_excluded(db):
    s = await store(db)
    t = await terminal(db, s)
    await monitor(
        db,
        s,
        t,
        [(at(-1), "up"), (at(1), "paused"), (at(2), "down"), (at(3), "maintenance"), (at(3, 30), "up")],
    )
    f = (await figures(db, t, at(0), at(4))).total
    assert (f.up, f.down, f.paused) == (5400, 3600, 5400)
    assert f.uptime == pytest.approx(5400 / 9000)


async def test_store_network_down_counts_for_each_of_its_terminals(db):
    s = await store(db)
    other = await store(db)
    t1, t2 = await terminal(db, s), await terminal(db, s)
    t3 = await terminal(db, other)
    for t in (t1, t2, t3):
        await monitor(db, s if t != t3 else other, t, [(at(-1), "up")], kind="cloud")
    # the store's DNS and TCP checks (terminal_id NULL): down 1 h-1 h 30 and 1 h 15-2 h (overlapping)
    await monitor(db, s, None, [(at(-1), "up"), (at(1), "down"), (at(1, 30), "up")], kind="dns")
    await monitor(db, s, None, [(at(-1), "up"), (at(1, 15), "down"), (at(2), "up")], kind="tcp")
    # and t1's own cloud monitor is down 1 h 45-2 h 30: overlaps the network outage
    await monitor(db, s, t1, [(at(-1), "up"), (at(1, 45), "down"), (at(2, 30), "up")], kind="tcp")
    f1, f2, f3 = [(await figures(db, t, at(0), at(4))).total for t in (t1, t2, t3)]
    assert (f2.down, f2.outages) == (3600, 1)  # the union, not the sum
    assert (f1.down, f1.outages, f1.longest_outage) == (5400, 1, 5400)
    assert f3.down == 0 and f3.up == 4 * 3600
    async with db.sessionmaker() as ses:
        rep = await report(ses, "store", s, Period.rolling(at(0), at(4)), now=at(24))
        fleet = await report(ses, "fleet", None, Period.rolling(at(0), at(4)), now=at(24))
    assert rep.total.terminals == 2 and rep.total.down == 9000
    # one store outage (1 h-2 h 30, some terminal down throughout), not the terminals' two summed
    assert (rep.total.outages, rep.total.longest_outage) == (1, 5400)
    assert rep.total.monitored == 1.0 and rep.total.span == 2 * 4 * 3600
    assert {g[0]: g[2].down for g in rep.groups} == {
        (await terminal_info(db, t1)).poiid: 5400,
        (await terminal_info(db, t2)).poiid: 3600,
    }
    assert fleet.total.terminals == 3 and fleet.total.up == 3 * 4 * 3600 - 9000
    assert fleet.total.uptime == pytest.approx((3 * 4 * 3600 - 9000) / (3 * 4 * 3600))


async def test_counted_from_when_the_terminal_was_added_and_never_changed(db):
    s = await store(db)
    t = await terminal(db, s, created=at(1))
    await monitor(db, s, t, [], initial="up", since=at(1, 30))  # created up, never changed
    f = (await figures(db, t, at(0), at(4))).total
    assert (f.up, f.down, f.unknown, f.observed) == (2.5 * 3600, 0, 0, 2.5 * 3600)
    # a terminal without monitors observes nothing
    bare = await terminal(db, s)
    f = (await figures(db, bare, at(0), at(4))).total
    assert f.observed == 0 and f.uptime is None


async def test_the_future_is_not_counted(db):
    s = await store(db)
    t = await terminal(db, s)
    await monitor(db, s, t, [(at(-1), "up")])
    ti = await terminal_info(db, t)
    async with db.sessionmaker() as ses:
        (u,) = await uptime_for_terminals(ses, [ti], Period.rolling(at(0), at(10)), per_day=False, now=at(2))
    assert u.total.up == 7200


async def test_dashboard_helper(db):
    s = await store(db)
    t1, t2 = await terminal(db, s), await terminal(db, s)
    await monitor(db, s, t1, [(at(-1), "up"), (at(1), "down"), (at(2), "up")])
    await monitor(db, s, t2, [(at(-1), "up")])
    async with db.sessionmaker() as ses:
        got = await terminal_uptimes(ses, [t1, t2], at(0), at(24))
    assert got[t1].uptime == pytest.approx(23 / 24) and got[t2].uptime == 1.0


async def test_days_cut_at_the_stores_midnight(db):
    # New York is UTC-5 in early March: local 2025-03-04 runs 05:00 UTC to 05:00 UTC next day.
    s = await store(db, tz="America/New_York")
    t = await terminal(db, s)
    # down 04:00-06:00 UTC: 1 h on local 03-03, 1 h on local 03-04
    await monitor(db, s, t, [(at(-30), "up"), (at(4), "down"), (at(6), "up")])
    async with db.sessionmaker() as ses:
        rep = await report(ses, "terminal", t, Period.dates(date(2025, 3, 3), date(2025, 3, 4)), now=at(100))
    days = dict(rep.days)
    assert list(days) == [date(2025, 3, 3), date(2025, 3, 4)]
    assert days[date(2025, 3, 3)].down == 3600 and days[date(2025, 3, 4)].down == 3600
    assert days[date(2025, 3, 3)].observed == days[date(2025, 3, 4)].observed == 86400
    assert rep.total.down == 7200 and rep.total.outages == 1  # one outage, split over two days
    assert days[date(2025, 3, 3)].outages == days[date(2025, 3, 4)].outages == 1


async def test_daylight_saving_day_is_23_hours(db):
    s = await store(db, tz="Europe/London")
    t = await terminal(db, s)
    await monitor(db, s, t, [(at(-30), "up")])
    async with db.sessionmaker() as ses:
        rep = await report(
            ses, "terminal", t, Period.dates(date(2025, 3, 29), date(2025, 3, 31)), now=at(24 * 40)
        )
    assert [f.observed for _d, f in rep.days] == [86400, 23 * 3600, 86400]


async def test_region_and_fleet_are_terminal_weighted(db):
    north = await store(db, region="North")
    south = await store(db, region="South")
    n_terms = [await terminal(db, north) for _ in range(3)]
    s_term = await terminal(db, south)
    for t in n_terms:
        await monitor(db, north, t, [(at(-1), "up")])
    await monitor(db, south, s_term, [(at(-1), "up"), (at(0), "down"), (at(6), "up")])
    async with db.sessionmaker() as ses:
        fleet = await report(ses, "fleet", None, Period.rolling(at(0), at(24)), now=at(48))
        region = await report(ses, "region", "South", Period.rolling(at(0), at(24)), now=at(48))
    assert fleet.total.uptime == pytest.approx(1 - 6 / 96)  # not the mean of the regions (0.875)
    assert {k: round(f.uptime, 4) for k, _l, f in fleet.groups} == {"North": 1.0, "South": 0.75}
    assert region.total.terminals == 1 and region.total.down == 6 * 3600


async def test_timeline_follows_the_same_rules_as_the_uptime(db):
    # The detail page's timeline and its uptime figure come from one computation.
    s = await store(db)
    t = await terminal(db, s)
    await monitor(db, s, t, [(at(-1), "up")])
    await monitor(db, s, None, [(at(-1), "up"), (at(1), "down"), (at(2), "up")], kind="dns")  # store network
    t_info = await terminal_info(db, t)
    async with db.sessionmaker() as ses:
        segments = await terminal_timeline(ses, t_info, at(0), at(4))
    assert segments == [(at(0), at(1), "up"), (at(1), at(2), "down"), (at(2), at(4), "up")]
    assert (await figures(db, t, at(0), at(4))).total.down == 3600


CASES = {
    "changes before and in both windows": [
        (at(-5), "down"),
        (at(30), "up"),
        (at(24 * 7, 50), "down"),
        (at(24 * 7 + 2), "up"),
        (at(24 * 8), "unknown"),
    ],
    "first change inside the day": [(at(24 * 8 - 3), "down")],
    "first change before the week only": [(at(-24 * 20), "down"), (at(-24 * 19), "up")],
    "never changed": [],
    "created inside the week": [(at(24 * 4), "up"), (at(24 * 7, 45), "down")],
    "store network only changes": [(at(-24 * 20), "up")],
}


@pytest.mark.parametrize("case", list(CASES))
async def test_terminal_history_is_the_timelines_and_figures_each_window_gives_alone(db, case):
    # The detail page reads its 24 h and 7 day timelines and figures at once (terminal_history):
    # what it shows must be what each computed on its own shows.
    now = at(24 * 8, 30)
    day, week = (now - timedelta(hours=24), now), (now - timedelta(days=7), now)
    s = await store(db)
    t = await terminal(db, s, created=at(24 * 4) if case == "created inside the week" else at(-24 * 30))
    await monitor(db, s, t, CASES[case], initial="up" if case == "never changed" else "unknown")
    if case == "store network only changes":
        network = [(at(24 * 3), "down"), (at(24 * 3, 20), "up"), (at(24 * 8 - 1), "down")]
        await monitor(db, s, None, network, kind="dns", initial="up")
    info = await terminal_info(db, t)
    async with db.sessionmaker() as ses:
        together = await terminal_history(ses, info, [day, week])
        alone = [
            (
                await terminal_timeline(ses, info, *window),
                (await uptime_for_terminals(ses, [info], Period.rolling(*window), per_day=False, now=now))[
                    0
                ].total,
            )
            for window in (day, week)
        ]
    assert together == alone
