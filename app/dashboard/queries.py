"""The dashboard's reads. Every function is bounded by one page: it reads a page of rows and
then the facts for exactly those rows, in one query per kind of fact (never one per row).

The derived status kept on stores and terminals (written by the state machine) is what the
lists read; monitors and state changes are only read for the rows on screen.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache, lru_cache
from typing import Any, TypeVar, cast

from sqlalchemy import BindParameter, Select, and_, bindparam, case, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.dashboard.reasons import Problem, Reason, network_rank, store_reason
from app.db import dialect_of, in_chunks, one_of, utcnow
from app.history.uptime import (
    Figures,
    Period,
    TerminalInfo,
    terminal_history,
    uptime_and_monitors,
    uptime_for_terminals,
)
from app.inventory.models import PROVIDERS, Agent, Monitor, Store, Terminal, TerminalEvent
from app.monitoring.agents import STORE_OFFLINE
from app.monitoring.compact import (
    RECENT_DAYS,
    Days,
    kept_results,
    plain_buckets,
    plain_days,
    recent_folded,
)
from app.monitoring.models import CheckResult, StateChange
from app.vocabulary import (
    STATES_WORST_FIRST,
    STORES_AFFECTED,
    AgentState,
    CloudState,
    MonitorKind,
    State,
    StoreStatus,
    worst,
)
from app.windows.service import Active, maintenance_of

T = TypeVar("T")
PER_PAGE_CHOICES = (25, 50, 100, 200)
LAN_KINDS = (MonitorKind.TCP, MonitorKind.TLS, MonitorKind.HTTPS, MonitorKind.PAYNT_EPOS)
DASHES = "\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe58\ufe63\uff0d"


def normalise_query(q: str | None) -> str:
    """What people paste: stray spaces, non-breaking hyphens from a PDF or a chat."""
    q = (q or "").strip()
    for dash in DASHES:
        q = q.replace(dash, "-")
    return q[:100]


def _like(q: str) -> str:
    escaped = q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped.lower()}%"


# --- small caches for filter choices (distinct values change rarely) ------------------------

_CACHE: dict[tuple, tuple[float, object]] = {}
CACHE_TTL_S = 60.0
# The summary bar and the worst-first page are the same for every wall screen polling at once:
# computed at most once a second per process (well inside the 5 s a change may take to show).
LIVE_CACHE_TTL_S = 1.0
_LOADING: dict[tuple, asyncio.Future[Any]] = {}  # what is being loaded now, for who asks meanwhile
_generation = 0  # bumped by every clear: a load it overtook is not kept


async def _cached(
    key: tuple, loader: Callable[[], Awaitable[T]], ttl: float | None = None, fresh: bool = False
) -> T:
    """`fresh`: read now (a change was just published) and keep that for the next ones.

    Loaded at most once at a time: when it expires under a hundred users, one of them loads it
    and the others wait for that (each loading it would take every database connection at once,
    and each page would wait for all of them). A fresh read never waits for an older one. A
    load that a clear overtook is not kept: it may have read before the change."""
    ttl = CACHE_TTL_S if ttl is None else ttl
    hit = _CACHE.get(key)
    if hit and not fresh and time.monotonic() - hit[0] < ttl:
        return cast(T, hit[1])
    if ttl > 0 and not fresh and (loading := _LOADING.get(key)) is not None:
        try:
            return cast(T, await asyncio.shield(loading))
        except asyncio.CancelledError:
            if not loading.cancelled():
                raise  # this request was cancelled, not the load (then load it here)
    done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    if ttl > 0:
        _LOADING[key] = done
    generation = _generation
    try:
        value = await loader()
    except BaseException:
        done.cancel()  # whoever waits for it loads it themselves
        raise
    finally:
        if _LOADING.get(key) is done:
            del _LOADING[key]
    done.set_result(value)
    if ttl > 0 and generation == _generation:
        if len(_CACHE) > 2000:
            _CACHE.clear()
        _CACHE[key] = (time.monotonic(), value)
    return value


def clear_caches() -> None:
    global _generation
    _generation += 1
    _CACHE.clear()
    _LOADING.clear()  # a load under way may predate the change: who asks next reads again


def drop_views() -> None:
    """A state changed: the pages' shared renders (`shared_view`) are read again."""
    global _generation
    _generation += 1
    for key in [k for k in _CACHE if k[0] == "view"]:
        del _CACHE[key]
    for key in [k for k in _LOADING if k[0] == "view"]:
        del _LOADING[key]


async def shared_view(key: tuple, render: Callable[[], Awaitable[T]]) -> T:
    """A page's results as everyone with the same role and filters sees them, rendered at most
    once a second per process, like the counts they show: a hundred people watching the same
    list cost one render. Dropped when this process hears a change, so a page never shows an
    older state than the last one heard (its live updates take it from there)."""
    return await _cached(("view", *key), render, LIVE_CACHE_TTL_S)


async def regions(session: AsyncSession) -> list[str]:
    async def load() -> list[str]:
        rows = await session.scalars(
            select(Store.region).where(Store.region != "").distinct().order_by(Store.region)
        )
        return list(rows)

    return await _cached(("regions", id(session.bind)), load)


async def models(session: AsyncSession) -> list[str]:
    async def load() -> list[str]:
        rows = await session.scalars(
            select(Terminal.model).where(Terminal.model != "").distinct().order_by(Terminal.model)
        )
        return list(rows)

    return await _cached(("models", id(session.bind)), load)


# --- fleet summary ---------------------------------------------------------------------------


@dataclass
class Summary:
    counts: dict[str, int]  # terminals by status
    terminals: int
    stores: int
    stores_affected: int  # cannot take cards or degraded
    cloud_disconnected: int
    store_counts: dict[str, int] = field(default_factory=dict)  # stores by StoreStatus

    @property
    def other(self) -> int:
        return _other(self.counts)

    def stores_in(self, status: str) -> int:
        return self.store_counts.get(status, 0)

    def signature(self) -> str:
        c, sc = self.counts, self.store_counts
        return (
            f"{c.get(State.UP, 0)}.{c.get(State.DOWN, 0)}.{c.get(State.UNKNOWN, 0)}.{self.other}."
            f"{c.get(State.NONE, 0)}.{self.cloud_disconnected}."
            + ".".join(str(sc.get(s, 0)) for s in StoreStatus)
        )


def _other(counts: dict[str, int]) -> int:
    """Paused or in maintenance: set by people, shown together."""
    return counts.get(State.PAUSED, 0) + counts.get(State.MAINTENANCE, 0)


