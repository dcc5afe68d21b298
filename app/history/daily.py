"""Stored daily uptime: each terminal's closed local days, computed once by the exact
computation (`uptime.uptime_in_windows`, the reference) and added up by long reports.

The job (`DailyUptimeJob`, a periodic job of the worker):

1. Late state changes: the writer marks `uptime_redo` with the store, the terminal (none for
   a store network monitor: every terminal of the store) and the time of any transition dated
   more than `LATE` before it was written (an agent's buffer replayed, a maintenance window
   applied from its start). The job moves those terminals' `filled_until` back to the day
   before that time's local day and deletes their days after it: dirty from the earliest
   changed time, refilled below. A day is stored only `GRACE` after it ended, and GRACE is
   longer than LATE, so a change of a stored day is always late, hence always marked.
2. What a terminal's days were computed under (its store, the store's time zone, the
   monitors watching it) is kept beside `filled_until`: when it differs from now (the terminal
   was moved, the zone edited, a monitor added or removed) its days are dropped and refilled,
   as the exact computation counts all of a terminal's past under its current store.
3. Fill: per terminal, from the day after `filled_until` (at first the later of the day it was
   added and `BACKFILL_DAYS` ago) up to the last closed local day of its store, at most
   `DAYS_AT_ONCE` days per pass, a chunk of terminals per transaction, until `budget_s`.
   Each day row carries running totals (seconds since `filled_from`, the first stored day),
   and so does the fill row for `filled_until`: a terminal's days are always one unbroken run,
   cut back or dropped from a day on and refilled after it.

Reading (`stored_uptime`, the same call as `uptime.uptime_for_terminals`), for totals (the
summaries, a year's CSV): per terminal, the stored whole days inside the period, as the running
totals at the last less those before the first (one day row, or none), plus the exact
computation for the rest (today, a rolling window's partial first day, days not filled yet).
Outages come from the stored down spells of the days with an outage, merged where they meet at
midnight, so the figures are those of the exact computation. Per-day figures are computed
exactly (measured cheaper than reading a row per terminal and day).
"""

from __future__ import annotations

import json
import logging
import time as clock
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache, partial
from typing import Any

