"""JSON API of the history: /api/v1/uptime."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel

from app.history.daily import uptime_source
from app.history.params import resolve
from app.history.uptime import report
from app.web.deps import SessionDep

router = APIRouter(tags=["history"])


class FiguresOut(BaseModel):
    up_s: float
    down_s: float
    unknown_s: float
    paused_s: float
    uptime_pct: float | None
    outages: int
    longest_outage_s: float
    terminals: int
    period_s: float  # the period so far, in terminal-seconds
    monitored_pct: float | None  # share of it known up or down: what uptime_pct rests on


class DayOut(FiguresOut):
    date: str


class GroupOut(FiguresOut):
    id: str
    label: str


class UptimeOut(BaseModel):
    scope: str
    id: str
    period: str
    total: FiguresOut
    days: list[DayOut]
    groups: list[GroupOut]


@router.get("/uptime")
async def uptime_api(
    request: Request,
    session: SessionDep,
    scope: str = "fleet",
    id: str | None = None,
    period: str | None = None,
    from_: str | None = None,
    to: str | None = None,
) -> UptimeOut:
    """Uptime of a terminal (POIID), store (code), region or the fleet: seconds up, down,
    unknown and paused/maintenance, uptime % = up / (up + down), how much of the period was
    monitored (known up or down), outages (above a terminal: store outages) and the longest,
    per local day, and one level of breakdown. `from`/`to` are inclusive dates (YYYY-MM-DD,
    each store's local days); or `period` = 24h, 7d, 30d, this_month, last_month, last_week.
    Bad input: 422 with the field."""
    form = {
        "scope": scope,
        "id": id or "",
        "period": period or "",
        "from": request.query_params.get("from") or from_ or "",
        "to": to or "",
        "by": "",
    }
    if not form["period"]:
        form["period"] = "custom" if (form["from"] or form["to"]) else "24h"
    scope_, key, title, per = await resolve(session, form)
    rep = await report(
        session, scope_, key, per, title=title, compute=uptime_source(request.app.state.settings)
    )
    return UptimeOut.model_validate(rep.as_dict())