async def fleet_summary(session: AsyncSession, *, region: str = "", fresh: bool = False) -> Summary:
    key = ("summary", id(session.bind), region)
    return await _cached(key, lambda: _fleet_summary(session, region), LIVE_CACHE_TTL_S, fresh)


async def _fleet_summary(session: AsyncSession, region: str) -> Summary:
    """Counts by state: index-only scans on (status, status_since), (cloud_state), (store_id, status)."""
    by_status = select(Terminal.status, func.count()).group_by(Terminal.status)
    # Stores by status (app.monitoring.status: can it take cards?), one grouped query.
    stores_q = select(Store.status, func.count()).group_by(Store.status)
    cloud = select(func.count()).select_from(Terminal).where(Terminal.cloud_state == CloudState.DISCONNECTED)
    if region:
        in_region = select(Store.id).where(Store.region == region)
        by_status = by_status.where(Terminal.store_id.in_(in_region))
        stores_q = stores_q.where(Store.region == region)
        cloud = cloud.where(Terminal.store_id.in_(in_region))
    counts = {status: n for status, n in (await session.execute(by_status)).all()}
    store_counts = {status: n for status, n in (await session.execute(stores_q)).all()}
    return Summary(
        counts=counts,
        terminals=sum(counts.values()),
        stores=sum(store_counts.values()),
        stores_affected=sum(store_counts.get(s, 0) for s in STORES_AFFECTED),
        cloud_disconnected=await session.scalar(cloud) or 0,
        store_counts=store_counts,
    )


# --- stores overview -------------------------------------------------------------------------


@dataclass
class StoreRow:
    id: int
    code: str
    name: str
    region: str
    status: str
    status_since: datetime | None
    counts: dict[str, int] = field(default_factory=dict)
    problem_since: datetime | None = None  # the oldest down terminal's status_since
    network_state: str = State.NONE  # worst of the store's network-profile checks
    status_reason: str | None = None  # a diagnosis for the whole store (store_offline)
    agent_state: str | None = None  # its store agent's state; None: checked centrally
    agent_heard_at: datetime | None = None  # when its agent was last heard
    agent_state_since: datetime | None = None
    maintenance: Active | None = None  # its active maintenance window (the wrench)
    created_at: datetime | None = None
    reason: Reason | None = None  # its worst problem in words (the rows on screen only)
    strip: list[StripCell] = field(default_factory=list)  # the last hours, worst state per cell

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def other(self) -> int:
        return _other(self.counts)

    @property
    def not_monitored(self) -> int:
        return self.counts.get(State.NONE, 0)

    @property
    def store_status(self) -> StoreStatus:
        """Can it take cards? (app.monitoring.status; a value from before it existed: unknown)."""
        return StoreStatus(self.status) if self.status in _STORE_STATUSES else StoreStatus.UNKNOWN

    @property
    def worst(self) -> State:
        """The terminal state whose colour the row takes."""
        return self.store_status.colour

    @property
    def store_offline(self) -> bool:
        """Its agent and every cloud terminal went silent: power or internet is gone."""
        return self.status_reason == STORE_OFFLINE

    @property
    def agent_offline(self) -> bool:
        return self.agent_state == AgentState.OFFLINE

    @property
    def silent_since(self) -> datetime | None:
        """When the store went silent: its agent's last word (else when the agent went offline,
        else the store's own status change)."""
        return self.agent_heard_at or self.agent_state_since or self.status_since

    @property
    def since(self) -> datetime | None:
        if self.worst == State.DOWN and self.problem_since and self.network_state != State.DOWN:
            return self.problem_since
        return self.status_since

    def signature(self) -> str:
        c = self.counts
        since = int(self.since.timestamp()) if self.since else 0
        agent = f".{self.status_reason or ''}.{self.agent_state}" if self.agent_state else ""
        agent += f".m{self.maintenance.window_id}" if self.maintenance else ""
        reason = self.reason.text if self.reason else ""
        strip = "".join(cell.state[:2] for cell in self.strip)
        return (
            f"{self.status}.{self.network_state}.{c.get(State.UP, 0)}.{c.get(State.DOWN, 0)}."
            f"{c.get(State.UNKNOWN, 0)}.{self.other}.{self.not_monitored}.{since}{agent}.{reason}.{strip}"
        )


_STORE_STATUSES = frozenset(StoreStatus)
STRIP_HOURS = 12  # the overview's per-row history strip: the last 12 hours, one cell an hour
STRIP_MIN_S = 120.0  # a state other than down shows in a cell when a monitor was in it this long


@dataclass
class StripCell:
    start: datetime
    end: datetime
    state: str  # the worst state any of the store's monitors was in during the cell


# Read with every store row, by one outer join on the (small) agents table.
_STORE_ROW_COLUMNS = (
    Store.id,
    Store.code,
    Store.name,
    Store.region,
    Store.status,
    Store.status_since,
    Store.status_reason,
    Store.created_at,
    Agent.state.label("agent_state"),
    Agent.last_heard_at.label("agent_heard_at"),
    Agent.state_since.label("agent_state_since"),
)


def _store_row(r: Any) -> StoreRow:
    return StoreRow(
        r.id,
        r.code,
        r.name,
        r.region,
        r.status,
        r.status_since,
        problem_since=r.down_since,
        status_reason=r.status_reason,
        created_at=r.created_at,
        agent_state=r.agent_state,
        agent_heard_at=r.agent_heard_at,
        agent_state_since=r.agent_state_since,
    )


def _store_filters(stmt: Select, region: str, q: str) -> Select:
    if region:
        stmt = stmt.where(Store.region == region)
    if q:
        pattern = _like(q)
        stmt = stmt.where(
            or_(
                func.lower(Store.code).like(pattern, escape="\\"),
                func.lower(Store.name).like(pattern, escape="\\"),
            )
        )
    return stmt


# The overview's sortable columns (default: worst first).
STORE_SORTS = ("status", "store", "region", "down", "unknown", "since")


async def store_page(
    session: AsyncSession,
    *,
    region: str = "",
    q: str = "",
    page: int = 1,
    per_page: int = 50,
    sort: str = "status",
    desc: bool = False,
    fresh: bool = False,
) -> tuple[list[StoreRow], int]:
    return await _cached(
        ("stores", id(session.bind), region, q, page, per_page, sort, desc),
        lambda: _store_page(session, region, q, page, per_page, sort, desc),
        LIVE_CACHE_TTL_S,
        fresh,
    )


def _status_rank() -> Any:
    """A store status's severity, worst first (app.vocabulary.StoreStatus order)."""
    return case(
        *((Store.status == s, s.severity) for s in StoreStatus),
        (Store.status == State.DOWN, StoreStatus.DEGRADED.severity),  # written before store statuses
        else_=StoreStatus.UNKNOWN.severity,
    )


