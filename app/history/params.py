"""What a history request names: a scope (fleet, region, store code, POIID) and a period.
Bad input raises `InvalidInput` naming the field it belongs to, with a message for people."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime, timedelta
from typing import NoReturn

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import utcnow
from app.errors import InvalidInput
from app.history.export import ROW_UNITS
from app.history.uptime import SCOPES, Period, ScopeKey
from app.inventory.models import Store, Terminal

PRESETS = {"24h": 24, "7d": 7 * 24, "30d": 30 * 24}
CALENDAR = ("this_month", "last_month", "last_week")  # whole local days, each store's own
MAX_DAYS = 400
DASHES = "\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe58\ufe63\uff0d"


def _date(value: str | None, field: str, what: str) -> date:
    value = (value or "").strip()
    if not value:
        raise InvalidInput({field: f"Enter the {what} date (YYYY-MM-DD)."})
    try:
        return date.fromisoformat(value) if len(value) == 10 else _bad(value)
    except ValueError:
        raise InvalidInput(
            {field: f"{value[:40]!r} is not a date: use YYYY-MM-DD, e.g. 2025-03-01."}
        ) from None


def _bad(value: str) -> NoReturn:
    raise ValueError(value)


def parse_period(
    preset: str | None, since: str | None, until: str | None, now: datetime | None = None
) -> Period:
    """`preset` 24h/7d/30d (rolling, up to now) or custom dates `since`..`until` (inclusive,
    local to each store). Dates given without a preset mean custom."""
    now = now or utcnow()
    preset = (preset or "").strip() or ("custom" if (since or until) else "24h")
    if preset in PRESETS:
        return Period.last_hours(PRESETS[preset], now)
    if preset in CALENDAR:
        return calendar_period(preset, now.date())
    if preset != "custom":
        raise InvalidInput(
            {
                "period": f"Unknown period {preset[:20]!r}: choose last 24 h, 7 days, 30 days, "
                "this month, last month, last week or dates."
            }
        )
    first = _date(since, "from", "start")
    last = _date(until, "to", "end")
    if last < first:
        raise InvalidInput({"to": "The end date is before the start date."})
    if first > (now + timedelta(days=1)).date():
        raise InvalidInput({"from": "The start date is in the future."})
    if (last - first).days + 1 > MAX_DAYS:
        raise InvalidInput({"to": f"At most {MAX_DAYS} days at a time."})
    return Period.dates(first, last)


def calendar_period(preset: str, today: date) -> Period:
    """This month (to today: the days to come are not counted), last month, or last week
    (Monday to Sunday): whole dates, local to each store."""
    if preset == "this_month":
        return Period.dates(today.replace(day=1), today)
    if preset == "last_month":
        last = today.replace(day=1) - timedelta(days=1)
        return Period.dates(last.replace(day=1), last)
    monday = today - timedelta(days=today.weekday() + 7)
    return Period.dates(monday, monday + timedelta(days=6))


def normalise_id(value: str | None) -> str:
    value = (value or "").strip()
    for dash in DASHES:
        value = value.replace(dash, "-")
    return value[:200]


async def resolve_scope(
    session: AsyncSession, scope: str | None, ident: str | None
) -> tuple[str, ScopeKey, str]:
    """(scope, key for the queries, title) — key: terminal id, store id, region name, None."""
    scope = (scope or "fleet").strip()
    if scope not in SCOPES:
        raise InvalidInput(
            {"scope": f"Unknown scope {scope[:20]!r}: choose fleet, region, store or terminal."}
        )
    ident = normalise_id(ident)
    if scope == "fleet":
        return scope, None, "Fleet"
    if not ident:
        what = {"terminal": "a POIID", "store": "a store code", "region": "a region"}[scope]
        raise InvalidInput({"id": f"Enter {what}."})
    if scope == "terminal":
        row = (
            await session.execute(select(Terminal.id, Terminal.poiid).where(Terminal.poiid == ident))
        ).first()
        if row is None:
            row = (
                await session.execute(
                    select(Terminal.id, Terminal.poiid)
                    .where(func.upper(Terminal.poiid) == ident.upper())
                    .limit(1)
                )
            ).first()
        if row is None:
            raise InvalidInput({"id": f"No terminal with POIID {ident!r}."})
        return scope, row.id, row.poiid
    if scope == "store":
        store = (
            await session.execute(select(Store.id, Store.code, Store.name).where(Store.code == ident))
        ).first()
        if store is None:
            store = (
                await session.execute(
                    select(Store.id, Store.code, Store.name)
                    .where(func.upper(Store.code) == ident.upper())
                    .limit(1)
                )
            ).first()
        if store is None:
            raise InvalidInput({"id": f"No store with code {ident!r}."})
        return scope, store.id, f"{store.code} {store.name}"
    region = await session.scalar(
        select(Store.region).where(func.lower(Store.region) == ident.lower()).limit(1)
    )
    if region is None:
        raise InvalidInput({"id": f"No store is in region {ident!r}."})
    return scope, region, region


async def resolve(session: AsyncSession, form: Mapping[str, str]) -> tuple[str, ScopeKey, str, Period]:
    """(scope, key, title, period) of a History request (page, export or API); raises
    InvalidInput naming every bad field at once."""
    errors: dict[str, str] = {}
    period = scope = key = title = None
    try:
        period = parse_period(form["period"], form["from"], form["to"])
    except InvalidInput as exc:
        errors |= exc.errors
    try:
        scope, key, title = await resolve_scope(session, form["scope"], form["id"])
    except InvalidInput as exc:
        errors |= exc.errors
    if form.get("by") and form["by"] not in ROW_UNITS:
        errors["by"] = "Rows per terminal, store or region."
    if errors or period is None or scope is None or title is None:
        raise InvalidInput(errors)
    return scope, key, title, period