from sqlalchemy import (
    ARRAY,
    Date,
    Integer,
    Select,
    Text,
    bindparam,
    case,
    cast,
    delete,
    func,
    literal_column,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.db import Database, bulk_insert, dialect_of, in_transaction, select_where_in, table_of, utcnow
from app.history.models import DailyUptime, DailyUptimeFill
from app.history.uptime import (
    _TERMINAL_COLS,
    ChunkUptime,
    Figures,
    Period,
    TerminalInfo,
    TerminalUptime,
    store_outages,
    uptime_for_terminals,
    uptime_in_windows,
    zone,
)
from app.inventory.models import Monitor, Store, Terminal
from app.monitoring.models import UptimeRedo
from app.monitoring.worker import PeriodicJob

log = logging.getLogger(__name__)

GRACE = timedelta(minutes=15)  # a local day is stored this long after it ended
BACKFILL_DAYS = 400  # the longest period a report takes (app.history.params.MAX_DAYS)
DAYS_AT_ONCE = 31
CHUNK = 500
EVERY_S = 300.0
LOCK_KEY = 0x7E57_0D01


# --- local days --------------------------------------------------------------------------------


@lru_cache(maxsize=4096)
def day_start(d: date, tz: str | None) -> datetime:
    """The UTC instant of local midnight starting `d` (as `uptime.Period.window` makes it)."""
    return datetime.combine(d, time(), zone(tz)).astimezone(UTC)


def local_date(at: datetime, tz: str | None) -> date:
    return at.astimezone(zone(tz)).date()


def last_closed_day(tz: str | None, now: datetime) -> date:
    """The last local day that ended at least GRACE ago."""
    return local_date(now - GRACE, tz) - timedelta(days=1)


# --- the job ------------------------------------------------------------------------------------


@dataclass
class FillReport:
    redone: int = 0  # terminals whose days were invalidated by late changes
    reset: int = 0  # terminals whose days were dropped (moved, zone or monitors changed)
    days: int = 0  # terminal-days stored
    left: int = 0  # terminals not filled up to their last closed day yet (budget spent)


def _signature(own: list[int], network: list[int]) -> str:
    return ",".join(map(str, sorted(own))) + "|" + ",".join(map(str, sorted(network)))


async def _current(session: AsyncSession) -> dict[int, tuple[int, str, str]]:
    """Per terminal: (store, time zone, monitors signature) as they are now."""
    terminals = (
        await session.execute(select(Terminal.id, Terminal.store_id, Store.timezone).join(Store))
    ).all()
    own: dict[int, list[int]] = defaultdict(list)
    network: dict[int, list[int]] = defaultdict(list)
    for mid, store_id, terminal_id in (
        await session.execute(select(Monitor.id, Monitor.store_id, Monitor.terminal_id))
    ).all():
        if terminal_id is None:
            network[store_id].append(mid)
        else:
            own[terminal_id].append(mid)
    return {tid: (sid, tz or "UTC", _signature(own[tid], network[sid])) for tid, sid, tz in terminals}


async def apply_redo(session: AsyncSession) -> int:
    """Late changes: move the terminals' filled_until back to before the changed local day."""
    marks = (
        await session.execute(
            select(UptimeRedo.id, UptimeRedo.store_id, UptimeRedo.terminal_id, UptimeRedo.since).limit(10_000)
        )
    ).all()
    if not marks:
        return 0
    by_terminal: dict[int, datetime] = {}
    by_store: dict[int, datetime] = {}
    for _id, store_id, terminal_id, since in marks:
        target, key = (by_terminal, terminal_id) if terminal_id is not None else (by_store, store_id)
        target[key] = min(since, target.get(key, since))
    f = table_of(DailyUptimeFill)
    cols = select(f.c.terminal_id, f.c.store_id, f.c.tz, f.c.filled_until).where(
        f.c.filled_until.is_not(None)
    )
    rows = await select_where_in(session, cols, f.c.terminal_id, sorted(by_terminal))
    rows += await select_where_in(session, cols, f.c.store_id, sorted(by_store))
    redone = set()
    for tid, store_id, tz, until in rows:
        since = min(t for t in (by_terminal.get(tid), by_store.get(store_id)) if t is not None)
        back = local_date(since, tz) - timedelta(days=1)
        if back < until:
            await _truncate(session, tid, back)
            redone.add(tid)
    await session.execute(delete(UptimeRedo).where(UptimeRedo.id.in_([m[0] for m in marks])))
    return len(redone)


SECONDS = ("up", "down", "unknown", "paused")
RUN_COLUMNS = (*(f"run_{n}_s" for n in SECONDS), "run_days")  # running totals of the seconds, and days


async def _truncate(session: AsyncSession, terminal_id: int, until: date | None) -> None:
    """Drop the terminal's days after `until` (all of them: None); with none left, the next
    fill starts from the beginning again. The fill row takes the running totals at `until`."""
    d, f = table_of(DailyUptime), table_of(DailyUptimeFill)
    gone = d.c.terminal_id == terminal_id
    await session.execute(delete(d).where(gone if until is None else gone & (d.c.day > until)))
    if until is None:
        values: dict[str, Any] = {"filled_from": None, "filled_until": None, **dict.fromkeys(RUN_COLUMNS, 0)}
    else:
        kept = f.c.filled_from <= until
        values = {
            "filled_from": case((kept, f.c.filled_from)),
            "filled_until": case((kept, until)),
            **{
                name: func.coalesce(select(d.c[name]).where(gone, d.c.day == until).scalar_subquery(), 0)
                for name in RUN_COLUMNS
            },
        }
    await session.execute(update(f).where(f.c.terminal_id == terminal_id).values(**values))


async def reconcile(session: AsyncSession) -> int:
    """Terminals whose days were computed under another store, zone or set of monitors lose
    them; terminals seen for the first time get their fill row."""
    current = await _current(session)
    f = table_of(DailyUptimeFill)
    known = {
        r[0]: tuple(r[1:])
        for r in (await session.execute(select(f.c.terminal_id, f.c.store_id, f.c.tz, f.c.monitors))).all()
    }
    reset = 0
    new = []
    for tid, now_is in current.items():
        was = known.get(tid)
        if was is None:
            new.append(
                {
                    "terminal_id": tid,
                    "store_id": now_is[0],
                    "tz": now_is[1],
                    "monitors": now_is[2],
                    "filled_until": None,
                }
            )
        elif was != now_is:
            await _truncate(session, tid, None)
            await session.execute(
                update(f)
                .where(f.c.terminal_id == tid)
                .values(store_id=now_is[0], tz=now_is[1], monitors=now_is[2])
            )
            reset += 1
    if new:
        await bulk_insert(session, f, new)
    return reset


async def _due(session: AsyncSession, now: datetime, limit: int) -> list[tuple[TerminalInfo, date, date]]:
    """Terminals with closed days not stored yet: (terminal, first day to fill, last)."""
    f = table_of(DailyUptimeFill)
    rows = (
        await session.execute(
            select(*_TERMINAL_COLS, f.c.filled_until)
            .join(Store, Store.id == Terminal.store_id)
            .join(f, f.c.terminal_id == Terminal.id)
            .where(f.c.store_id == Terminal.store_id, f.c.tz == Store.timezone)
            .order_by(f.c.filled_until.is_not(None), f.c.filled_until, Terminal.id)
        )
    ).all()
    floor = (now - timedelta(days=BACKFILL_DAYS)).date()
    due = []
    for *cols, until in rows:
        t = TerminalInfo(*cols)
        last = last_closed_day(t.tz, now)
        first = until + timedelta(days=1) if until else max(floor, local_date(t.created_at or now, t.tz))
        if first <= last:
            due.append((t, first, min(last, first + timedelta(days=DAYS_AT_ONCE - 1))))
            if len(due) >= limit:
                break
    return due


async def fill_chunk(session: AsyncSession, *, due: list[tuple[TerminalInfo, date, date]]) -> int:
    """Compute and store these terminals' days [first, last] with the exact computation, each
    with the running totals carried on from the day before (kept in the fill row)."""
    terminals = [t for t, _f, _l in due]
    windows = {
        t.id: (day_start(first, t.tz), day_start(last + timedelta(days=1), t.tz)) for t, first, last in due
    }
    f = table_of(DailyUptimeFill)
    runs = {
        r[0]: list(r[1:])
        for r in await select_where_in(
            session, select(f.c.terminal_id, *(f.c[n] for n in RUN_COLUMNS)), f.c.terminal_id, list(windows)
        )
    }
    rows = []
    for u in await uptime_in_windows(session, terminals, windows, per_day=True):
        run = runs[u.terminal.id]
        for d, fig in u.days:
            lo, hi = (
                day_start(d, u.terminal.tz).timestamp(),
                day_start(d + timedelta(days=1), u.terminal.tz).timestamp(),
            )
            run = [run[0] + fig.up, run[1] + fig.down, run[2] + fig.unknown, run[3] + fig.paused, run[4] + 1]
            downs = [[max(a, lo), min(b, hi)] for a, b in u.downs if a < hi and b > lo]
            rows.append(_row(u.terminal, d, fig, downs, run))
        runs[u.terminal.id] = run
    if rows:
        await bulk_insert(session, table_of(DailyUptime), rows)
    for t, first, last in due:
        await session.execute(
            update(f)
            .where(f.c.terminal_id == t.id)
            .values(
                filled_from=func.coalesce(f.c.filled_from, first),
                filled_until=last,
                **dict(zip(RUN_COLUMNS, runs[t.id], strict=True)),
            )
        )
    return len(rows)


def _row(
    t: TerminalInfo, d: date, fig: Figures, downs: list[list[float]], run: list[float]
) -> dict[str, object]:
    return {
        **dict(zip(RUN_COLUMNS, run, strict=True)),
        "terminal_id": t.id,
        "day": d,
        "store_id": t.store_id,
        "up_s": fig.up,
        "down_s": fig.down,
        "unknown_s": fig.unknown,
        "paused_s": fig.paused,
        "not_monitored_s": max(0.0, fig.span - fig.observed),
        "span_s": fig.span,
        "outages": fig.outages,
        "longest_outage_s": fig.longest_outage,
        "downs": downs,
    }


async def fill_days(
    database: Database, *, now: datetime | None = None, budget_s: float = 30.0, chunk: int = CHUNK
) -> FillReport:
    """One pass of the job: late changes, changed terminals, then fill closed days."""
    now = now or utcnow()
    report = FillReport()
    report.redone = await in_transaction(database, apply_redo)
    report.reset = await in_transaction(database, reconcile)
    started = clock.monotonic()
    while True:
        async with database.sessionmaker() as session:
            due = await _due(session, now, chunk)
        if not due:
            return report
        if clock.monotonic() - started > budget_s:
            report.left = len(due)
            return report
        report.days += await in_transaction(database, partial(fill_chunk, due=due))


class DailyUptimeJob:
    def __init__(self, database: Database) -> None:
        self.database = database

    async def run(self) -> FillReport:
        report = await fill_days(self.database)
        if report.days or report.redone or report.reset:
            log.info(
                "daily uptime: %d terminal-days stored, %d terminals redone after late changes, "
                "%d reset (moved, zone or monitors changed), %d left for the next pass",
                report.days,
                report.redone,
                report.reset,
                report.left,
            )
        return report


def daily_uptime_jobs(settings: Settings, database: Database) -> list[PeriodicJob]:
    """What a worker runs to keep the stored days filled (one worker at a time on PostgreSQL),
    when reports read them (`settings.stored_daily_uptime`)."""
    if not settings.stored_daily_uptime:
        return []
    return [PeriodicJob("daily-uptime", EVERY_S, DailyUptimeJob(database).run, LOCK_KEY, first_in_s=30.0)]


# --- reading ------------------------------------------------------------------------------------


def uptime_source(settings: Settings) -> ChunkUptime:
    """How long reports get their figures: the stored days where they pay, or the exact
    computation only (the setting off)."""
    return stored_uptime if settings.stored_daily_uptime else uptime_for_terminals


@lru_cache(maxsize=4096)
def _whole_days(tz: str | None, start: datetime, end: datetime) -> tuple[date, date]:
    """The first and last local days wholly inside [start, end) (first > last: none)."""
    first = local_date(start, tz)
    if day_start(first, tz) < start:
        first += timedelta(days=1)
    return first, local_date(end, tz) - timedelta(days=1)


async def stored_uptime(
    session: AsyncSession,
    terminals: list[TerminalInfo],
    period: Period,
    *,
    per_day: bool = True,
    now: datetime | None = None,
) -> list[TerminalUptime]:
    """The figures of `uptime.uptime_for_terminals`. Totals (`per_day=False`: summaries,
    a year's CSV) from the stored days where there are any, and the exact computation around
    them. Per day, the exact computation: reading a stored row per terminal and day measured
    twice the CPU of replaying a few state changes (bench/daily.py: 30-day fleet report)."""
    if per_day or not terminals:
        return await uptime_for_terminals(session, terminals, period, per_day=per_day, now=now)
    now = now or utcnow()
    by_zone: dict[str | None, tuple[datetime, datetime]] = {}  # a chunk has a handful of zones
    windows = {}
    for t in terminals:
        window = by_zone.get(t.tz)
        if window is None:
            s, e = period.window(t.tz)
            window = by_zone[t.tz] = (s, min(e, now))
        windows[t.id] = window
    stored = await _read_days(session, terminals, windows)
    heads, tails = {}, {}
    for t in terminals:
        s, e = windows[t.id]
        got = stored.get(t.id)
        if got is None:
            heads[t.id] = (s, e)
            continue
        a, b = day_start(got.first, t.tz), day_start(got.last + timedelta(days=1), t.tz)
        if s < a:
            heads[t.id] = (s, a)
        if b < e:
            tails[t.id] = (b, e)
    head = {u.terminal.id: u for u in await _exact(session, terminals, heads)}
    tail = {u.terminal.id: u for u in await _exact(session, terminals, tails)}
    return [_combine(t, windows[t.id], head.get(t.id), stored.get(t.id), tail.get(t.id)) for t in terminals]


async def _exact(
    session: AsyncSession, terminals: list[TerminalInfo], windows: dict[int, tuple[datetime, datetime]]
) -> list[TerminalUptime]:
    some = [t for t in terminals if t.id in windows]
    return await uptime_in_windows(session, some, windows, per_day=False) if some else []


@dataclass
class _Stored:
    first: date
    last: date
    total: Figures
    downs: list[tuple[float, float]]


async def _read_days(
    session: AsyncSession, terminals: list[TerminalInfo], windows: dict[int, tuple[datetime, datetime]]
) -> dict[int, _Stored]:
    """Each terminal's stored days inside its window, if they run unbroken; computed under its
    current store and zone only (a moved terminal's old days are not its figures any more)."""
    f = table_of(DailyUptimeFill)
    cols = (f.c.store_id, f.c.tz, f.c.filled_from, f.c.filled_until, *(f.c[n] for n in RUN_COLUMNS))
    fills = {
        r[0]: _Fill(*r[1:])
        for r in await select_where_in(
            session, select(f.c.terminal_id, *cols), f.c.terminal_id, [t.id for t in terminals]
        )
    }
    ranges: dict[int, tuple[date, date]] = {}
    for t in terminals:
        fill = fills.get(t.id)
        if (
            fill is None
            or fill.first is None
            or fill.last is None
            or (fill.store_id, fill.tz) != (t.store_id, t.tz or "UTC")
        ):
            continue
        first, last = _whole_days(t.tz, *windows[t.id])
        first, last = max(first, fill.first), min(last, fill.last)
        if first <= last:
            ranges[t.id] = (first, last)
    return await _sums(session, ranges, fills) if ranges else {}


@dataclass
class _Fill:
    """A terminal's fill row: what its days were computed under, which days are stored, and
    the running totals at the last ([up, down, unknown, paused seconds, days])."""

    store_id: int
    tz: str
    first: date | None
    last: date | None
    up: float
    down: float
    unknown: float
    paused: float
    days: int

    @property
    def run(self) -> list[float]:
        return [self.up, self.down, self.unknown, self.paused, self.days]


async def _sums(
    session: AsyncSession, ranges: dict[int, tuple[date, date]], fills: dict[int, _Fill]
) -> dict[int, _Stored]:
    """Totals only (no per-day figures): the running totals at the range's last day less those
    before its first day. The last day is mostly the last stored one (its totals are in the fill
    row) and the first the first stored one (nothing before it): at most two day rows per
    terminal, mostly one. Down spells: those of the days with an outage. Only an unbroken run
    of days is used (the days counted must be the range's: a gap, which the job never leaves,
    would count as nothing); else the terminal's whole window is computed exactly."""
    d = table_of(DailyUptime)
    q = select(d.c.terminal_id, d.c.day, *(d.c[n] for n in RUN_COLUMNS), *(d.c[f"{n}_s"] for n in SECONDS))
    wanted = [
        (tid, day)
        for tid, (first, last) in ranges.items()
        for day, skip in ((first, first == fills[tid].first), (last, last == fills[tid].last))
        if not skip
    ]
    at = {(r[0], r[1]): list(r[2:]) for r in await _rows_at(session, q, wanted)}
    out = {}
    for tid, (first, last) in ranges.items():
        fill = fills[tid]
        end = fill.run if last == fill.last else at.get((tid, last))
        if first == fill.first:
            before: list[float] | None = [0.0] * 5
        else:
            row = at.get((tid, first))  # its running totals less its own seconds, and one day less
            before = None if row is None else [row[i] - row[5 + i] for i in range(4)] + [row[4] - 1]
        if end is None or before is None or end[4] - before[4] != (last - first).days + 1:
            continue
        up, down, unknown, paused = (end[i] - before[i] for i in range(4))
        total = Figures(up=up, down=down, unknown=unknown, paused=paused)
        out[tid] = _Stored(first, last, total, [])
    for tid, downs in await _down_spells(session, {tid: ranges[tid] for tid in out}):
        # '[[a, b]],[[c, d], [e, f]]': the days' lists made one, read at once (seconds as floats)
        out[tid].downs = list(map(tuple, _SPELLS.decode(downs.replace("]],[[", "],["))))
    return out


_SPELLS = json.JSONDecoder(parse_int=float)  # one decoder for every terminal's spells


async def _rows_at(session: AsyncSession, query: Select[Any], wanted: list[tuple[int, date]]) -> list[Any]:
    """Rows of a query on daily_uptime at these (terminal, day) (maybe more on SQLite).
    PostgreSQL: joined to unnest(ids, days), one primary key probe each."""
    d = table_of(DailyUptime)
    if not wanted:
        return []
    if dialect_of(session) != "postgresql":
        days = sorted({day for _t, day in wanted})
        ids = sorted({tid for tid, _d in wanted})
        return await select_where_in(session, query.where(d.c.day.in_(days)), d.c.terminal_id, ids)
    pairs = (
        func.unnest(
            bindparam("ids", [tid for tid, _d in wanted], type_=ARRAY(Integer)),
            bindparam("days", [day for _t, day in wanted], type_=ARRAY(Date)),
        )
        .table_valued("id", "day")
        .render_derived()
    )
    on = (pairs.c.id == d.c.terminal_id) & (pairs.c.day == d.c.day)
    return list((await session.execute(query.join(pairs, on))).all())


async def _down_spells(session: AsyncSession, ranges: dict[int, tuple[date, date]]) -> list[tuple[int, str]]:
    """Per terminal, the down spells of its days with an outage inside its range, as the JSON
    texts of the days' spells joined with commas (one row per terminal with any)."""
    d = table_of(DailyUptime)
    if not ranges:
        return []
    spells = func.aggregate_strings(cast(d.c.downs, Text), ",")
    if dialect_of(session) != "postgresql":
        lo, hi = min(r[0] for r in ranges.values()), max(r[1] for r in ranges.values())
        q = select(d.c.terminal_id, d.c.day, cast(d.c.downs, Text)).where(
            (d.c.outages > 0) & (d.c.day >= lo) & (d.c.day <= hi)
        )
        joined: dict[int, list[str]] = defaultdict(list)
        for tid, day, text in await select_where_in(session, q, d.c.terminal_id, list(ranges)):
            if ranges[tid][0] <= day <= ranges[tid][1]:
                joined[tid].append(text)
        return [(tid, ",".join(texts)) for tid, texts in joined.items()]
    wanted = (
        func.unnest(
            bindparam("ids", list(ranges), type_=ARRAY(Integer)),
            bindparam("firsts", [r[0] for r in ranges.values()], type_=ARRAY(Date)),
            bindparam("lasts", [r[1] for r in ranges.values()], type_=ARRAY(Date)),
        )
        .table_valued("id", "first", "last")
        .render_derived()
    )
    on = (wanted.c.id == d.c.terminal_id) & (d.c.day >= wanted.c.first) & (d.c.day <= wanted.c.last)
    # The 0 written out, not a parameter: a generic plan can then use the partial index.
    with_outages = d.c.outages > literal_column("0")
    q = select(d.c.terminal_id, spells).join(wanted, on).where(with_outages).group_by(d.c.terminal_id)
    return [(tid, text) for tid, text in (await session.execute(q)).all()]


def _add_seconds(total: Figures, part: Figures) -> None:
    total.up += part.up
    total.down += part.down
    total.unknown += part.unknown
    total.paused += part.paused


def _combine(
    t: TerminalInfo,
    window: tuple[datetime, datetime],
    head: TerminalUptime | None,
    stored: _Stored | None,
    tail: TerminalUptime | None,
) -> TerminalUptime:
    """One terminal's figures from its exact head, stored days and exact tail, in time order:
    as `uptime.terminal_uptime` makes them over the whole window."""
    start, end = window
    begin = max(start, t.created_at) if t.created_at else start
    total = Figures(terminals=1, span=max(0.0, (end - start).total_seconds()))
    downs: list[tuple[float, float]] = []
    for part in (head, stored, tail):
        if part is None:
            continue
        _add_seconds(total, part.total)
        downs += part.downs
    # An outage crossing midnight is one outage: spells meeting at a cut are merged.
    total.outages, total.longest_outage, _ = store_outages(downs)
    return TerminalUptime(t, begin, max(end, begin), total, downs=downs)