async def _store_page(
    session: AsyncSession, region: str, q: str, page: int, per_page: int, sort: str, desc: bool
) -> tuple[list[StoreRow], int]:
    """Stores worst first: cannot take cards, degraded, unknown ... by the store status, then
    most terminals down, then unknown; or by the column asked for."""
    # Only unhealthy terminals are aggregated, so the cost follows the trouble, not the fleet.
    bad = (
        select(
            Terminal.store_id.label("store_id"),
            func.sum(case((Terminal.status == State.DOWN, 1), else_=0)).label("down"),
            func.sum(case((Terminal.status == State.UNKNOWN, 1), else_=0)).label("unknown"),
            func.min(case((Terminal.status == State.DOWN, Terminal.status_since))).label("down_since"),
        )
        .where(Terminal.status.in_((State.DOWN, State.UNKNOWN)))
        .group_by(Terminal.store_id)
        .subquery()
    )
    down = func.coalesce(bad.c.down, 0)
    unknown = func.coalesce(bad.c.unknown, 0)
    stmt = _store_filters(
        select(*_STORE_ROW_COLUMNS, bad.c.down_since)
        .outerjoin(bad, bad.c.store_id == Store.id)
        .outerjoin(Agent, Agent.id == Store.agent_id),
        region,
        q,
    )
    total = await session.scalar(_store_filters(select(func.count()).select_from(Store), region, q)) or 0
    # Each column's natural order (worst or most first); `desc` turns it round.
    primary: dict[str, tuple[Any, bool]] = {
        "status": (_status_rank(), False),
        "store": (Store.code, False),
        "region": (Store.region, False),
        "down": (down, True),
        "unknown": (unknown, True),
        "since": (Store.status_since, True),
    }
    key, descending = primary.get(sort, primary["status"])
    descending = descending != desc
    first = key.desc() if descending else key.asc()
    if sort == "since":
        first = first.nulls_last()
    order = [first, _status_rank(), down.desc(), unknown.desc(), bad.c.down_since, Store.code]
    stmt = stmt.order_by(*order).limit(per_page).offset((page - 1) * per_page)
    rows = [_store_row(r) for r in (await session.execute(stmt)).all()]
    await _fill_store_facts(session, rows)
    return rows, total


@cache
def _store_counts_query(dialect: str) -> Select[*tuple[Any, ...]]:
    return (
        select(Terminal.store_id, Terminal.status, func.count())
        .where(one_of(dialect, Terminal.store_id, "ids"))
        .group_by(Terminal.store_id, Terminal.status)
    )


async def store_counts(session: AsyncSession, store_ids: list[int]) -> dict[int, dict[str, int]]:
    """Terminals per state for these stores: one grouped query on (store_id, status)."""
    if not store_ids:
        return {}
    out: dict[int, dict[str, int]] = {}
    stmt = _store_counts_query(dialect_of(session))
    for store_id, status, n in (await session.execute(stmt, {"ids": store_ids})).all():
        out.setdefault(store_id, {})[status] = n
    return out


@cache
def _store_rows_query(dialect: str) -> Select[*tuple[Any, ...]]:
    down_since = (
        select(Terminal.store_id, func.min(Terminal.status_since).label("down_since"))
        .where(one_of(dialect, Terminal.store_id, "ids"), Terminal.status == State.DOWN)
        .group_by(Terminal.store_id)
        .subquery()
    )
    return (
        select(*_STORE_ROW_COLUMNS, down_since.c.down_since)
        .outerjoin(down_since, down_since.c.store_id == Store.id)
        .outerjoin(Agent, Agent.id == Store.agent_id)
        .where(one_of(dialect, Store.id, "ids"))
    )


async def store_rows(session: AsyncSession, store_ids: list[int]) -> dict[int, StoreRow]:
    """The same rows as the overview, for stores already on screen (live updates)."""
    if not store_ids:
        return {}
    stmt = _store_rows_query(dialect_of(session))
    rows = {r.id: _store_row(r) for r in (await session.execute(stmt, {"ids": store_ids})).all()}
    await _fill_store_facts(session, list(rows.values()))
    return rows


@cache
def _store_monitors_query(dialect: str) -> Select[*tuple[Any, ...]]:
    return select(
        Monitor.id,
        Monitor.store_id,
        Monitor.terminal_id,
        Monitor.kind,
        Monitor.target,
        Monitor.state,
        Monitor.enabled,
        Monitor.state_since,
        Monitor.last_diagnosis,
    ).where(one_of(dialect, Monitor.store_id, "ids"))


async def _fill_store_facts(session: AsyncSession, rows: list[StoreRow], now: datetime | None = None) -> None:
    """Terminal counts, network state, the reason in words and the history strip for these
    stores (the rows on one page): three queries whatever the page size, never the fleet."""
    ids = [r.id for r in rows]
    if not ids:
        return
    now = now or utcnow()
    counts = await store_counts(session, ids)
    monitors = (await session.execute(_store_monitors_query(dialect_of(session)), {"ids": ids})).all()
    network: dict[int, list[str]] = {}
    problems: dict[int, list[Problem]] = {}
    for m in monitors:
        state = m.state if m.enabled else State.PAUSED
        if m.terminal_id is None:
            network.setdefault(m.store_id, []).append(state)
        if state in (State.DOWN, State.UNKNOWN):
            problems.setdefault(m.store_id, []).append(
                Problem(m.terminal_id, m.kind, m.target, state, m.last_diagnosis)
            )
    strips = await _strips(session, monitors, now, {r.id: r.created_at for r in rows})
    in_maintenance = await maintenance_of(session, ids, utcnow())
    for r in rows:
        r.counts = counts.get(r.id, {})
        r.maintenance = in_maintenance.get(r.id)
        r.network_state = worst(network.get(r.id, []))
        r.reason = store_reason(
            r.store_status,
            problems.get(r.id, []),
            terminals_down=r.counts.get(State.DOWN, 0),
            total=r.total,
        )
        r.strip = strips.get(r.id, [])


@cache
def _strip_changes_query(dialect: str) -> Select[*tuple[Any, ...]]:
    sc = StateChange.__table__
    return select(sc.c.monitor_id, sc.c.at, sc.c.from_state, sc.c.to_state).where(
        one_of(dialect, sc.c.monitor_id, "ids"), sc.c.at >= bindparam("first")
    )


