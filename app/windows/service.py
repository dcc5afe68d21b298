"""When is a store quiet: maintenance windows and trading hours, batched over stores.

* `quiet_stores(session, store_ids, at)`: which of these stores are quiet, and why
  ("maintenance: <title>" or "outside trading hours"): alerts stay silent for them.
* `maintenance_of(session, store_ids, at)`: these stores' active windows (title, until when):
  the dashboard's wrench.
* `stores_in_maintenance(session, at)`: every store in a window now (the worker's job puts
  their monitors in maintenance); `stores_outside_trading_hours(session, at)` likewise.

Nothing here loads the fleet: windows active now are few, a region's or the fleet's weekly
window is evaluated once per time zone in use there (`SELECT DISTINCT timezone`), and only
the ids of the stores it covers are read.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import BindParameter, Select, bindparam, delete, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import dialect_of, in_chunks, one_of, select_where_in, utcnow
from app.errors import InvalidInput, NotFound
from app.inventory.models import Store
from app.windows.models import MaintenanceWindow, TradingHours
from app.windows.schemas import WindowIn
from app.windows.timecalc import (
    Span,
    clip,
    hhmm,
    is_trading,
    mask_days,
    next_weekly_start,
    parse_hhmm,
    safe_zone,
    weekday_mask,
    weekly_occurrence,
)

OUTSIDE_TRADING_HOURS = "outside trading hours"
MAINTENANCE_PREFIX = "maintenance: "


@dataclass(frozen=True, slots=True)
class Active:
    """A store's active maintenance window: which, and this occurrence's end (UTC)."""

    window_id: int
    title: str
    starts_at: datetime
    ends_at: datetime
    zone: str = "UTC"  # the store's, for showing `until`

    @property
    def reason(self) -> str:
        return MAINTENANCE_PREFIX + self.title

    @property
    def until(self) -> str:
        """The end as the store's local time of day, with the weekday when not within a day."""
        local = self.ends_at.astimezone(safe_zone(self.zone))
        soon = self.ends_at - utcnow() < timedelta(hours=20)
        return f"{local:%H:%M}" if soon else f"{local:%a %H:%M}"

    @property
    def tooltip(self) -> str:
        return f"In maintenance until {self.until}: {self.title}"


# --- evaluation ------------------------------------------------------------------------------


def span_at(w: MaintenanceWindow, at: datetime, tz: ZoneInfo) -> Span | None:
    """The span of window `w` covering `at` in a store of zone `tz`, or None."""
    if w.weekdays:
        occurrence = weekly_occurrence(at, tz, w.weekdays, w.local_start_min or 0, w.duration_min or 0)
        return clip(occurrence, w.starts_at, w.ends_at, at)
    if w.starts_at is not None and w.ends_at is not None and w.starts_at <= at < w.ends_at:
        return w.starts_at, w.ends_at
    return None


def next_span(w: MaintenanceWindow, after: datetime, tz: ZoneInfo) -> Span | None:
    """The next span of `w` starting at or after `after` (in zone `tz`), or None."""
    if w.weekdays:
        start_from = max(after, w.starts_at) if w.starts_at else after
        span = next_weekly_start(start_from, tz, w.weekdays, w.local_start_min or 0, w.duration_min or 0)
        if span is None or (w.ends_at is not None and span[0] >= w.ends_at):
            return None
        return span[0], min(span[1], w.ends_at) if w.ends_at else span[1]
    if w.starts_at is not None and w.ends_at is not None and w.starts_at >= after:
        return w.starts_at, w.ends_at
    return None


def _live(at: datetime | BindParameter[datetime]) -> Select[MaintenanceWindow]:
    """Windows that may be active at `at` (the series or the one-off span includes it)."""
    mw = MaintenanceWindow
    return select(mw).where(
        or_(mw.starts_at.is_(None), mw.starts_at <= at), or_(mw.ends_at.is_(None), mw.ends_at > at)
    )


