"""History and export: the /history page, its CSV/XLSX downloads and /api/v1/uptime."""

from __future__ import annotations

import os
import tempfile
from datetime import date
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from sqlalchemy import select
from starlette.background import BackgroundTask

from app.history.export import ROW_UNITS, csv_chunks, write_xlsx
from app.history.params import InputError, parse_period, resolve_scope
from app.history.uptime import Figures, Period, report
from app.inventory.models import Store
from app.web.templating import render, templates

router = APIRouter()

PERIOD_WORDS = {"24h": "Last 24 hours", "7d": "Last 7 days", "30d": "Last 30 days", "custom": "Dates"}
SCOPE_WORDS = {"fleet": "Fleet", "region": "Region", "store": "Store", "terminal": "Terminal"}


def duration(seconds: float | None) -> str:
    """'0 s', '45 s', '12 min', '3 h 05 min', '2 d 4 h'."""
    if seconds is None:
        return "—"
    s = int(round(seconds))
    days, rest = divmod(s, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min" if not secs else f"{minutes} min {secs:02d} s"
    return f"{secs} s"


def pct(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.3f} %" if value < 100 else "100 %"


templates.env.filters["duration"] = duration
templates.env.filters["pct"] = pct


def _form(request: Request) -> dict[str, str]:
    q = request.query_params
    form = {k: (q.get(k) or "").strip()[:200] for k in ("scope", "id", "period", "from", "to", "by")}
    form["scope"] = form["scope"] or "fleet"
    if not form["period"]:
        form["period"] = "custom" if (form["from"] or form["to"]) else "24h"
    form["by"] = form["by"] or "terminal"
    return form


async def _resolve(session, form: dict[str, str]):
    """(scope, key, title, period) or a dict of field -> message (every field checked)."""
    errors, scope = {}, None
    try:
        period = parse_period(form["period"], form["from"], form["to"])
    except InputError as exc:
        errors[exc.field] = exc.message
        period = None
    try:
        scope, key, title = await resolve_scope(session, form["scope"], form["id"])
    except InputError as exc:
        errors[exc.field] = exc.message
    if form.get("by") and form["by"] not in ROW_UNITS:
        errors["by"] = "Rows per terminal, store or region."
    if errors:
        return errors
    return scope, key, title, period


def day_bars(days: list[tuple[date, Figures]], w: int = 900, h: int = 120) -> dict | None:
    """A stacked bar per day (up, down, unknown, paused as shares of the observed time)."""
    if not days:
        return None
    n = len(days)
    gap = 2 if n < 60 else 0
    bw = max((w - gap * (n - 1)) / n, 1)
    bars = []
    for i, (d, f) in enumerate(days):
        total = f.observed
        x, y, parts = round(i * (bw + gap), 2), 0.0, []
        if total > 0:
            for state, secs in (("down", f.down), ("unknown", f.unknown), ("paused", f.paused), ("up", f.up)):
                if secs <= 0:
                    continue
                hh = h * secs / total
                parts.append({"state": state, "y": round(y, 2), "h": round(hh, 2)})
                y += hh
        else:
            parts.append({"state": "none", "y": 0, "h": h})
        bars.append({"x": x, "w": round(bw, 2), "parts": parts, "date": d, "f": f})
    return {"w": w, "h": h, "bars": bars, "label_every": max(1, n // 10)}


@router.get("/history", include_in_schema=False)
async def history_page(request: Request):
    form = _form(request)
    async with request.app.state.db.sessionmaker() as session:
        regions = list(
            await session.scalars(
                select(Store.region).where(Store.region != "").distinct().order_by(Store.region).limit(500)
            )
        )
        resolved = await _resolve(session, form)
        ctx = {
            "form": form,
            "regions": regions,
            "errors": {},
            "report": None,
            "bars": None,
            "periods": PERIOD_WORDS,
            "scopes": SCOPE_WORDS,
            "row_units": ROW_UNITS,
        }
        if isinstance(resolved, dict):
            ctx["errors"] = resolved
            return render(request, "history/page.html", ctx, block="history", status_code=422)
        scope, key, title, period = resolved
        rep = await report(session, scope, key, period, title=title)
    query = {k: v for k, v in form.items() if v and not (k in ("from", "to") and form["period"] != "custom")}
    groups = sorted(rep.groups, key=lambda g: (g[2].uptime if g[2].uptime is not None else 2.0, g[0]))
    ctx.update(
        report=rep,
        bars=day_bars(rep.days),
        groups=groups,
        query=urlencode(query),
        child_scope={"fleet": "region", "region": "store", "store": "terminal"}.get(scope),
        period_query=urlencode({k: query[k] for k in ("period", "from", "to") if k in query}),
    )
    return render(request, "history/page.html", ctx, block="history")


async def _export_inputs(request: Request):
    form = _form(request)
    async with request.app.state.db.sessionmaker() as session:
        resolved = await _resolve(session, form)
    return form, resolved


def _filename(scope: str, title: str, period: Period, ext: str) -> str:
    what = (
        "fleet" if scope == "fleet" else "".join(c if c.isalnum() or c in "-_" else "_" for c in title)[:60]
    )
    when = (
        f"{period.first}_{period.last}"
        if period.is_dates
        else f"{period.start:%Y%m%dT%H%M}_{period.end:%Y%m%dT%H%M}"
    )
    return f"uptime_{what}_{when}.{ext}"


async def _export_error(request: Request, form: dict, errors: dict):
    async with request.app.state.db.sessionmaker() as session:
        regions = list(
            await session.scalars(
                select(Store.region).where(Store.region != "").distinct().order_by(Store.region).limit(500)
            )
        )
    ctx = {
        "form": form,
        "regions": regions,
        "errors": errors,
        "report": None,
        "bars": None,
        "periods": PERIOD_WORDS,
        "scopes": SCOPE_WORDS,
        "row_units": ROW_UNITS,
    }
    return render(request, "history/page.html", ctx, status_code=422)


@router.get("/history/export.csv", include_in_schema=False)
async def export_csv(request: Request):
    form, resolved = await _export_inputs(request)
    if isinstance(resolved, dict):
        return await _export_error(request, form, resolved)
    scope, key, title, period = resolved
    database = request.app.state.db

    async def body():
        async with database.sessionmaker() as session:
            async for text in csv_chunks(session, scope, key, period, by=form["by"], title=title):
                yield text.encode("utf-8")

    name = _filename(scope, title, period, "csv")
    return StreamingResponse(
        body(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@router.get("/history/export.xlsx", include_in_schema=False)
async def export_xlsx(request: Request):
    form, resolved = await _export_inputs(request)
    if isinstance(resolved, dict):
        return await _export_error(request, form, resolved)
    scope, key, title, period = resolved
    fd, path = tempfile.mkstemp(prefix="termpulse-export-", suffix=".xlsx")
    os.close(fd)
    try:
        async with request.app.state.db.sessionmaker() as session:
            await write_xlsx(session, path, scope, key, period, by=form["by"], title=title)
    except BaseException:
        os.unlink(path)
        raise
    return FileResponse(
        path,
        filename=_filename(scope, title, period, "xlsx"),
        media_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        background=BackgroundTask(os.unlink, path),
    )


@router.get("/api/v1/uptime", tags=["history"])
async def uptime_api(
    request: Request,
    scope: str = "fleet",
    id: str | None = None,
    period: str | None = None,
    from_: str | None = None,
    to: str | None = None,
):
    """Uptime of a terminal (POIID), store (code), region or the fleet: seconds up, down,
    unknown and paused/maintenance, uptime % = up / (up + down), outages and the longest,
    per local day, and one level of breakdown. `from`/`to` are inclusive dates (YYYY-MM-DD,
    each store's local days); or `period` = 24h, 7d, 30d. Bad input: 422 with the field."""
    q = request.query_params
    form = {
        "scope": scope,
        "id": id or "",
        "period": period or "",
        "from": q.get("from") or from_ or "",
        "to": to or "",
        "by": "",
    }
    if not form["period"]:
        form["period"] = "custom" if (form["from"] or form["to"]) else "24h"
    async with request.app.state.db.sessionmaker() as session:
        resolved = await _resolve(session, form)
        if isinstance(resolved, dict):
            return JSONResponse(
                {"detail": [{"field": f, "message": m} for f, m in resolved.items()]}, status_code=422
            )
        scope_, key, title, per = resolved
        rep = await report(session, scope_, key, per, title=title)
    return rep.as_dict()