async def _strips(
    session: AsyncSession, monitors: Sequence[Any], now: datetime, created: Mapping[int, datetime | None]
) -> dict[int, list[StripCell]]:
    """Per store, the worst state its monitors were in during each of the last STRIP_HOURS
    clock hours (the last one up to now), from the state changes of those monitors in the
    window (one indexed query) and their current states. Down counts however short; another
    state only when it lasted STRIP_MIN_S (a check's first seconds are unknown). Hours before
    the store existed are "none"."""
    if not monitors:
        return {}
    first = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=STRIP_HOURS - 1)
    bounds = [first + timedelta(hours=i) for i in range(STRIP_HOURS)] + [now]
    n = len(bounds) - 1
    dialect = dialect_of(session)
    found: list[Any] = []
    for ids in in_chunks(dialect, [m.id for m in monitors]):
        found += (await session.execute(_strip_changes_query(dialect), {"ids": ids, "first": first})).all()
    changes: dict[int, list[tuple[datetime, str, str]]] = {}
    for mid, at, from_state, to_state in sorted(found, key=lambda r: r[1]):
        changes.setdefault(mid, []).append((at, from_state, to_state))
    seconds: dict[int, list[dict[str, float]]] = {}
    for m in monitors:
        per = seconds.setdefault(m.store_id, [{} for _ in range(n)])
        born = max(created.get(m.store_id) or first, first)
        mine = changes.get(m.id)
        if mine:  # its state through the window: the first change's from_state, then each to_state
            spells = [(born, mine[0][1])] + [(at, to) for at, _f, to in mine]
        else:
            spells = [(max(born, m.state_since or born), m.state if m.enabled else State.PAUSED)]
        for k, (start, state) in enumerate(spells):
            end = spells[k + 1][0] if k + 1 < len(spells) else now
            for i in range(n):
                lo, hi = max(start, bounds[i]), min(end, bounds[i + 1])
                if lo < hi or (start == end and bounds[i] <= start < bounds[i + 1]):
                    cell = per[i]
                    cell[state] = max(cell.get(state, 0.0), (hi - lo).total_seconds())
    out: dict[int, list[StripCell]] = {}
    for sid, per in seconds.items():
        cells = []
        for i, spent in enumerate(per):
            counted = [s for s, secs in spent.items() if s == State.DOWN or secs >= STRIP_MIN_S]
            cells.append(StripCell(bounds[i], bounds[i + 1], worst(counted or list(spent))))
        out[sid] = cells
    return out


# --- terminals -------------------------------------------------------------------------------

SORTS = {
    # Worst first: the status names sort so (down, maintenance, paused, unknown, up), but for
    # "none" (not monitored), which terminal_page puts last (on the index, see _status_groups).
    "status": (Terminal.status, Terminal.status_since, Terminal.id),
    "poiid": (Terminal.poiid,),
    "model": (Terminal.model, Terminal.poiid),
    "store": (Store.code, Terminal.poiid),
    "label": (Terminal.label, Terminal.poiid),
    "ws": (Terminal.cloud_state, Terminal.poiid),
    "last_seen": (Terminal.last_seen_at, Terminal.id),
}


# The terminals list's status filter: the monitor states worst first, then not monitored.
TERMINAL_STATUSES: tuple[State, ...] = (*STATES_WORST_FIRST, State.NONE)


@dataclass
class TerminalFilters:
    store: str = ""
    region: str = ""
    provider: str = ""
    model: str = ""
    status: str = ""
    ws: str = ""
    q: str = ""
    sort: str = "status"
    dir: str = "asc"
    page: int = 1
    per: int = 50

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> TerminalFilters:
        def get(name: str) -> str:
            return (params.get(name) or "").strip()[:100]

        f = cls(
            store=get("store"),
            region=get("region"),
            provider=get("provider"),
            model=get("model"),
            status=get("status"),
            ws=get("ws"),
            q=normalise_query(params.get("q")),
        )
        f.status = f.status if f.status in TERMINAL_STATUSES else ""
        f.ws = f.ws if f.ws in tuple(CloudState) else ""
        f.provider = f.provider if f.provider in PROVIDERS else ""
        f.sort = get("sort") if get("sort") in SORTS else "status"
        f.dir = "desc" if get("dir") == "desc" else "asc"
        f.page = _int(get("page"), 1, 1, 10**6)
        per = _int(get("per"), 50, 1, 1000)
        f.per = per if per in PER_PAGE_CHOICES else 50
        return f

    def params(self, **overrides: object) -> dict[str, str]:
        """Non-default values only, so shared URLs stay short."""
        values = {**self.__dict__, **overrides}
        defaults = TerminalFilters().__dict__
        return {k: str(v) for k, v in values.items() if v != defaults[k] and v != ""}

    @property
    def active(self) -> bool:
        return any((self.store, self.region, self.provider, self.model, self.status, self.ws, self.q))


def _int(value: str, default: int, lo: int, hi: int) -> int:
    try:
        return max(lo, min(hi, int(value)))
    except (TypeError, ValueError):
        return default


@dataclass
class TerminalRow:
    id: int
    poiid: str
    model: str
    serial: str
    label: str
    provider: str
    integration: str
    lan_host: str | None
    lan_port: int | None
    cloud_enabled: bool
    status: str
    status_since: datetime | None
    cloud_state: str
    last_seen_at: datetime | None
    store_code: str
    store_name: str
    region: str
    created_at: datetime | None = None
    store_id: int = 0
    tz: str = "UTC"
    lan_state: str = State.NONE  # worst state of its LAN monitors; none without any
    uptime_24h: Figures | None = None  # with how much of the 24 h was monitored

    @property
    def ws(self) -> str:
        if self.cloud_enabled or self.cloud_state != CloudState.UNKNOWN:
            return self.cloud_state
        return CloudState.NOT_ENABLED

    @property
    def store_network_blamed(self) -> bool:
        """Down although its own LAN and cloud checks are not: its store's network is the cause."""
        return (
            self.status == State.DOWN and self.lan_state != State.DOWN and self.ws != CloudState.DISCONNECTED
        )

    def signature(self) -> str:
        since = int(self.status_since.timestamp()) if self.status_since else 0
        seen = int(self.last_seen_at.timestamp()) // 60 if self.last_seen_at else 0
        return f"{self.status}.{self.ws}.{self.lan_state}.{since}.{seen}"


_TERMINAL_COLUMNS = (
    Terminal.id,
    Terminal.poiid,
    Terminal.model,
    Terminal.serial,
    Terminal.label,
    Terminal.provider,
    Terminal.integration,
    Terminal.lan_host,
    Terminal.lan_port,
    Terminal.cloud_enabled,
    Terminal.status,
    Terminal.status_since,
    Terminal.cloud_state,
    Terminal.last_seen_at,
    Terminal.created_at,
    Store.code.label("store_code"),
    Store.name.label("store_name"),
    Store.region,
    Terminal.store_id,
    Store.timezone.label("tz"),
)