def _better(current: Active | None, candidate: Active) -> bool:
    return current is None or candidate.ends_at > current.ends_at


@cache
def _maintenance_queries(
    dialect: str,
) -> tuple[
    Select[int, str, str], Select[MaintenanceWindow], Select[MaintenanceWindow], Select[MaintenanceWindow]
]:
    """maintenance_of's statements, built once per dialect (every store page and overview
    runs them). Three narrow queries on windows rather than one OR across array parameters:
    each uses its index."""
    mw, live = MaintenanceWindow, _live(bindparam("at"))
    return (
        select(Store.id, Store.region, Store.timezone).where(one_of(dialect, Store.id, "ids")),
        live.where(one_of(dialect, mw.store_id, "ids")),
        live.where(mw.scope == "region", one_of(dialect, mw.region, "regions")),
        live.where(mw.scope == "fleet"),
    )


async def maintenance_of(session: AsyncSession, store_ids: Iterable[int], at: datetime) -> dict[int, Active]:
    """These stores' active maintenance windows (the one ending last when several)."""
    ids = sorted(set(store_ids))
    if not ids:
        return {}
    dialect = dialect_of(session)
    stores_q, of_stores, of_regions, of_fleet = _maintenance_queries(dialect)
    stores: list[Any] = []
    windows: list[MaintenanceWindow] = []
    for chunk in in_chunks(dialect, ids):  # the alert engine asks for every store with an incident
        stores += (await session.execute(stores_q, {"ids": chunk})).all()
        windows += (await session.scalars(of_stores, {"ids": chunk, "at": at})).all()
    regions = sorted({s.region for s in stores})
    windows += (await session.scalars(of_regions, {"regions": regions, "at": at})).all()
    windows += (await session.scalars(of_fleet, {"at": at})).all()
    if not windows:
        return {}
    by_store: dict[int, list[MaintenanceWindow]] = defaultdict(list)
    by_region: dict[str, list[MaintenanceWindow]] = defaultdict(list)
    fleet: list[MaintenanceWindow] = []
    for w in windows:
        if w.scope == "store" and w.store_id is not None:
            by_store[w.store_id].append(w)
        elif w.scope == "region" and w.region is not None:
            by_region[w.region].append(w)
        elif w.scope == "fleet":
            fleet.append(w)
    found: dict[int, Active] = {}
    for s in stores:
        tz = safe_zone(s.timezone)
        for w in (*by_store.get(s.id, ()), *by_region.get(s.region, ()), *fleet):
            span = span_at(w, at, tz)
            if span is not None:
                candidate = Active(w.id, w.title, span[0], span[1], s.timezone or "UTC")
                if _better(found.get(s.id), candidate):
                    found[s.id] = candidate
    return found


async def stores_in_maintenance(session: AsyncSession, at: datetime) -> dict[int, Active]:
    """Every store in an active maintenance window at `at`: store id -> its window."""
    windows = (await session.scalars(_live(at))).all()
    found: dict[int, Active] = {}

    def add(store_ids: Iterable[int], candidate: Active) -> None:
        for sid in store_ids:
            if _better(found.get(sid), candidate):
                found[sid] = candidate

    store_windows = [w for w in windows if w.scope == "store" and w.store_id is not None]
    zones: dict[int, str] = {}
    if store_windows:
        query = select(Store.id, Store.timezone).where(Store.id.in_({w.store_id for w in store_windows}))
        zones = {r.id: r.timezone for r in await session.execute(query)}
    for w in store_windows:
        assert w.store_id is not None
        if w.store_id in zones and (span := span_at(w, at, safe_zone(zones[w.store_id]))) is not None:
            add([w.store_id], Active(w.id, w.title, span[0], span[1]))

    for w in windows:
        if w.scope not in ("region", "fleet"):
            continue
        in_scope = Store.region == w.region if w.scope == "region" else None
        tz_query = select(Store.timezone).distinct()
        if in_scope is not None:
            tz_query = tz_query.where(in_scope)
        spans = {name: span_at(w, at, safe_zone(name)) for name in (await session.scalars(tz_query)).all()}
        # Spans may differ by zone (a weekly window): one query per span, usually one.
        by_span: dict[Span, list[str]] = defaultdict(list)
        for name, span in spans.items():
            if span is not None:
                by_span[span].append(name)
        for span, names in by_span.items():
            ids_query = select(Store.id).where(Store.timezone.in_(names))
            if in_scope is not None:
                ids_query = ids_query.where(in_scope)
            add((await session.scalars(ids_query)).all(), Active(w.id, w.title, *span))
    return found


