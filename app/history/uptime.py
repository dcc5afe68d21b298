"""Uptime history, computed exactly from the intervals between state changes, never by
counting check samples (a sample says nothing about the time between two checks).

How a figure is made
--------------------
* A monitor's state over a window: the ``to_state`` of its last change before the window,
  then every change inside it. A monitor without any change before the window is in the
  ``from_state`` of its first change; a monitor that never changed is in its current state
  since ``state_since`` (before that it did not exist: not counted).
* A terminal's state at each instant combines its own monitors and its store's network
  monitors with the rule of its live status (``app.monitoring.status.combine``): down when
  any is down (maintenance excepted), up when all are up, unknown otherwise, paused when all
  are paused. Time before the terminal was added is not counted at all, nor is any time of a
  terminal with no monitor of its own (not monitored: its store's network checks say nothing
  about the terminal itself, as its live status says).
* Figures: seconds up, down, unknown and paused/maintenance; uptime = up / (up + down):
  unknown (our side could not tell) and paused/maintenance are never downtime and are shown
  on their own. An outage is a maximal run of down time; its length is clipped to the window.
* Store, region and fleet figures are the sums over their terminals (terminal-weighted),
  but for outages: a store's outage is a maximal run with at least one of its terminals down
  (one store network fault is one outage, not one per terminal); regions and the fleet sum
  their stores' outages.
* Every figure carries its span (the period up to now, in terminal-seconds): ``monitored`` is
  the share of it known up or down, what the uptime rests on.
* Per-day breakdowns cut at midnight in the store's timezone.

Scale: terminals are read in chunks (ordered by store), each chunk with its monitors, the
state of each monitor before the window (one index probe each) and the changes inside the
window; raw check results are never read. ``rollup_totals`` gives the seconds of long windows
from the hourly/daily rollups with state changes for the partial edges only.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from functools import cache, lru_cache
from operator import itemgetter
from typing import Any, Protocol, TypeVarTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import BindParameter, ColumnElement, Select, bindparam, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import dialect_of, in_chunks, one_of, select_where_in, utcnow
from app.inventory.models import Monitor, Store, Terminal
from app.monitoring.models import StateChange
from app.monitoring.status import combine
from app.vocabulary import State

_Ts = TypeVarTuple("_Ts")

# Module names for the states of the hot loops (a global lookup, not an enum attribute each time).
UP, DOWN, UNKNOWN, PAUSED, MAINTENANCE = State.UP, State.DOWN, State.UNKNOWN, State.PAUSED, State.MAINTENANCE
NONE = State.NONE  # the monitor (or terminal) did not exist yet: not counted anywhere
CHUNK = 2000
SCOPES = ("terminal", "store", "region", "fleet")
ScopeKey = int | str | None  # a terminal's or store's id, a region's name; None for the fleet
Changes = dict[int, list[tuple[float, str, str]]]  # per monitor: (t, from_state, to_state), in order


# --- figures ---------------------------------------------------------------------------------


@dataclass(slots=True)
class Figures:
    up: float = 0.0
    down: float = 0.0
    unknown: float = 0.0
    paused: float = 0.0  # paused or maintenance
    outages: int = 0
    longest_outage: float = 0.0
    terminals: int = 0
    span: float = 0.0  # the period these figures cover (terminal-seconds, up to now)

    @property
    def uptime(self) -> float | None:
        """up / (up + down); None when nothing was observed up or down."""
        counted = self.up + self.down
        return None if counted <= 0 else self.up / counted

    @property
    def uptime_pct(self) -> float | None:
        u = self.uptime
        return None if u is None else round(100.0 * u, 3)

    @property
    def observed(self) -> float:
        return self.up + self.down + self.unknown + self.paused

    @property
    def monitored(self) -> float | None:
        """The share of the period the uptime rests on: time known up or down. Unknown, paused,
        maintenance and the time before a terminal was added (or had anything to check) are not."""
        return None if self.span <= 0 else min(1.0, (self.up + self.down) / self.span)

    @property
    def monitored_pct(self) -> float | None:
        m = self.monitored
        return None if m is None else round(100.0 * m, 1)

    def add(self, other: Figures, *, outages: bool = True) -> None:
        """Sum another's figures in; `outages=False` leaves the outage count and the longest
        (a store's outages are its own, not its terminals' summed: `store_outages`)."""
        self.up += other.up
        self.down += other.down
        self.unknown += other.unknown
        self.paused += other.paused
        if outages:
            self.outages += other.outages
            self.longest_outage = max(self.longest_outage, other.longest_outage)
        self.terminals += other.terminals
        self.span += other.span

    def as_dict(self) -> dict[str, Any]:
        return {
            "up_s": round(self.up, 3),
            "down_s": round(self.down, 3),
            "unknown_s": round(self.unknown, 3),
            "paused_s": round(self.paused, 3),
            "uptime_pct": self.uptime_pct,
            "outages": self.outages,
            "longest_outage_s": round(self.longest_outage, 3),
            "terminals": self.terminals,
            "period_s": round(self.span, 3),
            "monitored_pct": self.monitored_pct,
        }


def _slot(fig: Figures, state: str, seconds: float) -> None:
    if state == UP:
        fig.up += seconds
    elif state == DOWN:
        fig.down += seconds
    elif state == UNKNOWN:
        fig.unknown += seconds
    elif state == PAUSED:
        fig.paused += seconds


# --- the pure part: timelines -----------------------------------------------------------------


@lru_cache(maxsize=8192)
def terminal_state(states: tuple[str, ...], own: int | None = None) -> str:
    """The combined state of a terminal's monitors (own + store network) at one instant.
    `own`: the first `own` states are the terminal's own monitors; while none of them existed
    yet the terminal was not monitored (its store's network says nothing about it)."""
    if own is not None and all(s == NONE for s in states[:own]):
        return NONE
    known = [s for s in states if s != NONE]
    if not known:
        return NONE
    state = combine(known)
    return PAUSED if state == MAINTENANCE else state


def combined_segments(
    timelines: list[tuple[str, list[tuple[float, str]]]], begin: float, end: float, own: int | None = None
) -> list[tuple[float, float, str]]:
    """Segments (start, end, state) of a terminal over [begin, end), adjacent equal states merged.

    `timelines`: per monitor its state at `begin` (or earlier) and its changes (t, to_state) in
    order; changes at or before `begin` only set the state it starts with. `own`: how many of
    them (the first) are the terminal's own monitors (see terminal_state)."""
    if end <= begin:
        return []
    states = [initial for initial, _ in timelines]
    events = [(t, i, s) for i, (_, changes) in enumerate(timelines) for t, s in changes]
    events.sort(key=itemgetter(0))  # stable: a monitor's changes at one instant keep their order
    out: list[list] = []
    cursor, current = begin, terminal_state(tuple(states), own)
    for t, i, s in events:
        if t >= end:
            break
        if t > cursor:
            if out and out[-1][2] == current:
                out[-1][1] = t
            else:
                out.append([cursor, t, current])
            cursor = t
        states[i] = s
        current = terminal_state(tuple(states), own)
    if out and out[-1][2] == current:
        out[-1][1] = end
    else:
        out.append([cursor, end, current])
    return [tuple(seg) for seg in out]


def tally(
    segments: Iterable[tuple[float, float, str]], cuts: list[float] | None = None
) -> tuple[Figures, list[Figures]]:
    """Totals of the segments, and per day when `cuts` (the day boundaries, ascending: day i
    is [cuts[i], cuts[i+1])) are given. An outage crossing midnight counts once in the total
    and once in each day it touches (with the part inside that day as its length there)."""
    total = Figures(terminals=1)
    days = [Figures(terminals=1) for _ in range(len(cuts) - 1)] if cuts else []
    day = 0
    for a, b, state in segments:
        seconds = b - a
        _slot(total, state, seconds)
        if state == DOWN:
            total.outages += 1
            total.longest_outage = max(total.longest_outage, seconds)
        if cuts is None or not days:
            continue
        while day < len(days) - 1 and cuts[day + 1] <= a:
            day += 1
        d, lo = day, a
        while lo < b and d < len(days):
            hi = min(b, cuts[d + 1])
            if hi > lo:
                fig = days[d]
                _slot(fig, state, hi - lo)
                if state == DOWN:
                    fig.outages += 1
                    fig.longest_outage = max(fig.longest_outage, hi - lo)
            if hi >= b:
                break
            lo, d = hi, d + 1
    return total, days


# --- periods and days ------------------------------------------------------------------------


@lru_cache(maxsize=512)
def zone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


@dataclass(frozen=True)
class Period:
    """Either whole local dates [first, last] (each store's own midnight), or a rolling window
    [start, end) in absolute time (last 24 h, 7 d, 30 d)."""

    first: date | None = None
    last: date | None = None
    start: datetime | None = None
    end: datetime | None = None

    @classmethod
    def dates(cls, first: date, last: date) -> Period:
        if last < first:
            raise ValueError("the end date is before the start date")
        return cls(first=first, last=last)

    @classmethod
    def rolling(cls, start: datetime, end: datetime) -> Period:
        return cls(start=start.astimezone(UTC), end=end.astimezone(UTC))

    @classmethod
    def last_hours(cls, hours: float, now: datetime | None = None) -> Period:
        now = now or utcnow()
        return cls.rolling(now - timedelta(hours=hours), now)

    @property
    def is_dates(self) -> bool:
        return self.first is not None

    def window(self, tz: str | None) -> tuple[datetime, datetime]:
        if self.first is not None and self.last is not None:
            z = zone(tz)
            return (
                datetime.combine(self.first, time(), z).astimezone(UTC),
                datetime.combine(self.last + timedelta(days=1), time(), z).astimezone(UTC),
            )
        assert self.start is not None and self.end is not None  # made by dates() or rolling()
        return self.start, self.end

    def label(self) -> str:
        if self.first is not None and self.last is not None:
            return f"{self.first.isoformat()} to {self.last.isoformat()}"
        return f"{self.start:%Y-%m-%d %H:%M} to {self.end:%Y-%m-%d %H:%M} UTC"


@lru_cache(maxsize=4096)
def day_cuts(tz: str | None, begin: float, end: float) -> tuple[tuple[date, ...], list[float]]:
    """The local dates touched by [begin, end) in `tz` and their boundaries (epoch seconds),
    clipped to the window: the first cut is `begin`, the last `end`."""
    z = zone(tz)
    first = datetime.fromtimestamp(begin, z).date()
    last = datetime.fromtimestamp(max(begin, end - 1e-6), z).date()
    dates, cuts = [], [begin]
    d = first
    while d <= last:
        dates.append(d)
        nxt = datetime.combine(d + timedelta(days=1), time(), z).timestamp()
        cuts.append(min(nxt, end))
        d += timedelta(days=1)
    return tuple(dates), cuts


@lru_cache(maxsize=4096)
def day_spans(tz: str | None, begin: float, end: float) -> dict[date, float]:
    """Seconds of each local date inside [begin, end) (a date's share of the period)."""
    if end <= begin:
        return {}
    dates, cuts = day_cuts(tz, begin, end)
    return {d: cuts[i + 1] - cuts[i] for i, d in enumerate(dates)}


def store_outages(
    downs: Iterable[tuple[float, float]], tz: str | None = None, *, per_day: bool = False
) -> tuple[int, float, dict[date, tuple[int, float]]]:
    """A store's outages from its terminals' down spells: a maximal run of time with at least
    one of its terminals down is one outage (a store network fault taking 4 terminals down is
    one, not four). (count, longest seconds, per local date: (count, longest within the date))."""
    merged: list[list[float]] = []
    longest = 0.0
    for a, b in sorted(downs):  # plain comparisons, not max(): a fleet export runs this 10^5 times
        if merged and a <= merged[-1][1]:
            if b > merged[-1][1]:
                merged[-1][1] = b
        else:
            merged.append([a, b])
    for a, b in merged:
        if b - a > longest:
            longest = b - a
    days: dict[date, tuple[int, float]] = {}
    if per_day:
        for a, b in merged:
            dates, cuts = day_cuts(tz, a, b)
            for i, d in enumerate(dates):
                n, most = days.get(d, (0, 0.0))
                days[d] = (n + 1, max(most, cuts[i + 1] - cuts[i]))
    return len(merged), longest, days


# --- reading the database --------------------------------------------------------------------


@dataclass
class TerminalInfo:
    id: int
    poiid: str
    label: str
    store_id: int
    store_code: str
    store_name: str
    region: str
    tz: str
    created_at: datetime | None


@dataclass
class TerminalUptime:
    terminal: TerminalInfo
    begin: datetime  # the window actually counted (from when the terminal was added, up to now)
    end: datetime
    total: Figures
    days: list[tuple[date, Figures]] = field(default_factory=list)
    downs: list[tuple[float, float]] = field(default_factory=list)  # down spells (epoch seconds)


_TERMINAL_COLS = (
    Terminal.id,
    Terminal.poiid,
    Terminal.label,
    Terminal.store_id,
    Store.code,
    Store.name,
    Store.region,
    Store.timezone,
    Terminal.created_at,
)


def _scope_filter(stmt: Select[*_Ts], scope: str, key: ScopeKey) -> Select[*_Ts]:
    if scope == "terminal":
        return stmt.where(Terminal.id == key)
    if scope == "store":
        return stmt.where(Terminal.store_id == key)
    if scope == "region":
        return stmt.where(Store.region == key)
    return stmt


async def terminal_chunks(
    session: AsyncSession, scope: str, key: ScopeKey = None, chunk: int = CHUNK
) -> AsyncIterator[list[TerminalInfo]]:
    """The terminals of a scope, `chunk` at a time, by store then id (keyset paging)."""
    after = (-1, -1)
    while True:
        stmt = _scope_filter(select(*_TERMINAL_COLS).join(Store, Store.id == Terminal.store_id), scope, key)
        stmt = stmt.where(
            (Terminal.store_id > after[0]) | ((Terminal.store_id == after[0]) & (Terminal.id > after[1]))
        )
        rows = (await session.execute(stmt.order_by(Terminal.store_id, Terminal.id).limit(chunk))).all()
        if not rows:
            return
        yield [TerminalInfo(*r) for r in rows]
        if len(rows) < chunk:
            return
        after = (rows[-1].store_id, rows[-1].id)


@dataclass
class _MonitorRow:
    id: int
    store_id: int
    terminal_id: int | None
    state: str
    state_since: datetime | None
    before: str | None  # to_state of the last change before the window
    kind: str = ""  # its check (the terminals list's LAN state reads it)


async def _monitors(
    session: AsyncSession, terminals: list[TerminalInfo], before: datetime, *, first_change: bool = True
) -> tuple[dict[int, list[_MonitorRow]], dict[int, list[_MonitorRow]]]:
    """Monitors of these terminals and their stores' network monitors (one query), each with
    its state just before `before` (`state_before`)."""
    query = _monitors_query(dialect_of(session), first_change)
    own: dict[int, list[_MonitorRow]] = defaultdict(list)
    network: dict[int, list[_MonitorRow]] = defaultdict(list)
    ids, stores = [t.id for t in terminals], sorted({t.store_id for t in terminals})
    for i in range(0, len(ids), CHUNK):  # bounded lists (there are no more stores than terminals)
        params = {"before": before, "own": ids[i : i + CHUNK], "stores": stores[i : i + CHUNK]}
        for r in (await session.execute(query, params)).all():
            if r.terminal_id is None:
                network[r.store_id].append(_MonitorRow(*r))
            else:
                own[r.terminal_id].append(_MonitorRow(*r))
    return own, network


@cache
def _monitors_query(dialect: str, first_change: bool) -> Select[*tuple[Any, ...]]:
    """Built once per dialect (its parameters: before, own, stores)."""
    return select(
        Monitor.id,
        Monitor.store_id,
        Monitor.terminal_id,
        Monitor.state,
        Monitor.state_since,
        state_before(bindparam("before"), first_change=first_change).label("before"),
        Monitor.kind,
    ).where(
        or_(
            one_of(dialect, Monitor.terminal_id, "own"),
            Monitor.terminal_id.is_(None) & one_of(dialect, Monitor.store_id, "stores"),
        )
    )


def state_before(
    before: datetime | BindParameter[datetime], *, first_change: bool = True
) -> ColumnElement[str | None]:
    """A column of a select of monitors: each one's state just before `before`, the to_state of
    its last change before it (one index probe per monitor). With `first_change`, a monitor
    without a change before `before` was in the from_state of its first change, also when that
    change comes after the window: the same state whatever window is asked (stored days are
    computed a few days at a time and must add up to any period's figures); a second probe,
    for those monitors only. Without a change at all: None."""
    sc = StateChange.__table__
    last = (
        select(sc.c.to_state)
        .where(sc.c.monitor_id == Monitor.id, sc.c.at < before)
        .order_by(sc.c.at.desc(), sc.c.id.desc())
        .limit(1)
        .correlate(Monitor)
        .scalar_subquery()
    )
    if not first_change:
        return last
    first = (
        select(sc.c.from_state)
        .where(sc.c.monitor_id == Monitor.id, sc.c.at >= before)
        .order_by(sc.c.at, sc.c.id)
        .limit(1)
        .correlate(Monitor)
        .scalar_subquery()
    )
    return func.coalesce(last, first)


def _watching(
    t: TerminalInfo, own: dict[int, list[_MonitorRow]], network: dict[int, list[_MonitorRow]]
) -> list[_MonitorRow]:
    """The monitors whose states make the terminal's: its own and its store network's; none
    without one of its own (not monitored: nothing is counted)."""
    mine = own.get(t.id, [])
    return mine + network.get(t.store_id, []) if mine else []


def _own(monitors: list[_MonitorRow]) -> int:
    """How many of `_watching`'s monitors (its own first) are the terminal's own."""
    return sum(1 for m in monitors if m.terminal_id is not None)


async def _changes(session: AsyncSession, monitor_ids: list[int], start: datetime, end: datetime) -> Changes:
    """Changes (t, from_state, to_state) in [start, end) per monitor, in order."""
    dialect = dialect_of(session)
    rows: list[Any] = []
    for ids in in_chunks(dialect, monitor_ids):
        params = {"ids": ids, "start": start, "end": end}
        rows += (await session.execute(_changes_query(dialect), params)).all()
    rows.sort(key=lambda r: (r[0], r[1], r[4]))
    out: Changes = defaultdict(list)
    for mid, at, from_state, to_state, _id in rows:
        out[mid].append((at.timestamp(), from_state, to_state))
    return out


@cache
def _changes_query(dialect: str) -> Select[*tuple[Any, ...]]:
    sc = StateChange.__table__
    return select(sc.c.monitor_id, sc.c.at, sc.c.from_state, sc.c.to_state, sc.c.id).where(
        one_of(dialect, sc.c.monitor_id, "ids"), sc.c.at >= bindparam("start"), sc.c.at < bindparam("end")
    )


def _timeline(
    m: _MonitorRow, changes: Sequence[tuple[float, str, str]], begin: float
) -> tuple[str, list[tuple[float, str]]]:
    """A monitor's state at `begin` and its changes after, from what was read."""
    events = [(t, to) for t, _f, to in changes]
    if m.before is not None:
        return m.before, events
    if changes:
        return changes[0][1], events
    since = m.state_since.timestamp() if m.state_since else None
    if since is not None and since > begin:  # created inside the window, never changed since
        return NONE, [(since, m.state)]
    return m.state, []


def terminal_uptime(
    t: TerminalInfo,
    monitors: list[_MonitorRow],
    changes: Changes,
    start: datetime,
    end: datetime,
    *,
    per_day: bool = True,
) -> TerminalUptime:
    begin_dt = max(start, t.created_at) if t.created_at else start
    end_dt = max(end, begin_dt)
    begin, stop = begin_dt.timestamp(), end_dt.timestamp()
    timelines = [_timeline(m, changes.get(m.id, ()), begin) for m in monitors]
    segments = combined_segments(timelines, begin, stop, _own(monitors)) if timelines else []
    downs = [(a, b) for a, b, s in segments if s == DOWN]
    if per_day and stop > begin:
        dates, cuts = day_cuts(t.tz, begin, stop)
        total, days = tally(segments, cuts)
        total.span = max(0.0, end.timestamp() - start.timestamp())
        spans = day_spans(t.tz, start.timestamp(), end.timestamp())
        for d, fig in zip(dates, days, strict=True):
            fig.span = spans.get(d, 0.0)
        return TerminalUptime(t, begin_dt, end_dt, total, list(zip(dates, days, strict=True)), downs)
    total, _ = tally(segments)
    total.span = max(0.0, end.timestamp() - start.timestamp())
    return TerminalUptime(t, begin_dt, end_dt, total, downs=downs)


async def uptime_for_terminals(
    session: AsyncSession,
    terminals: list[TerminalInfo],
    period: Period,
    *,
    per_day: bool = True,
    now: datetime | None = None,
) -> list[TerminalUptime]:
    """Exact figures of these terminals (one chunk) over the period, capped at `now`."""
    return (await uptime_and_monitors(session, terminals, period, per_day=per_day, now=now))[0]


async def uptime_and_monitors(
    session: AsyncSession,
    terminals: list[TerminalInfo],
    period: Period,
    *,
    per_day: bool = True,
    now: datetime | None = None,
) -> tuple[list[TerminalUptime], dict[int, list[_MonitorRow]]]:
    """`uptime_for_terminals`, and each terminal's own monitors as read for it (their kind and
    state: the terminals list takes their LAN state from them rather than from a second read)."""
    if not terminals:
        return [], {}
    now = now or utcnow()
    windows = {}
    for t in terminals:
        s, e = period.window(t.tz)
        windows[t.id] = (s, min(e, now))
    return await _in_windows(session, terminals, windows, per_day=per_day)


async def uptime_in_windows(
    session: AsyncSession,
    terminals: list[TerminalInfo],
    windows: dict[int, tuple[datetime, datetime]],
    *,
    per_day: bool = True,
) -> list[TerminalUptime]:
    """Exact figures of these terminals, each over its own window [start, end) (in `windows`)."""
    return (await _in_windows(session, terminals, windows, per_day=per_day))[0]


async def _in_windows(
    session: AsyncSession,
    terminals: list[TerminalInfo],
    windows: dict[int, tuple[datetime, datetime]],
    *,
    per_day: bool = True,
) -> tuple[list[TerminalUptime], dict[int, list[_MonitorRow]]]:
    if not terminals:
        return [], {}
    lo = min(s for s, _ in windows.values())
    hi = max(e for _, e in windows.values())
    own, network = await _monitors(session, terminals, lo)
    ids = sorted({m.id for ms in own.values() for m in ms} | {m.id for ms in network.values() for m in ms})
    changes = await _changes(session, ids, lo, hi) if hi > lo else {}
    out = []
    for t in terminals:
        s, e = windows[t.id]
        out.append(terminal_uptime(t, _watching(t, own, network), changes, s, e, per_day=per_day))
    return out, own


class ChunkUptime(Protocol):
    """How a chunk of terminals gets its figures: `uptime_for_terminals` (exact, the reference)
    or `app.history.daily.stored_uptime` (stored days plus the exact computation for the rest)."""

    def __call__(
        self,
        session: AsyncSession,
        terminals: list[TerminalInfo],
        period: Period,
        *,
        per_day: bool = True,
        now: datetime | None = None,
    ) -> Awaitable[list[TerminalUptime]]: ...


async def iter_uptime(
    session: AsyncSession,
    scope: str,
    key: ScopeKey,
    period: Period,
    *,
    per_day: bool = True,
    now: datetime | None = None,
    chunk: int = CHUNK,
    compute: ChunkUptime = uptime_for_terminals,
) -> AsyncIterator[TerminalUptime]:
    """Every terminal of a scope with its figures, read and computed a chunk at a time."""
    now = now or utcnow()
    async for terminals in terminal_chunks(session, scope, key, chunk):
        for row in await compute(session, terminals, period, per_day=per_day, now=now):
            yield row


# --- reports: a scope summed up ----------------------------------------------------------------


@dataclass
class Report:
    scope: str
    key: object
    title: str
    period: Period
    total: Figures
    days: list[tuple[date, Figures]]
    groups: list[
        tuple[str, str, Figures]
    ]  # (key, label, figures): stores of a region, terminals of a store...
    group_by: str | None = None  # the unit of the groups

    def as_dict(self) -> dict[str, Any]:
        return {
            "scope": self.scope,
            "id": self.title,
            "period": self.period.label(),
            "total": self.total.as_dict(),
            "days": [{"date": d.isoformat(), **f.as_dict()} for d, f in self.days],
            "groups": [{"id": k, "label": lbl, **f.as_dict()} for k, lbl, f in self.groups],
        }


GROUP_BY = {"terminal": None, "store": "terminal", "region": "store", "fleet": "region"}


async def report(
    session: AsyncSession,
    scope: str,
    key: ScopeKey,
    period: Period,
    *,
    title: str = "",
    now: datetime | None = None,
    max_groups: int = 500,
    group_by: str | None = None,
    compute: ChunkUptime = uptime_for_terminals,
) -> Report:
    """Totals, per-day and one level of breakdown (by default a fleet by region, a region by
    store, a store by terminal; `group_by` a finer unit) for a scope, terminal-weighted.
    Outages above a terminal are store outages (`store_outages`), summed over stores."""
    total = Figures()
    days: dict[date, Figures] = defaultdict(Figures)
    groups: dict[str, list] = {}
    by = GROUP_BY[scope]
    if group_by is not None and SCOPES.index(group_by) < SCOPES.index(scope):
        by = group_by
    per_terminal = scope == "terminal"
    store: list[Any] = [None, "", [], None]  # id, tz, down spells, its group's key

    def close_store() -> None:
        if store[0] is None:
            return
        n, longest, per_day = store_outages(store[2], store[1], per_day=True)
        targets = [total]
        if store[3] in groups and by in ("store", "region"):
            targets.append(groups[store[3]][1])
        for fig in targets:
            fig.outages += n
            fig.longest_outage = max(fig.longest_outage, longest)
        for d, (dn, dl) in per_day.items():
            days[d].outages += dn
            days[d].longest_outage = max(days[d].longest_outage, dl)

    async for row in iter_uptime(session, scope, key, period, now=now, compute=compute):
        t = row.terminal
        if not per_terminal and t.store_id != store[0]:
            close_store()
            store[:] = [t.store_id, t.tz, [], None]
        total.add(row.total, outages=per_terminal)
        for d, f in row.days:
            days[d].add(f, outages=per_terminal)
        if not per_terminal:
            store[2].extend(row.downs)
        if by is None:
            continue
        gkey, glabel = {
            "terminal": (t.poiid, t.label or t.poiid),
            "store": (t.store_code, t.store_name),
            "region": (t.region or "(no region)", t.region or "(no region)"),
        }[by]
        store[3] = gkey
        if gkey not in groups:
            if len(groups) >= max_groups:
                continue
            groups[gkey] = [glabel, Figures()]
        groups[gkey][1].add(row.total, outages=by == "terminal")
    close_store()
    return Report(
        scope,
        key,
        title or str(key or "fleet"),
        period,
        total,
        sorted(days.items()),
        [(k, v[0], v[1]) for k, v in groups.items()],
        by,
    )


# --- for the dashboard: the 24 h column and the terminal page --------------------------------------


async def terminal_timeline(
    session: AsyncSession, t: TerminalInfo, start: datetime, end: datetime
) -> list[tuple[datetime, datetime, str]]:
    """The terminal's combined state over [start, end) as (from, to, state) segments, by the
    same rules as its uptime; "none" before it existed (the detail page's timelines)."""
    own, network = await _monitors(session, [t], start, first_change=False)
    monitors = _watching(t, own, network)
    changes = await _changes(session, [m.id for m in monitors], start, end) if monitors else {}
    return _segments(t, monitors, changes, start, end)


async def terminal_history(
    session: AsyncSession, t: TerminalInfo, windows: Sequence[tuple[datetime, datetime]]
) -> list[tuple[list[tuple[datetime, datetime, str]], Figures]]:
    """Per window, the terminal's timeline (as `terminal_timeline`) and its figures (as
    `uptime_for_terminals` without days), from one read of its monitors and their changes
    over all the windows (the detail page's 24 hours and 7 days: 3 queries, not 12)."""
    lo, hi = min(s for s, _ in windows), max(e for _, e in windows)
    own, network = await _monitors(session, [t], lo)
    monitors = _watching(t, own, network)
    changes = await _changes(session, [m.id for m in monitors], lo, hi) if monitors and hi > lo else {}
    out = []
    for start, end in windows:
        rows, within = _narrowed(monitors, changes, start, end)
        figures = terminal_uptime(t, rows, within, start, end, per_day=False).total
        out.append((_segments(t, rows, within, start, end), figures))
    return out


def _narrowed(
    monitors: list[_MonitorRow], changes: Changes, start: datetime, end: datetime
) -> tuple[list[_MonitorRow], Changes]:
    """What `_monitors` and `_changes` read for [start, end), taken from
    what they read for a window beginning no later: the state before `start` is the last
    change before it, else the state before the wider window."""
    s, e = start.timestamp(), end.timestamp()
    rows, within = [], {}
    for m in monitors:
        mine = changes.get(m.id, [])
        earlier = [c for c in mine if c[0] < s]
        rows.append(replace(m, before=earlier[-1][2] if earlier else m.before))
        within[m.id] = [c for c in mine if s <= c[0] < e]
    return rows, within


def _segments(
    t: TerminalInfo, monitors: list[_MonitorRow], changes: Changes, start: datetime, end: datetime
) -> list[tuple[datetime, datetime, str]]:
    begin = max(start, t.created_at) if t.created_at else start
    segments: list[tuple[datetime, datetime, str]] = [(start, begin, NONE)] if begin > start else []
    if begin >= end:
        return [(start, end, NONE)]
    if not monitors:
        return [*segments, (begin, end, NONE)]
    timelines = [_timeline(m, changes.get(m.id, ()), begin.timestamp()) for m in monitors]
    for a, b, state in combined_segments(timelines, begin.timestamp(), end.timestamp(), _own(monitors)):
        segments.append((datetime.fromtimestamp(a, UTC), datetime.fromtimestamp(b, UTC), state))
    return segments


async def terminal_uptimes(
    session: AsyncSession, terminal_ids: list[int], start: datetime, end: datetime
) -> dict[int, Figures]:
    """Exact figures of a page of terminals over [start, end) (the dashboard's "uptime 24 h")."""
    rows = await select_where_in(
        session, select(*_TERMINAL_COLS).join(Store, Store.id == Terminal.store_id), Terminal.id, terminal_ids
    )
    terminals = [TerminalInfo(*r) for r in rows]
    found = await uptime_for_terminals(session, terminals, Period.rolling(start, end), per_day=False, now=end)
    return {u.terminal.id: u.total for u in found}


# --- long windows from rollups -----------------------------------------------------------------

HOUR_S, DAY_S = 3600, 86400
_EPS = 0.01  # rollups keep milliseconds


def _ceil(ts: float, step: int) -> float:
    return -(-ts // step) * step


def _floor(ts: float, step: int) -> float:
    return ts // step * step


def rollup_buckets(begin: float, end: float) -> tuple[float, float, list[tuple[str, int, int]]]:
    """The whole UTC buckets inside [begin, end): whole days as 'day' buckets, the whole hours
    around them as 'hour' buckets. Returns (h0, h1, buckets): [begin, h0) and [h1, end) are the
    partial edges (under an hour each) left to the state changes."""
    h0, h1 = _ceil(begin, HOUR_S), _floor(end, HOUR_S)
    if h1 <= h0:
        return begin, begin, []
    d0, d1 = _ceil(h0, DAY_S), _floor(h1, DAY_S)
    if d1 <= d0:
        return h0, h1, [("hour", t, HOUR_S) for t in range(int(h0), int(h1), HOUR_S)]
    return (
        h0,
        h1,
        (
            [("hour", t, HOUR_S) for t in range(int(h0), int(d0), HOUR_S)]
            + [("day", t, DAY_S) for t in range(int(d0), int(d1), DAY_S)]
            + [("hour", t, HOUR_S) for t in range(int(d1), int(h1), HOUR_S)]
        ),
    )


async def _states_before(session: AsyncSession, monitor_ids: list[int], at: datetime) -> dict[int, str]:
    last = state_before(at, first_change=False)
    rows = await select_where_in(session, select(Monitor.id, last), Monitor.id, monitor_ids)
    return {mid: state for mid, state in rows if state is not None}


def _bucket_figures(faults: list[tuple[float, float]], length: float) -> tuple[float, float] | None:
    """(down, unknown) of a terminal over one bucket from its monitors' rollups, when they say
    it exactly: `faults` are the (down, unknown) seconds of its monitors that were not up the
    whole bucket. None when the union of several monitors' faults cannot be known."""
    if not faults:
        return 0.0, 0.0
    if any(d >= length - _EPS for d, _u in faults):
        return length, 0.0  # one monitor down throughout: the terminal was down throughout
    if len(faults) == 1:
        return faults[0]
    if all(d <= 0 for d, _u in faults) and any(u >= length - _EPS for _d, u in faults):
        return 0.0, length  # never down, one monitor unknown throughout
    return None


async def rollup_totals(
    session: AsyncSession,
    terminals: list[TerminalInfo],
    start: datetime,
    end: datetime,
    *,
    now: datetime | None = None,
) -> tuple[dict[int, Figures], int]:
    """Seconds up/down/unknown/paused of these terminals over [start, end) read from the hourly
    and daily rollups for the whole buckets and from the state changes for the partial edges.

    Rollups are per monitor: a terminal whose monitors' faults overlap in a bucket in a way the
    rollups cannot resolve, that was paused or in maintenance, or that (or whose monitor) was
    added inside the window, is computed from its state changes instead; so are buckets not
    rolled up yet. The result is the same as the exact figures (outages are not counted here:
    `outages` stays 0). Returns the figures and how many terminals needed the state changes."""
    from app.monitoring.models import RolledUpHour, Rollup

    now = now or utcnow()
    end = min(end, now)
    result: dict[int, Figures] = {}
    if not terminals or end <= start:
        return result, 0
    # How far the rollups go (a healthy monitor has no hour row: app.monitoring.maintenance).
    last_hour = await session.scalar(select(func.max(RolledUpHour.bucket_start)))
    covered = (last_hour + timedelta(hours=1)).timestamp() if last_hour else start.timestamp()
    h0, h1, buckets = rollup_buckets(start.timestamp(), min(end.timestamp(), covered))
    if not buckets:
        exact = await uptime_for_terminals(
            session, terminals, Period.rolling(start, end), per_day=False, now=now
        )
        return {u.terminal.id: u.total for u in exact}, len(terminals)
    h0_dt, h1_dt = datetime.fromtimestamp(h0, UTC), datetime.fromtimestamp(h1, UTC)

    own, network = await _monitors(session, terminals, start, first_change=False)
    mons = {t.id: _watching(t, own, network) for t in terminals}
    ids = sorted({m.id for ms in mons.values() for m in ms})
    fallback = {
        t.id
        for t in terminals
        if not mons[t.id]
        or (t.created_at and t.created_at > start)
        or any(m.before is None and m.state_since and m.state_since > start for m in mons[t.id])
    }

    # The edges, exactly: [start, h0) from the state before start, [h1, end) from the state before h1.
    head_changes = await _changes(session, ids, start, h0_dt)
    tail_changes = await _changes(session, ids, h1_dt, end)
    at_h1 = await _states_before(session, ids, h1_dt)
    sc = StateChange.__table__
    manual = {
        r[0]
        for r in await select_where_in(
            session,
            select(sc.c.monitor_id)
            .where(sc.c.at >= h0_dt, sc.c.at < h1_dt, sc.c.to_state.in_((PAUSED, MAINTENANCE)))
            .distinct(),
            sc.c.monitor_id,
            ids,
        )
    }
    faults: dict[tuple[int, str, float], tuple[float, float]] = {}
    r = Rollup.__table__
    periods = {p for p, _t, _l in buckets}
    q = select(r.c.monitor_id, r.c.period, r.c.bucket_start, r.c.seconds_down, r.c.seconds_unknown).where(
        r.c.period.in_(periods),
        r.c.bucket_start >= h0_dt,
        r.c.bucket_start < h1_dt,
        (r.c.seconds_down > 0) | (r.c.seconds_unknown > 0),
    )
    for mid, period, bucket_start, down, unknown in await select_where_in(session, q, r.c.monitor_id, ids):
        faults[(mid, period, bucket_start.timestamp())] = (down or 0.0, unknown or 0.0)
    by_monitor_bucket: dict[int, list] = defaultdict(list)
    for (mid, period, ts), f in faults.items():
        by_monitor_bucket[mid].append((period, ts, f))

    for t in terminals:
        if t.id in fallback:
            continue
        ms = mons[t.id]
        head_tl = [_timeline(m, head_changes.get(m.id, ()), start.timestamp()) for m in ms]
        head_segments = combined_segments(head_tl, start.timestamp(), h0)
        # The state of each monitor at h0: if any is paused or in maintenance there, or becomes so
        # inside, the rollups (which only know down and unknown) cannot tell.
        at_h0 = [tl[1][-1][1] if tl[1] and tl[1][-1][0] < h0 else tl[0] for tl in head_tl]
        if any(s in (PAUSED, MAINTENANCE, NONE) for s in at_h0) or any(m.id in manual for m in ms):
            fallback.add(t.id)
            continue
        per_bucket: dict[tuple[str, float], list] = defaultdict(list)
        for m in ms:
            for period, ts, f in by_monitor_bucket.get(m.id, ()):
                per_bucket[(period, ts)].append(f)
        fig = Figures(terminals=1)
        for period, ts, length in buckets:
            got = _bucket_figures(per_bucket.get((period, ts), []), length)
            if got is None:
                break
            fig.down += got[0]
            fig.unknown += got[1]
            fig.up += length - got[0] - got[1]
        else:
            total_head, _ = tally(head_segments)
            tail_tl = [
                _timeline(
                    _MonitorRow(m.id, m.store_id, m.terminal_id, m.state, m.state_since, at_h1.get(m.id)),
                    tail_changes.get(m.id, ()),
                    h1,
                )
                for m in ms
            ]
            total_tail, _ = tally(combined_segments(tail_tl, h1, end.timestamp()))
            for part in (total_head, total_tail):
                fig.up += part.up
                fig.down += part.down
                fig.unknown += part.unknown
                fig.paused += part.paused
            result[t.id] = fig
            continue
        fallback.add(t.id)
    if fallback:
        exact = await uptime_for_terminals(
            session,
            [t for t in terminals if t.id in fallback],
            Period.rolling(start, end),
            per_day=False,
            now=now,
        )
        for u in exact:
            u.total.outages, u.total.longest_outage = 0, 0.0
            result[u.terminal.id] = u.total
    return result, len(fallback)
