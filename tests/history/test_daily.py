"""Stored daily uptime equals the exact computation (the reference), on PostgreSQL and SQLite:
daylight-saving days (23 h and 25 h), a terminal moved to a store in another zone,
maintenance, paused, not monitored, and a day computed again after a back-dated change."""

from __future__ import annotations

import io
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import select, update

from app.history.daily import fill_days, stored_uptime
from app.history.export import write_csv
from app.history.models import DailyUptime, DailyUptimeFill
from app.history.uptime import Period, report, terminal_chunks, uptime_for_terminals
from app.inventory.models import Terminal
from app.monitoring.models import UptimeRedo
from app.monitoring.writer import Transition, record_transitions
from tests.history.helpers import monitor, store, terminal

NOW = datetime(2025, 11, 5, 9, 30, tzinfo=UTC)


def utc(month: int, day: int, hour: float = 0) -> datetime:
    return datetime(2025, month, day, tzinfo=UTC) + timedelta(hours=hour)


PERIODS = [
    Period.dates(date(2025, 3, 25), date(2025, 11, 5)),  # to today: the stored days plus today, exact
    Period.dates(date(2025, 3, 29), date(2025, 3, 31)),
    Period.dates(date(2025, 10, 25), date(2025, 10, 27)),
    Period.rolling(utc(3, 28, 13.25), utc(10, 27, 7.5)),  # partial first and last days
    Period.rolling(utc(10, 20, 5), NOW + timedelta(days=3)),  # past now: capped like the exact
]


def rounded(value):
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [rounded(v) for v in value]
    return value


async def assert_stored_equals_exact(db, now=NOW):
    async with db.sessionmaker() as s:
        for period in PERIODS:
            for scope, key in (("fleet", None), *[("terminal", t) for t in await _terminal_ids(s)]):
                exact = await report(s, scope, key, period, now=now)
                stored = await report(s, scope, key, period, now=now, compute=stored_uptime)
                assert rounded(stored.as_dict()) == rounded(exact.as_dict()), (period, scope, key)
            for by in ("terminal", "store", "region"):
                for table in ("summary", "days"):
                    texts = []
                    for compute in (uptime_for_terminals, stored_uptime):
                        out = io.StringIO()
                        await write_csv(
                            s, out, "fleet", None, period, by=by, table=table, now=now, compute=compute
                        )
                        texts.append(out.getvalue())
                    assert texts[0] == texts[1], (period, by, table)
            # the totals-only path (the summary) reads sums from the database
            async for chunk in terminal_chunks(s, "fleet"):
                exact_rows = await uptime_for_terminals(s, chunk, period, per_day=False, now=now)
                stored_rows = await stored_uptime(s, chunk, period, per_day=False, now=now)
                for e, st in zip(exact_rows, stored_rows, strict=True):
                    assert rounded(st.total.as_dict()) == rounded(e.total.as_dict())


async def _terminal_ids(s):
    return list((await s.scalars(select(Terminal.id).order_by(Terminal.id))).all())


async def stored_days(db, terminal_id):
    async with db.sessionmaker() as s:
        rows = (await s.execute(select(DailyUptime).where(DailyUptime.terminal_id == terminal_id))).scalars()
        return {r.day: r for r in rows}


async def build_fleet(db):
    """Berlin (DST on 2025-03-30 and 2025-10-26) and New York stores; outages across local
    midnight, maintenance, paused, unknown, a terminal without monitors, one added late."""
    berlin = await store(db, "S-BER", tz="Europe/Berlin", region="EU")
    newyork = await store(db, "S-NYC", tz="America/New_York", region="US")
    await monitor(
        db, berlin, None, [(utc(3, 30, 0.5), "down"), (utc(3, 30, 0.75), "up")], kind="dns", initial="up"
    )
    a = await terminal(db, berlin, "P400-A")
    await monitor(
        db,
        berlin,
        a,
        [
            (utc(3, 29, 22), "down"),  # local midnight is 23:00 UTC: the outage crosses it
            (utc(3, 30, 3), "up"),
            (utc(3, 30, 10), "maintenance"),
            (utc(3, 30, 12), "up"),
            (utc(10, 25, 21), "unknown"),
            (utc(10, 25, 23.5), "down"),  # down across midnight into the 25 h day
            (utc(10, 26, 5), "paused"),
            (utc(10, 26, 6), "up"),
            (utc(11, 4, 22), "down"),  # still down now: today's part is exact
        ],
        initial="up",
    )
    b = await terminal(db, berlin, "P400-B")
    await monitor(db, berlin, b, [(utc(3, 29, 23.5), "down"), (utc(3, 31, 2), "up")], initial="up")
    await terminal(db, berlin, "P400-NONE")  # no monitor of its own: not monitored, never counted
    c = await terminal(db, newyork, "P400-C", created=utc(4, 2, 15))  # added mid-period
    await monitor(
        db, newyork, c, [(utc(4, 2, 16), "up"), (utc(4, 3, 3), "down"), (utc(4, 3, 5), "up")], initial="none"
    )
    return berlin, newyork, a, b, c