def _terminal_filters(stmt: Select, shape: _Shape) -> Select:
    """Filters on the terminals table alone (stores by subquery), so counting needs no join
    and every condition can use an index: (store_id, status), (status, status_since),
    (cloud_state), and on PostgreSQL trigram indexes for the search. The values are
    parameters (`_filter_params`): the statements are built once per shape."""
    if shape.store:
        stmt = stmt.where(
            Terminal.store_id == select(Store.id).where(Store.code == bindparam("store")).scalar_subquery()
        )
    if shape.region:
        stmt = stmt.where(Terminal.store_id.in_(select(Store.id).where(Store.region == bindparam("region"))))
    if shape.provider:
        stmt = stmt.where(Terminal.provider == bindparam("provider"))
    if shape.model:
        stmt = stmt.where(Terminal.model == bindparam("model"))
    if shape.status:
        stmt = stmt.where(Terminal.status == bindparam("status"))
    if shape.ws == CloudState.NOT_ENABLED:
        stmt = stmt.where(
            or_(
                Terminal.cloud_state == CloudState.NOT_ENABLED,
                and_(Terminal.cloud_enabled.is_(False), Terminal.cloud_state == CloudState.UNKNOWN),
            )
        )
    elif shape.ws == CloudState.UNKNOWN:
        stmt = stmt.where(Terminal.cloud_state == CloudState.UNKNOWN, Terminal.cloud_enabled.is_(True))
    elif shape.ws:
        stmt = stmt.where(Terminal.cloud_state == bindparam("ws"))
    if shape.q:
        pattern: BindParameter[str] = bindparam("pattern")
        conditions = [
            func.lower(Terminal.poiid).like(pattern, escape="\\"),
            func.lower(Terminal.serial).like(pattern, escape="\\"),
            func.lower(Terminal.label).like(pattern, escape="\\"),
        ]
        if shape.q_stores:
            conditions.append(Terminal.store_id.in_(bindparam("q_stores", expanding=True)))
        stmt = stmt.where(or_(*conditions))
    return stmt


@dataclass(frozen=True)
class _Shape:
    """Which filters a list has (not their values) and its order: what its statements are."""

    store: bool
    region: bool
    provider: bool
    model: bool
    status: bool
    ws: str  # not_enabled and unknown are conditions of their own; any other value, a parameter
    q: bool
    q_stores: bool
    sort: str
    dir: str

    @classmethod
    def of(cls, f: TerminalFilters, q_store_ids: Sequence[int]) -> _Shape:
        ws = f.ws if f.ws in (CloudState.NOT_ENABLED, CloudState.UNKNOWN) else "value" if f.ws else ""
        flags = (bool(f.store), bool(f.region), bool(f.provider), bool(f.model), bool(f.status))
        return cls(*flags, ws, bool(f.q), bool(q_store_ids), f.sort, f.dir)


def _filter_params(f: TerminalFilters, q_store_ids: Sequence[int]) -> dict[str, Any]:
    values = {"store": f.store, "region": f.region, "provider": f.provider, "model": f.model}
    params: dict[str, Any] = {k: v for k, v in values.items() if v}
    if f.status:
        params["status"] = f.status
    if f.ws and f.ws not in (CloudState.NOT_ENABLED, CloudState.UNKNOWN):
        params["ws"] = f.ws
    if f.q:
        params["pattern"] = _like(f.q)
    if q_store_ids:
        params["q_stores"] = list(q_store_ids)
    return params


@dataclass(frozen=True)
class _ListStatements:
    count: Select
    bare_count: Select  # the not monitored among them
    page: Select  # ordered; parameters limit and offset (searching: with the total, a window)
    groups: tuple[Select, Select]  # the worst-first list's two groups (_status_groups), ordered


@lru_cache(maxsize=256)
def _list_statements(shape: _Shape) -> _ListStatements:
    base = select(*_TERMINAL_COLUMNS).join(Store, Store.id == Terminal.store_id)
    count = _terminal_filters(select(func.count()).select_from(Terminal), shape)
    columns = SORTS[shape.sort]
    order = [c.desc() if shape.dir == "desc" else c.asc() for c in columns]
    if shape.q and shape.sort == "status" and not shape.status:
        # The whole table is read anyway: not monitored last by expression.
        none_last = case((Terminal.status == State.NONE, 1), else_=0)
        order = [none_last.desc() if shape.dir == "desc" else none_last.asc(), *order]
    if shape.q:  # a substring search reads the whole table once: count in the same pass
        base = base.add_columns(func.count().over().label("total"))
    ordered = _terminal_filters(base, shape).order_by(*order)
    monitored, bare = Terminal.status != State.NONE, Terminal.status == State.NONE
    first, second = (monitored, bare) if shape.dir != "desc" else (bare, monitored)
    return _ListStatements(
        count,
        count.where(bare),
        _paged(ordered),
        (_paged(ordered.where(first)), _paged(ordered.where(second))),
    )


def _paged(stmt: Select) -> Select:
    return stmt.limit(bindparam("limit")).offset(bindparam("offset"))


async def exact_terminal(session: AsyncSession, q: str) -> str | None:
    """The POIID of the one terminal whose POIID (any case) or serial is exactly `q`; None when
    none or several match (the list then shows them). Index lookups: poiid unique, serial."""
    q = normalise_query(q)
    if not q:
        return None
    found = await session.scalar(select(Terminal.poiid).where(Terminal.poiid == q))
    if found is not None:
        return found
    rows = list(
        await session.scalars(
            select(Terminal.poiid).where(or_(Terminal.serial == q, Terminal.poiid == q.upper())).limit(2)
        )
    )
    if len(rows) == 1:
        return rows[0]
    if not rows:  # a POIID typed in another case ("a920-611161980"): one more lookup, bounded
        rows = list(
            await session.scalars(
                select(Terminal.poiid).where(func.lower(Terminal.poiid) == q.lower()).limit(2)
            )
        )
    return rows[0] if len(rows) == 1 else None


async def _stores_matching(session: AsyncSession, q: str) -> list[int]:
    """Stores whose code contains the search text (the store code column of the search)."""
    if not q:
        return []
    rows = await session.scalars(
        select(Store.id).where(func.lower(Store.code).like(_like(q), escape="\\")).limit(200)
    )
    return list(rows)