async def trading_hours_of(
    session: AsyncSession, store_ids: Iterable[int]
) -> dict[int, dict[int, tuple[int, int] | None]]:
    """Trading hours of these stores (only those that have them set), per weekday."""
    rows = await select_where_in(session, select(TradingHours), TradingHours.store_id, sorted(set(store_ids)))
    return _hours_by_store(rows)


def _hours_by_store(rows: Sequence[object]) -> dict[int, dict[int, tuple[int, int] | None]]:
    hours: dict[int, dict[int, tuple[int, int] | None]] = defaultdict(dict)
    for row in rows:
        r = getattr(row, "TradingHours", row)
        assert isinstance(r, TradingHours)
        open_close = None if r.opens_min is None or r.closes_min is None else (r.opens_min, r.closes_min)
        hours[r.store_id][r.weekday] = open_close
    return dict(hours)


async def outside_trading_hours(session: AsyncSession, store_ids: Iterable[int], at: datetime) -> set[int]:
    """Which of these stores are closed at `at` by their trading hours."""
    hours = await trading_hours_of(session, store_ids)
    if not hours:
        return set()
    rows = await select_where_in(session, select(Store.id, Store.timezone), Store.id, sorted(hours))
    zones = {r.id: r.timezone for r in rows}
    return {sid for sid, h in hours.items() if not is_trading(at, safe_zone(zones.get(sid)), h)}


async def stores_outside_trading_hours(session: AsyncSession, at: datetime) -> set[int]:
    """Every store closed at `at` by its trading hours (stores without hours always trade)."""
    store_ids = (await session.scalars(select(TradingHours.store_id).distinct())).all()
    return await outside_trading_hours(session, store_ids, at)


async def quiet_stores(session: AsyncSession, store_ids: Iterable[int], at: datetime) -> dict[int, str]:
    """Which of these stores are quiet at `at` (alerts say nothing), and why:
    "maintenance: <title>" or "outside trading hours"."""
    ids = sorted(set(store_ids))
    quiet = {sid: a.reason for sid, a in (await maintenance_of(session, ids, at)).items()}
    for sid in await outside_trading_hours(session, [i for i in ids if i not in quiet], at):
        quiet[sid] = OUTSIDE_TRADING_HOURS
    return quiet


# --- windows: create, list, end, delete ------------------------------------------------------


@dataclass(slots=True)
class WindowView:
    window: MaintenanceWindow
    store_code: str | None
    current: Span | None  # covering `now` (in some store of its scope)
    next: Span | None  # the next start after `now`
    zone: str  # the zone its local times are shown in

    @property
    def active(self) -> bool:
        return self.current is not None

    @property
    def weekdays(self) -> list[str]:
        return mask_days(self.window.weekdays or 0)

    @property
    def start_time(self) -> str | None:
        w = self.window
        return hhmm(w.local_start_min) if w.weekdays and w.local_start_min is not None else None

    def local(self, at: datetime | None) -> str:
        """A moment in the window's zone, as people read it: 'Sun 29 Nov 22:00 CET'."""
        if at is None:
            return "—"
        return at.astimezone(safe_zone(self.zone)).strftime("%a %d %b %Y %H:%M %Z")

    @property
    def target(self) -> str:
        w = self.window
        if w.scope == "store":
            return f"store {self.store_code}"
        return f"region {w.region}" if w.scope == "region" else "every store"

    @property
    def schedule(self) -> str:
        """When, in words: 'Sun, Mon 23:00 for 2 h (each store's local time)' or the span."""
        w = self.window
        if w.weekdays:
            length = w.duration_min or 0
            hours = (
                f"{length // 60} h" + (f" {length % 60} min" if length % 60 else "")
                if length >= 60
                else f"{length} min"
            )
            days = ", ".join(d.capitalize() for d in self.weekdays)
            where = "local time" if w.scope == "store" else "each store's local time"
            return f"{days} {self.start_time} for {hours} ({where})"
        return f"{self.local(w.starts_at)} to {self.local(w.ends_at)}"