async def test_stored_days_equal_the_exact_computation(db):
    _berlin, _ny, a, _b, c = await build_fleet(db)
    done = await fill_days(db, now=NOW)
    assert done.days > 0 and done.left == 0
    days = await stored_days(db, a)
    assert days[date(2025, 3, 30)].span_s == 23 * 3600
    assert days[date(2025, 10, 26)].span_s == 25 * 3600
    assert days[date(2025, 3, 29)].downs and days[date(2025, 3, 30)].outages == 1
    assert days[date(2025, 3, 30)].paused_s == 2 * 3600  # the maintenance spell
    assert max(days) == date(2025, 11, 4)  # the last closed day; today is not stored
    c_days = await stored_days(db, c)
    assert min(c_days) == date(2025, 4, 2)  # from the day it was added
    assert c_days[date(2025, 4, 2)].not_monitored_s == pytest.approx(
        12 * 3600
    )  # monitored from 16:00 UTC, noon EDT
    await assert_stored_equals_exact(db)
    # a second pass has nothing to do
    again = await fill_days(db, now=NOW)
    assert (again.days, again.redone, again.reset) == (0, 0, 0)
    # totals are read from the stored days (a day altered by hand shows: its own seconds, the
    # running totals from it on and those in the fill row); per-day figures are not
    async with db.sessionmaker() as s:
        mine = DailyUptime.terminal_id == a
        await s.execute(
            update(DailyUptime)
            .where(mine, DailyUptime.day == date(2025, 5, 1))
            .values(up_s=DailyUptime.up_s - 100)
        )
        await s.execute(
            update(DailyUptime)
            .where(mine, DailyUptime.day >= date(2025, 5, 1))
            .values(run_up_s=DailyUptime.run_up_s - 100)
        )
        await s.execute(
            update(DailyUptimeFill)
            .where(DailyUptimeFill.terminal_id == a)
            .values(run_up_s=DailyUptimeFill.run_up_s - 100)
        )
        await s.commit()
        period = PERIODS[0]
        exact = await report(s, "terminal", a, period, now=NOW)
        stored = await report(s, "terminal", a, period, now=NOW, compute=stored_uptime)
        assert stored.as_dict() == exact.as_dict()  # per day: computed exactly, not read
        (t,) = [t async for chunk in terminal_chunks(s, "terminal", a) for t in chunk]
        (totals,) = await stored_uptime(s, [t], period, per_day=False, now=NOW)
        assert totals.total.up == pytest.approx(exact.total.up - 100)


async def test_a_moved_terminal_is_counted_under_its_new_store(db):
    _berlin, _ny, a, _b, _c = await build_fleet(db)
    tokyo = await store(db, "S-TYO", tz="Asia/Tokyo", region="APAC")
    await monitor(db, tokyo, None, [(utc(6, 1, 2), "down"), (utc(6, 1, 4), "up")], kind="dns", initial="up")
    await fill_days(db, now=NOW)
    async with db.sessionmaker() as s:
        await s.execute(update(Terminal).where(Terminal.id == a).values(store_id=tokyo))
        await s.commit()
    # before the job ran again: its days no longer match its store, so it is computed exactly
    await assert_stored_equals_exact(db)
    done = await fill_days(db, now=NOW)
    assert done.reset == 1 and done.days > 0
    days = await stored_days(db, a)
    assert {r.store_id for r in days.values()} == {tokyo}
    assert days[date(2025, 3, 30)].span_s == 24 * 3600  # Tokyo has no daylight saving
    assert days[date(2025, 6, 1)].down_s == 2 * 3600  # its new store's network outage
    await assert_stored_equals_exact(db)


