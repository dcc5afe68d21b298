"""JSON API: /api/v1/maintenance-windows (so a ticketing system can schedule a refit) and a
store's trading hours (/api/v1/stores/{code}/trading-hours). Writes need an admin or operator."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.sessions import Identity
from app.db import utcnow
from app.errors import NotFound
from app.web.deps import RowId, SessionDep
from app.windows import service
from app.windows.auth import require_operator
from app.windows.schemas import DayHours, TradingHoursIn, WindowIn
from app.windows.timecalc import WEEKDAYS, hhmm, is_trading, safe_zone

router = APIRouter(tags=["maintenance"])
Operator = Annotated[Identity, Depends(require_operator)]


class WindowOut(BaseModel):
    id: int
    scope: str
    store: str | None
    region: str | None
    title: str
    reason: str
    kind: str  # one_off or weekly
    starts_at: datetime | None
    ends_at: datetime | None
    weekdays: list[str]
    start_time: str | None
    duration_minutes: int | None
    timezone: str  # the zone its local times are read in (weekly: each store's own)
    active: bool
    current_start: datetime | None
    current_end: datetime | None
    next_start: datetime | None
    next_end: datetime | None
    created_by: str
    created_at: datetime


class WindowList(BaseModel):
    items: list[WindowOut]


def window_out(v: service.WindowView) -> WindowOut:
    w = v.window
    return WindowOut(
        id=w.id,
        scope=w.scope,
        store=v.store_code,
        region=w.region,
        title=w.title,
        reason=w.reason,
        kind="weekly" if w.weekdays else "one_off",
        starts_at=w.starts_at,
        ends_at=w.ends_at,
        weekdays=v.weekdays,
        start_time=v.start_time,
        duration_minutes=w.duration_min,
        timezone=v.zone,
        active=v.active,
        current_start=v.current[0] if v.current else None,
        current_end=v.current[1] if v.current else None,
        next_start=v.next[0] if v.next else None,
        next_end=v.next[1] if v.next else None,
        created_by=w.created_by,
        created_at=w.created_at,
    )


async def _view(session: AsyncSession, window_id: int) -> WindowOut:
    for v in await service.list_windows(session, status="all", window_id=window_id):
        return window_out(v)
    raise NotFound("maintenance window", window_id)


@router.get("/maintenance-windows")
async def list_windows(
    session: SessionDep,
    status: str = Query("current", description="current (active or upcoming), active, upcoming, ended, all"),
    store: str | None = Query(None, description="windows that apply to this store (code)"),
    region: str | None = Query(None, description="windows of this region (and the fleet's)"),
    limit: int = Query(200, ge=1, le=1000),
) -> WindowList:
    views = await service.list_windows(session, status=status, store_code=store, region=region, limit=limit)
    return WindowList(items=[window_out(v) for v in views])


@router.post("/maintenance-windows", status_code=201)
async def create_window(data: WindowIn, session: SessionDep, who: Operator) -> WindowOut:
    window = await service.create_window(session, data, created_by=who.username)
    return await _view(session, window.id)


@router.get("/maintenance-windows/{window_id}")
async def get_window(window_id: RowId, session: SessionDep) -> WindowOut:
    return await _view(session, window_id)


@router.post(
    "/maintenance-windows/{window_id}/end",
    responses={
        200: {"model": WindowOut, "description": "The window as it is now: ended, or its series stopped"},
        204: {"description": "The window had not started: it is removed"},
    },
)
async def end_window(window_id: RowId, session: SessionDep, who: Operator) -> Response:
    """End it now: a running window (or a weekly series) stops now; one not started yet is
    removed (204). The stores leave maintenance at the worker's next run (seconds)."""
    window = await service.end_window(session, window_id)
    if window is None:
        return Response(status_code=204)
    out = await _view(session, window.id)
    return Response(out.model_dump_json(), media_type="application/json")


@router.delete("/maintenance-windows/{window_id}", status_code=204)
async def delete_window(window_id: RowId, session: SessionDep, who: Operator) -> Response:
    await service.delete_window(session, window_id)
    return Response(status_code=204)


class TradingHoursOut(BaseModel):
    store: str
    timezone: str
    set: bool  # False: no trading hours, always trading
    days: dict[str, DayHours | None]  # per weekday, null: closed all day
    trading_now: bool


async def _hours_out(session: AsyncSession, code: str) -> TradingHoursOut:
    store = await service.store_by_code(session, code)
    hours = (await service.trading_hours_of(session, [store.id])).get(store.id, {})
    days: dict[str, DayHours | None] = {}
    for i, name in enumerate(WEEKDAYS):
        day = hours.get(i)
        days[name] = DayHours(opens=hhmm(day[0]), closes=hhmm(day[1])) if day else None
    return TradingHoursOut(
        store=store.code,
        timezone=store.timezone,
        set=bool(hours),
        days=days,
        trading_now=is_trading(utcnow(), safe_zone(store.timezone), hours),
    )


@router.get("/stores/{code}/trading-hours")
async def get_trading_hours(code: str, session: SessionDep) -> TradingHoursOut:
    return await _hours_out(session, code)


@router.put("/stores/{code}/trading-hours")
async def put_trading_hours(
    code: str, data: TradingHoursIn, session: SessionDep, who: Operator
) -> TradingHoursOut:
    """Replace the store's trading hours: {"days": {"mon": {"opens": "09:00", "closes": "18:00"},
    ...}}; a weekday left out or null is closed; {"days": null} clears them (always trading)."""
    store = await service.store_by_code(session, code)
    await service.set_trading_hours(session, store, data.minutes())
    return await _hours_out(session, code)