async def terminal_page(
    session: AsyncSession, f: TerminalFilters, now: datetime | None = None
) -> tuple[list[TerminalRow], int]:
    q_stores = await _stores_matching(session, f.q)
    statements = _list_statements(_Shape.of(f, q_stores))
    params = _filter_params(f, q_stores)
    if f.q:
        page = {**params, "limit": f.per, "offset": (f.page - 1) * f.per}
        result = (await session.execute(statements.page, page)).all()
        total = result[0].total if result else (await session.scalar(statements.count, params) or 0)
        pages = max(1, -(-total // f.per))
        if f.page > pages:
            f.page = pages
            page["offset"] = (f.page - 1) * f.per
            result = (await session.execute(statements.page, page)).all()
        rows = [TerminalRow(**{k: v for k, v in r._mapping.items() if k != "total"}) for r in result]
    else:
        bare: int | None = None  # the not monitored
        if not params and not f.ws:
            # The whole fleet: its counts are the overview's, read once a second whoever asks
            # (a count of 50,000 terminals per page was most of a list page's database time).
            summary = await fleet_summary(session)
            total, bare = summary.terminals, summary.counts.get(State.NONE, 0)
        else:
            total = await session.scalar(statements.count, params) or 0
        pages = max(1, -(-total // f.per))
        f.page = min(f.page, pages)
        if f.sort == "status" and not f.status:
            rows = await _status_groups(session, statements, params, f, total, bare)
        else:
            page = {**params, "limit": f.per, "offset": (f.page - 1) * f.per}
            rows = [TerminalRow(**r._mapping) for r in (await session.execute(statements.page, page)).all()]
    await decorate_terminals(session, rows, now=now)
    return rows, total


async def _status_groups(
    session: AsyncSession,
    statements: _ListStatements,
    params: dict[str, Any],
    f: TerminalFilters,
    total: int,
    bare_count: int | None,
) -> list[TerminalRow]:
    """One page of the worst-first list with the not-monitored terminals after all the others
    (before them when descending), each group read in index order on (status, status_since):
    an ORDER BY on an expression would sort the whole fleet for every page."""
    if bare_count is None:
        bare_count = await session.scalar(statements.bare_count, params) or 0  # an index range: few rows
    first_count = total - bare_count if f.dir != "desc" else bare_count
    offset = (f.page - 1) * f.per
    found: list[Any] = []
    if offset < first_count:
        page = {**params, "limit": f.per, "offset": offset}
        found += (await session.execute(statements.groups[0], page)).all()
    if len(found) < f.per:
        page = {**params, "limit": f.per - len(found), "offset": max(0, offset - first_count)}
        found += (await session.execute(statements.groups[1], page)).all()
    return [TerminalRow(**r._mapping) for r in found]


def _row_of(t: Terminal, store: Store) -> TerminalRow:
    """The list row of a terminal already read whole (its LAN state not set)."""
    return TerminalRow(
        t.id,
        t.poiid,
        t.model,
        t.serial,
        t.label,
        t.provider,
        t.integration,
        t.lan_host,
        t.lan_port,
        t.cloud_enabled,
        t.status,
        t.status_since,
        t.cloud_state,
        t.last_seen_at,
        store.code,
        store.name,
        store.region,
        created_at=t.created_at,
        store_id=t.store_id,
        tz=store.timezone,
    )


async def terminal_rows(
    session: AsyncSession, ids: list[int], *, uptime: bool = False
) -> dict[int, TerminalRow]:
    if not ids:
        return {}
    found = await session.execute(_terminals_by_id(dialect_of(session)), {"ids": ids})
    rows = [TerminalRow(**r._mapping) for r in found.all()]
    await decorate_terminals(session, rows, uptime=uptime)
    return {r.id: r for r in rows}


# Statements every page runs, built once (per dialect where a list is a parameter): building a
# statement and its cache key costs more CPU than running it.
@cache
def _terminals_by_id(dialect: str) -> Select[*tuple[Any, ...]]:
    return (
        select(*_TERMINAL_COLUMNS)
        .join(Store, Store.id == Terminal.store_id)
        .where(one_of(dialect, Terminal.id, "ids"))
    )


_STORE_TERMINALS = (
    select(*_TERMINAL_COLUMNS)
    .join(Store, Store.id == Terminal.store_id)
    .where(Terminal.store_id == bindparam("store_id"))
    .order_by(Terminal.status, Terminal.label, Terminal.poiid)
    .limit(bindparam("limit"))
)


@cache
def _lan_monitors(dialect: str) -> Select[*tuple[Any, ...]]:
    return select(Monitor.terminal_id, Monitor.kind, Monitor.state).where(
        one_of(dialect, Monitor.terminal_id, "ids")
    )


async def store_terminals(session: AsyncSession, store_id: int, limit: int = 500) -> list[TerminalRow]:
    found = await session.execute(_STORE_TERMINALS, {"store_id": store_id, "limit": limit})
    rows = [TerminalRow(**r._mapping) for r in found.all()]
    await decorate_terminals(session, rows)
    return rows


async def decorate_terminals(
    session: AsyncSession, rows: list[TerminalRow], *, uptime: bool = True, now: datetime | None = None
) -> None:
    """LAN state and 24 h uptime for the rows on screen: a few queries whatever the page size
    (the LAN state from the monitors the uptime reads, when it is asked for)."""
    if not rows:
        return
    by_terminal: Mapping[int, Sequence[Any]]
    if uptime:
        now = now or utcnow()
        infos = [_terminal_info(r) for r in rows]
        result, by_terminal = await uptime_and_monitors(
            session, infos, Period.last_hours(24, now), per_day=False, now=now
        )
        figures = {u.terminal.id: u.total for u in result}
        for r in rows:
            r.uptime_24h = figures.get(r.id)
    else:
        ids = [r.id for r in rows]
        monitors = (await session.execute(_lan_monitors(dialect_of(session)), {"ids": ids})).all()
        lan: dict[int, list[Any]] = {}
        for m in monitors:
            lan.setdefault(m.terminal_id, []).append(m)
        by_terminal = lan
    for r in rows:
        r.lan_state = worst([m.state for m in by_terminal.get(r.id, ()) if m.kind in LAN_KINDS])


async def uptime_24h(
    session: AsyncSession, rows: list, now: datetime | None = None, hours: float = 24
) -> dict[int, Figures]:
    """Exact uptime over the last `hours` from the history module (the same figures as the
    History page and the exports): own and store-network monitors, unknown not counted; with
    how much of the period they rest on."""
    now = now or utcnow()
    infos = [_terminal_info(r) for r in rows]
    result = await uptime_for_terminals(session, infos, Period.last_hours(hours, now), per_day=False, now=now)
    return {u.terminal.id: u.total for u in result}


def _terminal_info(r: TerminalRow) -> TerminalInfo:
    return TerminalInfo(
        r.id, r.poiid, r.label, r.store_id, r.store_code, r.store_name, r.region, r.tz, r.created_at
    )


# --- timelines: exact intervals from state changes (app.history.uptime) ---------------------


@dataclass
class Segment:
    start: datetime
    end: datetime
    state: str

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()


# --- detail pages ----------------------------------------------------------------------------


async def missing_provider_account(session: AsyncSession) -> bool:
    """Cloud terminals of a provider with an API (Adyen, Stripe) but no provider account at all:
    their Websocket column can only say unknown until an account is added."""
    from app.providers.models import ProviderAccount

    async def load() -> bool:
        if await session.scalar(select(ProviderAccount.id).limit(1)) is not None:
            return False
        needs = await session.scalar(
            select(Terminal.id)
            .where(Terminal.cloud_enabled.is_(True), Terminal.provider.in_(("adyen", "stripe")))
            .limit(1)
        )
        return needs is not None

    return await _cached(("no_account", id(session.bind)), load, LIVE_CACHE_TTL_S * 30)


async def any_store(session: AsyncSession) -> bool:
    return await session.scalar(select(Store.id).limit(1)) is not None


_STORE_BY_CODE = select(Store).where(Store.code == bindparam("code"))


async def store_by_code(session: AsyncSession, code: str) -> Store | None:
    return await session.scalar(_STORE_BY_CODE, {"code": code})


async def store_agent(session: AsyncSession, store: Store) -> Agent | None:
    """The store agent that runs this store's network and LAN checks; None: they run centrally."""
    if store.agent_id is None:
        return None
    return await session.get(Agent, store.agent_id)


NETWORK_LIMIT = 200  # a store's network checks shown (a profile has a handful)


# Table columns, not the mapped classes' attributes: a statement of them runs without the ORM's
# result set-up (a fifth of a small read's CPU); the rows are the same.
_MON, _SC, _CR, _EV = (m.__table__.c for m in (Monitor, StateChange, CheckResult, TerminalEvent))

# Plain rows of the columns the store page's network checks show, not ORM objects.
_NETWORK_MONITORS = (
    select(
        _MON.id,
        _MON.kind,
        _MON.target,
        _MON.state,
        _MON.state_since,
        _MON.last_latency_ms,
        _MON.last_checked_at,
        _MON.last_diagnosis,
        _MON.last_detail,
    )
    .where(_MON.store_id == bindparam("store_id"), _MON.terminal_id.is_(None))
    .order_by(_MON.target, _MON.kind)
    .limit(NETWORK_LIMIT)
)


async def store_network_monitors(session: AsyncSession, store_id: int) -> list[Any]:
    return list(await session.execute(_NETWORK_MONITORS, {"store_id": store_id}))


LATENCY_BUCKET_S = 900  # the latency chart's buckets: clock quarter hours


@dataclass
class ProviderAccountRef:
    """The provider account a terminal's cloud state is polled with: its own, else the first
    account of its provider (as the poller picks it, app.monitoring.cloud.account_for)."""

    id: int
    name: str
    environment: str
    own: bool  # linked to the terminal; False: the provider's default account


@cache
def _account_queries(account: Any) -> tuple[Select[Any], Select[Any]]:
    """A terminal's own provider account, and its provider's first (built once)."""
    cols = select(account.id, account.name, account.environment)
    return (
        cols.where(account.id == bindparam("id")),
        cols.where(account.kind == bindparam("kind")).order_by(account.id).limit(1),
    )


async def provider_account_of(session: AsyncSession, terminal: Terminal) -> ProviderAccountRef | None:
    from app.providers.models import ProviderAccount

    own, default = _account_queries(ProviderAccount)
    if terminal.provider_account_id is not None:
        row = (await session.execute(own, {"id": terminal.provider_account_id})).first()
        if row is not None:
            return ProviderAccountRef(row.id, row.name, row.environment, own=True)
    row = (await session.execute(default, {"kind": terminal.provider})).first()
    return ProviderAccountRef(row.id, row.name, row.environment, own=False) if row is not None else None


# The detail page's reads, built once.
_DETAIL_TERMINAL = (
    select(Terminal, Store)
    .join(Store, Store.id == Terminal.store_id)
    .where(Terminal.poiid == bindparam("poiid"))
)
_NETWORK_FIRST = _MON.terminal_id.is_(None)
# Its own monitors (by kind) and its store network's (by target, as the store page lists them).
# Plain rows, not ORM objects: the page reads these columns and nothing else.
_DETAIL_MONITORS = (
    select(
        _MON.id,
        _MON.terminal_id,
        _MON.kind,
        _MON.target,
        _MON.state,
        _MON.state_since,
        _MON.interval_s,
        _MON.last_checked_at,
        _MON.last_diagnosis,
        _MON.last_detail,
    )
    .where(
        or_(
            _MON.terminal_id == bindparam("terminal_id"),
            _NETWORK_FIRST & (_MON.store_id == bindparam("store_id")),
        )
    )
    .order_by(_NETWORK_FIRST, case((_NETWORK_FIRST, _MON.target)), _MON.kind, _MON.id)
)
_DETAIL_EVENTS = (
    select(_EV.at, _EV.kind, _EV.detail, _EV.source)
    .where(_EV.terminal_id == bindparam("terminal_id"))
    .order_by(_EV.at.desc())
    .limit(20)
)
_DETAIL_CHANGES = (
    select(
        _SC.at,
        _SC.monitor_id,
        _SC.from_state,
        _SC.to_state,
        _SC.diagnosis,
    )
    .where(_SC.monitor_id.in_(bindparam("ids", expanding=True)), _SC.at >= bindparam("since"))
    .order_by(_SC.at.desc())
    .limit(20)
)
_DETAIL_CHECKS = (
    select(
        _CR.checked_at,
        _CR.monitor_id,
        _CR.outcome,
        _CR.latency_ms,
        _CR.diagnosis,
        _CR.manual,
    )
    .where(_CR.monitor_id.in_(bindparam("ids", expanding=True)))
    .order_by(_CR.checked_at.desc())
    .limit(20)
)


@dataclass
class TerminalDetail:
    terminal: Terminal
    store: Store
    monitors: list[Any]  # _DETAIL_MONITORS's columns
    network: list[Any]
    events: list[Any]  # _DETAIL_EVENTS's
    changes: list[Any]  # _DETAIL_CHANGES's
    checks: list[Any]  # _DETAIL_CHECKS's and FoldedResult
    timeline_24h: list[Segment]
    timeline_7d: list[Segment]
    uptime_24h: Figures | None  # with how much of the period was monitored
    uptime_7d: Figures | None
    latency: list[tuple[datetime, float]]  # per bucket start, for the chart
    latency_label: str
    monitor_names: dict[int, str]
    has_provider_account: bool
    row: TerminalRow | None = None
    provider_account: ProviderAccountRef | None = None  # the account its cloud state is polled with
    latency_bucket_s: int = LATENCY_BUCKET_S

    @property
    def not_monitored(self) -> bool:
        """Nothing of its own is checked: no cloud connection, no LAN address."""
        return not self.monitors

    @property
    def store_network_blamed(self) -> bool:
        """Down because its store's network is: a network check is down, none of its own."""
        return self.network_state == State.DOWN and all(m.state != State.DOWN for m in self.monitors)

    @property
    def network_down(self) -> list[Any]:
        """Its store's failing network checks, the one that explains the others first."""
        down = [m for m in self.network if m.state == State.DOWN]
        return sorted(down, key=lambda m: (network_rank(m.kind, m.last_diagnosis), m.target, m.kind))

    @property
    def lan_state(self) -> State:
        return worst([m.state for m in self.monitors if m.kind in LAN_KINDS])

    @property
    def network_state(self) -> State:
        """The worst of the store's network checks (none without any)."""
        return worst([m.state for m in self.network])


async def terminal_detail(
    session: AsyncSession, poiid: str, now: datetime | None = None
) -> TerminalDetail | None:
    now = now or utcnow()
    found = (await session.execute(_DETAIL_TERMINAL, {"poiid": normalise_query(poiid)})).first()
    if found is None:
        return None
    terminal, store = found
    both = await session.execute(_DETAIL_MONITORS, {"terminal_id": terminal.id, "store_id": store.id})
    monitors: list[Any] = []
    network: list[Any] = []
    for m in both:
        (monitors if m.terminal_id is not None else network).append(m)
    network = network[:NETWORK_LIMIT]
    events = list(await session.execute(_DETAIL_EVENTS, {"terminal_id": terminal.id}))
    week = now - timedelta(days=7)
    # Its own monitors' changes and its store network's (they take it down too).
    watched = [m.id for m in monitors] + [m.id for m in network]
    recent_changes = (
        list(await session.execute(_DETAIL_CHANGES, {"ids": watched, "since": week})) if watched else []
    )
    monitor_ids = [m.id for m in monitors]
    checks: list[Any] = []
    days: Days = {}
    if monitor_ids:
        checks = list(await session.execute(_DETAIL_CHECKS, {"ids": monitor_ids}))
        # Results that changed nothing are folded, not rows: their newest are kept as they were.
        # Their days are read once, for these and for the latency chart's 24 hours.
        today = now.astimezone(UTC).date()
        first = min(
            today - timedelta(days=RECENT_DAYS - 1), (now - timedelta(hours=24)).astimezone(UTC).date()
        )
        days = await plain_days(session, monitor_ids, first, today)
        checks += await recent_folded(session, monitor_ids, now, days=days)
        checks = sorted(checks, key=lambda c: c.checked_at, reverse=True)[:20]

    row = _row_of(terminal, store)
    row.lan_state = worst([m.state for m in monitors if m.kind in LAN_KINDS])
    info = _terminal_info(row)
    (day, up24), (seven_days, up7d) = await terminal_history(
        session,
        info,
        [Period.last_hours(24, now).window(info.tz), Period.last_hours(24 * 7, now).window(info.tz)],
    )
    t24, t7 = [Segment(*seg) for seg in day], [Segment(*seg) for seg in seven_days]
    latency, label, bucket_s = await _latency(session, monitors, now, days)
    # The page names its provider account only for a terminal with a cloud side.
    cloud_side = terminal.cloud_enabled or terminal.integration != "local"
    account = await provider_account_of(session, terminal) if cloud_side else None
    has_account = True
    if (
        terminal.integration in ("cloud", "both")
        and terminal.cloud_enabled
        and terminal.provider in ("adyen", "stripe")
    ):
        has_account = account is not None
    names = {m.id: f"{m.kind} {m.target}" for m in monitors}
    names |= {m.id: f"store network: {m.kind} {m.target}" for m in network}
    return TerminalDetail(
        terminal,
        store,
        monitors,
        network,
        events,
        recent_changes,
        checks,
        t24,
        t7,
        up24,
        up7d,
        latency,
        label,
        names,
        has_account,
        row,
        account,
        bucket_s,
    )


async def _latency(
    session: AsyncSession, monitors: list[Any], now: datetime, days: Days
) -> tuple[list[tuple[datetime, float]], str, int]:
    """Latency of the terminal's main reachability monitor over 24 h in 15-minute buckets on
    the clock's quarter hours, falling back to hourly buckets over 7 days. Returns the points
    (bucket start, mean ms), the label and the bucket size. `days`: its folded days read
    already, covering the 24 hours."""
    preferred = [m for m in monitors if m.kind in LAN_KINDS] or [
        m for m in monitors if m.kind == MonitorKind.CLOUD
    ]
    if not preferred:
        return [], "", LATENCY_BUCKET_S
    m = preferred[0]
    label = f"{m.kind} {m.target}"
    for span, size, read in ((timedelta(hours=24), LATENCY_BUCKET_S, days), (timedelta(days=7), 3600, None)):
        points = await _latency_points(session, m.id, now - span, now, size, read)
        if points:
            return points, label, size
    return [], label, LATENCY_BUCKET_S


_LATENCIES = (
    select(_CR.checked_at, _CR.latency_ms)
    .where(
        _CR.monitor_id == bindparam("monitor_id"),
        _CR.checked_at >= bindparam("start"),
        _CR.latency_ms.is_not(None),
    )
    .order_by(_CR.checked_at.desc())
    .limit(3000)
)


async def _latency_points(
    session: AsyncSession, monitor_id: int, start: datetime, now: datetime, size: int, days: Days | None
) -> list[tuple[datetime, float]]:
    """Mean latency per clock-aligned bucket of `size` seconds (each point at its bucket start),
    of the raw results, the kept ones and the folded plain successes (app.monitoring.compact:
    each 5-minute bucket counts as its number of latencies at its mean)."""
    rows = (await session.execute(_LATENCIES, {"monitor_id": monitor_id, "start": start})).all()
    raw = [(at, ms, 1) for at, ms in rows if ms is not None]
    raw += [
        (k.checked_at, k.latency_ms, 1)
        for k in await kept_results(session, [monitor_id], start, now, days)
        if k.latency_ms is not None
    ]
    plain = [
        (b.start, b.mean_ms, b.timed)
        for b in await plain_buckets(session, [monitor_id], start, now, days)
        if b.timed
    ]
    sums: dict[int, list[float]] = {}
    for at, ms, n in raw + plain:
        total = sums.setdefault(int(at.timestamp()) // size * size, [0.0, 0])
        total[0] += ms * n
        total[1] += n
    return [(datetime.fromtimestamp(k, UTC), v[0] / v[1]) for k, v in sorted(sums.items())]