async def _zones_in(session: AsyncSession, region: str | None) -> list[str]:
    query = select(Store.timezone).distinct().order_by(Store.timezone)
    if region is not None:
        query = query.where(Store.region == region)
    return list((await session.scalars(query)).all())


async def local_zone_name(session: AsyncSession, scope: str, store: Store | None, region: str | None) -> str:
    """The zone a window's local times are read in: the store's; a region's or the fleet's
    when all their stores share one; else UTC."""
    if scope == "store" and store is not None:
        return store.timezone or "UTC"
    zones = await _zones_in(session, region if scope == "region" else None)
    return zones[0] if len(zones) == 1 else "UTC"


def _to_utc(value: datetime, tz: ZoneInfo) -> datetime:
    if value.tzinfo is None:
        value = value.replace(tzinfo=tz, fold=0)
    return value.astimezone(UTC)


async def create_window(
    session: AsyncSession, data: WindowIn, *, created_by: str, now: datetime | None = None
) -> MaintenanceWindow:
    """Create a window (commits). Refusals name their field (InvalidInput, 422)."""
    now = now or utcnow()
    store: Store | None = None
    region: str | None = None
    if data.scope == "store":
        store = await session.scalar(select(Store).where(Store.code == data.store))
        if store is None:
            raise InvalidInput({"store": f"no store {data.store}"})
    elif data.scope == "region":
        region = data.region
        if not await session.scalar(select(func.count()).select_from(Store).where(Store.region == region)):
            raise InvalidInput({"region": f"no store is in region {region!r}"})
    tz = safe_zone(data.timezone or await local_zone_name(session, data.scope, store, region))
    starts_at = _to_utc(data.starts_at, tz) if data.starts_at else None
    ends_at = _to_utc(data.ends_at, tz) if data.ends_at else None
    if starts_at and ends_at and ends_at <= starts_at:
        raise InvalidInput({"ends_at": "must be after the start"})
    if ends_at is not None and ends_at <= now:
        raise InvalidInput({"ends_at": "is in the past: the window would never apply"})
    window = MaintenanceWindow(
        scope=data.scope,
        store_id=store.id if store else None,
        region=region,
        title=data.title,
        reason=data.reason,
        starts_at=starts_at,
        ends_at=ends_at,
        weekdays=weekday_mask(data.weekdays) if data.weekdays else None,
        local_start_min=parse_hhmm(data.start_time) if data.weekly and data.start_time else None,
        duration_min=data.duration_minutes if data.weekly else None,
        created_by=created_by,
        created_at=now,
    )
    session.add(window)
    await session.commit()
    return window


async def get_window(session: AsyncSession, window_id: int) -> MaintenanceWindow:
    window = await session.get(MaintenanceWindow, window_id)
    if window is None:
        raise NotFound("maintenance window", window_id)
    return window


async def end_window(
    session: AsyncSession, window_id: int, now: datetime | None = None
) -> MaintenanceWindow | None:
    """End a window now: a running one (or a weekly series) stops now, one not started yet
    is removed (returns None then). Its stores leave maintenance at the job's next run."""
    now = now or utcnow()
    window = await get_window(session, window_id)
    if window.starts_at is not None and window.starts_at > now:
        await session.delete(window)
        await session.commit()
        return None
    if window.ends_at is None or window.ends_at > now:
        window.ends_at = now
    await session.commit()
    return window


