"""History and export pages: /history and its CSV/XLSX downloads."""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator
from datetime import date
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response, StreamingResponse
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.background import BackgroundTask

from app.errors import InvalidInput
from app.history.daily import uptime_source
from app.history.export import ROW_UNITS, TABLES, csv_chunks, write_xlsx
from app.history.params import resolve
from app.history.uptime import Figures, Period, report
from app.inventory.models import Store
from app.vocabulary import State
from app.web.deps import SessionDep
from app.web.templating import render

router = APIRouter(include_in_schema=False)

PERIOD_WORDS = {
    "24h": "Last 24 hours",
    "7d": "Last 7 days",
    "30d": "Last 30 days",
    "this_month": "This month",
    "last_week": "Last week (Mon-Sun)",
    "last_month": "Last month",
    "custom": "Dates",
}
SCOPE_WORDS = {"fleet": "Fleet", "region": "Region", "store": "Store", "terminal": "Terminal"}
UNIT_WORDS = {"region": "Region", "store": "Store", "terminal": "Terminal"}
CHILD = {"fleet": "region", "region": "store", "store": "terminal", "terminal": "terminal"}


def _form(request: Request) -> dict[str, str]:
    q = request.query_params
    form = {k: (q.get(k) or "").strip()[:200] for k in ("scope", "id", "period", "from", "to", "by", "table")}
    form["scope"] = form["scope"] or "fleet"
    if not form["period"]:
        form["period"] = "custom" if (form["from"] or form["to"]) else "24h"
    form["by"] = form["by"] or CHILD.get(form["scope"], "terminal")  # rows: one level down by default
    return form


def day_bars(days: list[tuple[date, Figures]], w: int = 900, h: int = 120) -> dict[str, Any] | None:
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
            for state, secs in (
                (State.DOWN, f.down),
                (State.UNKNOWN, f.unknown),
                (State.PAUSED, f.paused),
                (State.UP, f.up),
            ):
                if secs <= 0:
                    continue
                hh = h * secs / total
                parts.append({"state": state, "y": round(y, 2), "h": round(hh, 2)})
                y += hh
        else:
            parts.append({"state": State.NONE, "y": 0, "h": h})
        bars.append({"x": x, "w": round(bw, 2), "parts": parts, "date": d, "f": f})
    return {"w": w, "h": h, "bars": bars, "label_every": max(1, n // 10)}


async def _form_context(
    session: AsyncSession, form: dict[str, str], errors: dict[str, str]
) -> dict[str, Any]:
    regions = list(
        await session.scalars(
            select(Store.region).where(Store.region != "").distinct().order_by(Store.region).limit(500)
        )
    )
    return {
        "form": form,
        "regions": regions,
        "errors": errors,
        "report": None,
        "bars": None,
        "periods": PERIOD_WORDS,
        "scopes": SCOPE_WORDS,
        "row_units": ROW_UNITS,
        "unit_words": UNIT_WORDS,
    }


@router.get("/history")
async def history_page(request: Request, session: SessionDep) -> Response:
    form = _form(request)
    try:
        scope, key, title, period = await resolve(session, form)
    except InvalidInput as exc:  # the form again, each message by its field
        ctx = await _form_context(session, form, exc.errors)
        return render(request, "history/page.html", ctx, block="history", status_code=422)
    ctx = await _form_context(session, form, {})
    rep = await report(
        session,
        scope,
        key,
        period,
        title=title,
        group_by=form["by"],
        compute=uptime_source(request.app.state.settings),
    )
    query = {
        k: v
        for k, v in form.items()
        if v and k != "table" and not (k in ("from", "to") and form["period"] != "custom")
    }
    groups = sorted(rep.groups, key=lambda g: (g[2].uptime if g[2].uptime is not None else 2.0, g[0]))
    ctx.update(
        report=rep,
        bars=day_bars(rep.days),
        groups=groups,
        query=urlencode(query),
        child_scope=rep.group_by,
        period_query=urlencode({k: v for k, v in query.items() if k in ("period", "from", "to")}),
    )
    return render(request, "history/page.html", ctx, block="history")


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


async def _export_error(
    request: Request, session: AsyncSession, form: dict[str, str], exc: InvalidInput
) -> Response:
    ctx = await _form_context(session, form, exc.errors)
    return render(request, "history/page.html", ctx, status_code=422)


@router.get("/history/export.csv")
async def export_csv(request: Request, session: SessionDep) -> Response:
    form = _form(request)
    try:
        scope, key, title, period = await resolve(session, form)
    except InvalidInput as exc:
        return await _export_error(request, session, form, exc)

    table = form["table"] or "summary"
    if table not in TABLES:
        return await _export_error(
            request, session, form, InvalidInput({"table": "The table is the summary or the days."})
        )

    async def body() -> AsyncIterator[bytes]:  # streams through the request's session
        async for text in csv_chunks(
            session,
            scope,
            key,
            period,
            by=form["by"],
            table=table,
            title=title,
            compute=uptime_source(request.app.state.settings),
        ):
            yield text.encode("utf-8")

    name = _filename(scope, title, period, "csv" if table == "summary" else "per-day.csv")
    return StreamingResponse(
        body(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@router.get("/history/export.xlsx")
async def export_xlsx(request: Request, session: SessionDep) -> Response:
    form = _form(request)
    try:
        scope, key, title, period = await resolve(session, form)
    except InvalidInput as exc:
        return await _export_error(request, session, form, exc)
    fd, path = tempfile.mkstemp(prefix="termpulse-export-", suffix=".xlsx")
    os.close(fd)
    try:
        await write_xlsx(
            session,
            path,
            scope,
            key,
            period,
            by=form["by"],
            title=title,
            compute=uptime_source(request.app.state.settings),
        )
    except BaseException:
        os.unlink(path)
        raise
    return FileResponse(
        path,
        filename=_filename(scope, title, period, "xlsx"),
        media_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        background=BackgroundTask(os.unlink, path),
    )
