"""The Maintenance page (active and upcoming windows, a form to create one) and a store's
trading hours form. Everyone signed in reads; admins change (app.auth.rules)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.sessions import Identity, identify
from app.db import utcnow
from app.errors import InvalidInput
from app.inventory.queries import regions
from app.inventory.schemas import field_errors
from app.web.deps import SessionDep
from app.web.templating import is_htmx, render
from app.windows import service
from app.windows.auth import WRITERS, require_operator
from app.windows.models import SCOPES
from app.windows.schemas import DayHours, TradingHoursIn, WindowIn
from app.windows.timecalc import WEEKDAY_NAMES, WEEKDAYS, hhmm, is_trading, safe_zone

router = APIRouter(include_in_schema=False)
KINDS = ("one_off", "weekly")
_ONE_OFF_ONLY = ("starts_at", "ends_at")
_WEEKLY_ONLY = ("weekdays", "start_time", "duration_minutes")


def _go(request: Request, url: str) -> Response:
    if is_htmx(request):
        return Response(status_code=204, headers={"HX-Redirect": url})
    return RedirectResponse(url, status_code=303)


async def _may_write(request: Request) -> bool:
    identity: Identity | None = getattr(request.state, "identity", None) or await identify(request)
    return identity is not None and identity.role in WRITERS


async def _page(
    request: Request,
    session: AsyncSession,
    values: dict[str, Any],
    errors: dict[str, str],
    status_code: int = 200,
) -> Response:
    now = utcnow()
    context = {
        "windows": await service.list_windows(session, status="current", now=now),
        "ended": await service.list_windows(session, status="ended", now=now, limit=10),
        "values": values,
        "errors": errors,
        "scopes": SCOPES,
        "kinds": KINDS,
        "weekdays": list(zip(WEEKDAYS, WEEKDAY_NAMES, strict=True)),
        "regions": await regions(session),
        "may_write": await _may_write(request),
        "now": now,
    }
    return render(
        request, "windows/page.html", context, block="form" if errors else None, status_code=status_code
    )


@router.get("/maintenance")
async def maintenance_page(request: Request, session: SessionDep, store: str = "") -> Response:
    values = {"scope": "store", "kind": "one_off", "store": store, "weekdays": []}
    return await _page(request, session, values, {})


@router.post("/maintenance")
async def create_from_form(
    request: Request, session: SessionDep, who: Identity = Depends(require_operator)
) -> Response:
    form = await request.form()
    values: dict[str, Any] = {k: v for k, v in form.items() if isinstance(v, str)}
    values["weekdays"] = [str(d) for d in form.getlist("weekdays")]
    kind = values.get("kind") if values.get("kind") in KINDS else "one_off"
    values["kind"] = kind
    data = {k: v for k, v in values.items() if k != "kind"}
    for name in _WEEKLY_ONLY if kind == "one_off" else _ONE_OFF_ONLY:
        data.pop(name, None)
    if kind == "weekly" and not data["weekdays"]:
        return await _page(request, session, values, {"weekdays": "tick at least one weekday"}, 422)
    try:
        await service.create_window(session, WindowIn.model_validate(data), created_by=who.username)
    except ValidationError as exc:
        return await _page(request, session, values, field_errors(exc, data, WindowIn), 422)
    except InvalidInput as exc:
        return await _page(request, session, values, exc.errors, 422)
    return _go(request, "/maintenance")


@router.post("/maintenance/{window_id}/end", dependencies=[Depends(require_operator)])
async def end_from_page(request: Request, window_id: int, session: SessionDep) -> Response:
    await service.end_window(session, window_id)
    return _go(request, "/maintenance")


@router.post("/maintenance/{window_id}/delete", dependencies=[Depends(require_operator)])
async def delete_from_page(request: Request, window_id: int, session: SessionDep) -> Response:
    await service.delete_window(session, window_id)
    return _go(request, "/maintenance")


# --- a store's trading hours ------------------------------------------------------------------


async def _hours_page(
    request: Request,
    session: AsyncSession,
    code: str,
    values: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    status_code: int = 200,
) -> Response:
    store = await service.store_by_code(session, code)
    hours = (await service.trading_hours_of(session, [store.id])).get(store.id, {})
    if values is None:
        values = {}
        for i, name in enumerate(WEEKDAYS):
            day = hours.get(i)
            values[f"{name}_opens"] = hhmm(day[0]) if day else ""
            values[f"{name}_closes"] = hhmm(day[1]) if day else ""
    context = {
        "store": store,
        "hours_set": bool(hours),
        "trading_now": is_trading(utcnow(), safe_zone(store.timezone), hours),
        "values": values,
        "errors": errors or {},
        "weekdays": list(zip(WEEKDAYS, WEEKDAY_NAMES, strict=True)),
        "may_write": await _may_write(request),
    }
    return render(request, "windows/hours.html", context, block="form", status_code=status_code)


@router.get("/stores/{code}/trading-hours")
async def hours_page(request: Request, code: str, session: SessionDep) -> Response:
    return await _hours_page(request, session, code)


@router.post("/stores/{code}/trading-hours", dependencies=[Depends(require_operator)])
async def save_hours(request: Request, code: str, session: SessionDep) -> Response:
    """Blank opening and closing times: closed that day. "Clear" removes the hours."""
    form = await request.form()
    values = {k: str(v).strip() for k, v in form.items() if isinstance(v, str)}
    store = await service.store_by_code(session, code)
    if values.get("action") == "clear":
        await service.set_trading_hours(session, store, None)
        return _go(request, f"/stores/{code}/trading-hours")
    days: dict[str, DayHours | None] = {}
    errors: dict[str, str] = {}
    for name, word in zip(WEEKDAYS, WEEKDAY_NAMES, strict=True):
        opens, closes = values.get(f"{name}_opens", ""), values.get(f"{name}_closes", "")
        if not opens and not closes:
            days[name] = None
            continue
        if not opens or not closes:
            errors[name] = f"{word}: give both the opening and the closing time, or neither (closed)"
            continue
        try:
            days[name] = DayHours(opens=opens, closes=closes)
        except ValidationError as exc:
            errors[name] = f"{word}: " + exc.errors()[0]["msg"].removeprefix("Value error, ")
    if errors:
        return await _hours_page(request, session, code, values, errors, 422)
    await service.set_trading_hours(session, store, TradingHoursIn(days=days).minutes())
    return _go(request, f"/stores/{code}/trading-hours")