async def delete_window(session: AsyncSession, window_id: int) -> None:
    window = await get_window(session, window_id)
    await session.delete(window)
    await session.commit()


LISTS = ("current", "active", "upcoming", "ended", "all")


async def list_windows(
    session: AsyncSession,
    *,
    status: str = "current",
    store_code: str | None = None,
    region: str | None = None,
    now: datetime | None = None,
    limit: int = 200,
    window_id: int | None = None,
) -> list[WindowView]:
    """Windows with their current and next span: active first, then upcoming by start.

    status: current (active or upcoming), active, upcoming, ended, all."""
    if status not in LISTS:
        raise InvalidInput({"status": f"must be one of: {', '.join(LISTS)}"})
    now = now or utcnow()
    mw = MaintenanceWindow
    query = select(mw, Store.code, Store.timezone).outerjoin(Store, Store.id == mw.store_id)
    if status == "ended":
        query = query.where(mw.ends_at <= now).order_by(mw.ends_at.desc())
    elif status != "all":
        query = query.where(or_(mw.ends_at.is_(None), mw.ends_at > now))
    if store_code:
        store = await session.scalar(select(Store).where(Store.code == store_code))
        if store is None:
            raise InvalidInput({"store": f"no store {store_code}"})
        query = query.where(
            or_(
                mw.store_id == store.id,
                (mw.scope == "region") & (mw.region == store.region),
                mw.scope == "fleet",
            )
        )
    if region:
        query = query.where(or_(mw.region == region, mw.scope == "fleet"))
    if window_id is not None:
        query = query.where(mw.id == window_id)
    rows = (await session.execute(query.order_by(mw.id).limit(limit))).all()
    zone_cache: dict[str | None, list[str]] = {}
    views: list[WindowView] = []
    for w, code, store_zone in rows:
        if w.scope == "store":
            zones = [store_zone or "UTC"]
        else:
            key = w.region if w.scope == "region" else None
            if key not in zone_cache:
                zone_cache[key] = await _zones_in(session, key) or ["UTC"]
            zones = zone_cache[key]
        current = _earliest(span_at(w, now, safe_zone(z)) for z in zones)
        upcoming = _earliest(next_span(w, now, safe_zone(z)) for z in zones)
        views.append(WindowView(w, code, current, upcoming, zones[0] if len(zones) == 1 else "UTC"))
    if status == "active":
        views = [v for v in views if v.active]
    elif status == "upcoming":
        views = [v for v in views if not v.active]
    if status in ("current", "active", "upcoming"):
        far = now + timedelta(days=3650)
        views.sort(key=lambda v: (not v.active, (v.current or v.next or (far, far))[0]))
    return views


def _earliest(spans: Iterable[Span | None]) -> Span | None:
    found = [s for s in spans if s is not None]
    return min(found) if found else None


# --- trading hours --------------------------------------------------------------------------


async def store_by_code(session: AsyncSession, code: str) -> Store:
    store = await session.scalar(select(Store).where(Store.code == code))
    if store is None:
        raise NotFound("store", code)
    return store


async def set_trading_hours(
    session: AsyncSession, store: Store, hours: dict[int, tuple[int, int] | None] | None
) -> None:
    """Replace a store's trading hours (None: not set, always trading). Commits."""
    await session.execute(delete(TradingHours).where(TradingHours.store_id == store.id))
    if hours is not None:
        for weekday in range(7):
            day = hours.get(weekday)
            session.add(
                TradingHours(
                    store_id=store.id,
                    weekday=weekday,
                    opens_min=day[0] if day else None,
                    closes_min=day[1] if day else None,
                )
            )
    await session.commit()