async def test_a_day_is_computed_again_after_a_back_dated_change(db):
    berlin = await store(db, "S-BER", tz="Europe/Berlin")
    t = await terminal(db, berlin, "P400-R")
    mid = await monitor(db, berlin, t, [(utc(10, 1), "up")], initial="unknown")
    await fill_days(db, now=NOW)
    day = date(2025, 11, 2)
    assert (await stored_days(db, t))[day].down_s == 0
    # a store agent's buffer, replayed now: down for an hour three days ago
    replay = [
        Transition(mid, berlin, t, "tcp", utc(11, 2, 10), "up", "down", "tcp_refused"),
        Transition(mid, berlin, t, "tcp", utc(11, 2, 11), "down", "up", None),
    ]
    async with db.sessionmaker() as s:
        await record_transitions(s, replay, NOW)
        await s.commit()
        assert await s.scalar(select(UptimeRedo.since)) == utc(11, 2, 10)
    done = await fill_days(db, now=NOW)
    assert done.redone == 1 and done.days == 3  # Nov 2, 3 and 4 again
    days = await stored_days(db, t)
    assert days[day].down_s == 3600 and days[day].outages == 1
    assert days[date(2025, 11, 1)].down_s == 0
    async with db.sessionmaker() as s:
        assert await s.scalar(select(UptimeRedo.id)) is None
        assert await s.scalar(select(DailyUptimeFill.filled_until)) == date(2025, 11, 4)
    await assert_stored_equals_exact(db)


async def test_the_migration_gives_stored_days_their_running_totals(db):
    """Days stored before the running totals existed get them from migration 0015."""
    from alembic import command

    from app.migrate import alembic_config

    await build_fleet(db)
    await fill_days(db, now=NOW)

    async def snapshot():
        async with db.sessionmaker() as s:
            days = (
                await s.execute(select(DailyUptime).order_by(DailyUptime.terminal_id, DailyUptime.day))
            ).scalars()
            runs = [
                (r.terminal_id, r.day, r.run_up_s, r.run_down_s, r.run_unknown_s, r.run_paused_s, r.run_days)
                for r in days
            ]
            fills = (await s.execute(select(DailyUptimeFill.terminal_id, DailyUptimeFill.filled_from))).all()
            return runs, sorted(fills)

    made_by_the_job = await snapshot()
    assert made_by_the_job[0] and all(since is not None for _t, since in made_by_the_job[1])
    cfg = alembic_config()

    def down_and_up(connection):
        cfg.attributes["connection"] = connection
        command.downgrade(cfg, "0014")
        command.upgrade(cfg, "head")

    async with db.engine.begin() as conn:
        await conn.run_sync(down_and_up)
    assert await snapshot() == made_by_the_job
    await assert_stored_equals_exact(db)


async def test_a_change_before_the_first_stored_day_refills_from_the_start(db):
    """A late change dated before a terminal's first stored day drops all its days and their
    running totals; they are stored again from the day it was added, still equal to exact."""
    newyork = await store(db, "S-NYC", tz="America/New_York")
    t = await terminal(db, newyork, "P400-LATE", created=utc(10, 20, 15))
    mid = await monitor(db, newyork, t, [(utc(10, 20, 16), "up")], initial="none")
    await fill_days(db, now=NOW)
    first_stored = date(2025, 10, 20)
    async with db.sessionmaker() as s:
        assert await s.scalar(select(DailyUptimeFill.filled_from)) == first_stored
        await record_transitions(
            s,
            [Transition(mid, newyork, t, "tcp", utc(10, 19, 12), "none", "down", "tcp_refused")],
            NOW,
        )
        await s.commit()
    done = await fill_days(db, now=NOW)
    assert done.redone == 1 and done.days == (date(2025, 11, 4) - first_stored).days + 1
    async with db.sessionmaker() as s:
        fill = (await s.execute(select(DailyUptimeFill))).scalar_one()
        assert (fill.filled_from, fill.filled_until) == (first_stored, date(2025, 11, 4))
        assert fill.run_days == done.days
    # down from when it was added (15:00 UTC) until its first change (16:00 UTC), now known
    assert (await stored_days(db, t))[first_stored].down_s == 3600
    await assert_stored_equals_exact(db)
