"""Dashboard pages: stores overview, store page, terminals list, terminal detail, the live
polls that keep them current, and the Check connection action."""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from markupsafe import Markup
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.alerts.queries import store_incidents
from app.checks.diagnoses import explain
from app.dashboard import checkview, queries
from app.db import utcnow
from app.errors import NotFound
from app.inventory.models import PROVIDERS, Terminal
from app.monitoring.agents import STORE_OFFLINE
from app.monitoring.manual import check_store_now, check_terminal_now
from app.web.deps import SessionDep
from app.web.errors import DB_ERRORS
from app.web.templating import is_htmx, render, render_around, render_block
from app.web.ui import clock_text

log = logging.getLogger(__name__)
router = APIRouter(include_in_schema=False)

STORES_PER_PAGE = 50
# strftime's %b (the C locale's, as Python leaves LC_TIME).
_MONTHS = ("", "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
LIVE_MAX_IDS = 500


def latency_chart(
    points: list[tuple[datetime, float]], bucket_s: int = 900, now: datetime | None = None, h: int = 140
) -> dict | None:
    """An inline SVG line of latency per bucket (x: the bucket's middle on a time axis from
    the first bucket's start to the last one's end or now). The SVG stretches to the page's
    width; its labels are HTML beside it, so they never scale with it. Each bucket's hover
    title says its real span: '03:00-03:15 UTC, 12 ms (mean)'."""
    if not points:
        return None
    w = 1000
    step = timedelta(seconds=bucket_s)
    now = now or utcnow()
    values = sorted(v for _, v in points)
    top = max(values[-1] * 1.1, 1.0)
    t0 = points[0][0]
    t1 = min(points[-1][0] + step, max(now, points[-1][0]))
    span = max((t1 - t0).total_seconds(), 1.0)

    def x(at: datetime) -> float:
        return round(w * min(max((at - t0).total_seconds() / span, 0.0), 1.0), 1)

    def y(v: float) -> float:
        return round(4 + (h - 8) * (1 - v / top), 1)

    dated = (t1 - t0) > timedelta(hours=20)  # the title's start with its day ('%d %b %H:%M')
    buckets = []
    for at, v in points:
        end = min(at + step, t1)
        mid = at + (end - at) / 2
        left = x(at)
        # Formatted by hand: strftime for 2 x 96 titles was a quarter of the chart's CPU.
        begins = f"{at.day:02d} {_MONTHS[at.month]} " if dated else ""
        buckets.append(
            {
                "x": left,
                "w": max(round(x(end) - left, 1), 0.5),
                "cx": x(mid),
                "cy": y(v),
                "title": f"{begins}{at.hour:02d}:{at.minute:02d}\u2013{end.hour:02d}:{end.minute:02d} UTC"
                f" · {v:.1f} ms (mean)",
            }
        )
    coords = " ".join(f"{b['cx']},{b['cy']}" for b in buckets)
    digits = 0 if top >= 10 else 1  # sub-10 ms loopback answers: 0, 0.6, 1.1 rather than 0, 1, 1
    # 0, half and the top: static/app.css places their labels (0 %, 50 %, 100 % of the height).
    ticks = [{"y": y(top * f), "label": f"{top * f:.{digits}f}"} for f in (0.0, 0.5, 1.0)]
    seconds = (t1 - t0).total_seconds()
    hours = seconds / 3600
    if hours >= 48:
        spans = f"{hours / 24:.0f} days"
    elif hours >= 1:
        spans = f"{hours:.0f} hours" if hours >= 2 else f"{seconds / 60:.0f} min"
    else:
        spans = f"{seconds / 60:.0f} min"
    return {
        "w": w,
        "h": h,
        "points": coords,
        "ticks": ticks,
        "buckets": buckets,
        "n": len(buckets),
        "median": f"{values[len(values) // 2]:.0f}",
        "max": f"{values[-1]:.0f}",
        "start": f"{t0:%d %b %H:%M} UTC",
        "end": f"{t1:%d %b %H:%M} UTC",
        "span": spans,
        "bucket_min": bucket_s // 60,
    }


def _ids(raw: str) -> list[tuple[int, str]]:
    """`12:sig,13:sig` from a live poll: the rows on screen and what the client shows."""
    out = []
    for part in (raw or "").split(",")[:LIVE_MAX_IDS]:
        ident, _, sig = part.partition(":")
        if ident.isdigit():
            out.append((int(ident), sig))
    return out


# --- stores overview -------------------------------------------------------------------------


def _overview_params(request: Request) -> tuple[str, str, int, str, bool]:
    p = request.query_params
    region = (p.get("region") or "").strip()[:100]
    q = queries.normalise_query(p.get("q"))
    try:
        page = max(1, min(int(p.get("page") or 1), 10**6))
    except ValueError:
        page = 1
    sort = p.get("sort") or "status"
    sort = sort if sort in queries.STORE_SORTS else "status"
    return region, q, page, sort, p.get("dir") == "desc"


def _qs(region: str, q: str, sort: str = "status", desc: bool = False) -> str:
    pairs = (
        ("region", region),
        ("q", q),
        ("sort", "" if sort == "status" else sort),
        ("dir", "desc" if desc else ""),
    )
    return urlencode({k: v for k, v in pairs if v})


@router.get("/")
async def overview(request: Request, session: SessionDep) -> Response:
    region, q, page, sort, desc = _overview_params(request)
    qs = _qs(region, q, sort, desc)

    async def results() -> Markup:
        summary = await queries.fleet_summary(session, region=region)
        stores, total = await queries.store_page(
            session, region=region, q=q, page=page, per_page=STORES_PER_PAGE, sort=sort, desc=desc
        )
        context = {
            "summary": summary,
            "stores": stores,
            "total": total,
            "page": page,
            "pages": max(1, -(-total // STORES_PER_PAGE)),
            "region": region,
            "q": q,
            "now": utcnow(),
            "no_account": await queries.missing_provider_account(session),
            "qs": qs,
            "base_qs": _qs(region, q),
            "sort": sort,
            "desc": desc,
            "strip_hours": queries.STRIP_HOURS,
        }
        return render_block(request, "dashboard/overview.html", "results", context)

    html = await queries.shared_view(_view_key(request, session, "overview", qs, page), results)
    shell = {} if is_htmx(request) else {"region": region, "q": q, "regions": await queries.regions(session)}
    response = render_around(request, "dashboard/overview.html", shell, block="results", html=html)
    if is_htmx(request):
        response.headers["HX-Push-Url"] = "/" + (f"?{qs}" if qs else "")
    return response


def _view_key(request: Request, session: AsyncSession, *parts: Any) -> tuple[Any, ...]:
    """What a shared render depends on besides the data: the page, its filters and the role
    (admins see links others do not); the database, for tests that run two."""
    identity = getattr(request.state, "identity", None)
    return (id(session.bind), identity.role if identity else "", *parts)


@router.get("/live/overview")
async def overview_live(request: Request, session: SessionDep) -> Response:
    """Changes since what the client shows: the summary bar, rows whose counts changed, or the
    page body when the worst-first order itself changed (a store went down)."""
    region, q, page, sort, desc = _overview_params(request)
    known = _ids(request.query_params.get("known", ""))
    summary = await queries.fleet_summary(session, region=region)
    stores, _ = await queries.store_page(
        session, region=region, q=q, page=page, per_page=STORES_PER_PAGE, sort=sort, desc=desc
    )
    order_changed = [s.id for s in stores] != [i for i, _ in known]
    sigs = dict(known)
    changed = stores if order_changed else [s for s in stores if sigs.get(s.id) != s.signature()]
    context = {
        "summary": summary,
        "stores": stores,
        "changed": changed,
        "order_changed": order_changed,
        "summary_changed": request.query_params.get("summary") != summary.signature(),
        "region": region,
        "q": q,
        "page": page,
        "now": utcnow(),
        "qs": _qs(region, q, sort, desc),
    }
    return render(request, "dashboard/overview_live.html", context)


# --- store page ------------------------------------------------------------------------------


@router.get("/stores/{code}")
async def store_page(request: Request, code: str, session: SessionDep) -> Response:
    store = await queries.store_by_code(session, code)
    if store is None:
        raise NotFound("store", code)
    row = (await queries.store_rows(session, [store.id]))[store.id]
    terminals = await queries.store_terminals(session, store.id)
    network = await queries.store_network_monitors(session, store.id)
    agent = await queries.store_agent(session, store)
    offline = None
    if row.store_offline:
        since = clock_text(row.silent_since) if row.silent_since else "an unknown time"
        offline = explain(STORE_OFFLINE, target=f"{store.code} {store.name}", since=since)
    context = {
        "store": store,
        "row": row,
        "terminals": terminals,
        "network": network,
        "agent": agent,
        "offline": offline,
        "now": utcnow(),
        "store_incidents": await store_incidents(session, store.id),
    }
    return render(request, "dashboard/store.html", context, block="results")


# --- terminals list --------------------------------------------------------------------------


@router.get("/terminals")
async def terminals(request: Request, session: SessionDep) -> Response:
    f = queries.TerminalFilters.from_params(request.query_params)
    if request.query_params.get("go") and f.q and not is_htmx(request):
        # The top bar's search: an exact POIID or serial opens that terminal directly.
        poiid = await queries.exact_terminal(session, f.q)
        if poiid is not None:
            return RedirectResponse(f"/terminals/{quote(poiid, safe='')}", status_code=303)
        store = await queries.store_by_code(session, f.q.upper())
        if store is not None:  # a store's exact code opens the store
            return RedirectResponse(f"/stores/{quote(store.code, safe='')}", status_code=303)
    key = _view_key(request, session, "terminals", *sorted(f.params().items()))

    async def results() -> tuple[Markup, str]:
        rows, total = await queries.terminal_page(session, f)  # a page past the last is the last

        def url(**changes: Any) -> str:
            params = f.params(**changes)
            return "/terminals" + ("?" + urlencode(params) if params else "")

        context = {
            "rows": rows,
            "total": total,
            "f": f,
            "pages": max(1, -(-total // f.per)),
            "no_stores": total == 0 and not f.active and not await queries.any_store(session),
            "now": utcnow(),
            "url": url,
        }
        return render_block(request, "dashboard/terminals.html", "results", context), url()

    html, canonical = await queries.shared_view(key, results)
    shell = {}
    if not is_htmx(request):
        shell = {
            "f": f,
            "regions": await queries.regions(session),
            "models": await queries.models(session),
            "providers": PROVIDERS,
            "per_choices": queries.PER_PAGE_CHOICES,
        }
    response = render_around(request, "dashboard/terminals.html", shell, block="results", html=html)
    if is_htmx(request):  # the address bar gets the canonical URL: no empty parameters
        response.headers["HX-Push-Url"] = canonical
    return response


@router.get("/terminals/live")
async def terminals_live(request: Request, session: SessionDep) -> Response:
    """Rows on screen whose state differs from what the client shows (by primary key: the cost
    is the page size, never the fleet)."""
    known = _ids(request.query_params.get("known", ""))
    rows = await queries.terminal_rows(session, [i for i, _ in known])
    sigs = dict(known)
    changed = [rows[i] for i, _ in known if i in rows and rows[i].signature() != sigs[i]]
    if changed:  # only the rows sent again need their uptime
        figures = await queries.uptime_24h(session, changed)
        for r in changed:
            r.uptime_24h = figures.get(r.id)
    context = {
        "changed": changed,
        "rows": [rows[i] for i, _ in known if i in rows],
        "now": utcnow(),
        "context_view": request.query_params.get("view", "list"),
    }
    return render(request, "dashboard/terminals_live.html", context)


# --- terminal detail -------------------------------------------------------------------------


@router.get("/terminals/{poiid}")
async def terminal_page(request: Request, poiid: str, session: SessionDep) -> Response:
    detail = await queries.terminal_detail(session, poiid)
    if detail is None:
        raise NotFound("terminal", poiid)
    now = utcnow()
    chart = latency_chart(detail.latency, detail.latency_bucket_s, now)
    context = {"d": detail, "t": detail.terminal, "chart": chart, "now": now}
    return render(request, "dashboard/terminal.html", context, block="results")


@router.get("/terminals/{poiid}/status")
async def terminal_status(request: Request, poiid: str, session: SessionDep) -> Response:
    """The badges at the top of the detail page; 204 (nothing to swap) while unchanged."""
    detail = await queries.terminal_rows(session, await _terminal_ids(session, [poiid]), uptime=False)
    if not detail:
        return Response(status_code=204)
    row = next(iter(detail.values()))
    if request.query_params.get("sig") == row.signature():
        return Response(status_code=204)
    return render(request, "dashboard/terminal_status.html", {"row": row, "now": utcnow(), "poll": True})


async def _terminal_ids(session: AsyncSession, poiids: list[str]) -> list[int]:
    return list(await session.scalars(select(Terminal.id).where(Terminal.poiid.in_(poiids))))


@router.post("/stores/{code}/check")
async def check_store(request: Request, code: str, session: SessionDep) -> Response:
    """Check store: every network and terminal check of the store now, one report (its
    network first, then each terminal's verdict, cause and fix)."""
    store = await queries.store_by_code(session, code)
    if store is None:
        raise NotFound("store", code)
    store_code, tz = store.code, store.timezone
    await session.close()  # no connection held (nor, on SQLite, an old snapshot) while checking
    context: dict[str, Any] = {"sv": None, "error": None}
    try:
        state = request.app.state
        report = await check_store_now(state.db, state.settings, store_code, broker=state.agent_broker)
        context["sv"] = checkview.from_store_report(report, tz)
    except DB_ERRORS:
        raise
    except Exception as exc:
        log.exception("store check of %s failed", store_code)
        context["error"] = f"TermPulse failed while checking ({exc.__class__.__name__}: {exc})"
    # Out of band: the page's network checks as the check left them (the terminals poll).
    context |= {"store": store, "network": await queries.store_network_monitors(session, store.id)}
    return render(request, "dashboard/store_check_result.html", context)


@router.post("/terminals/{poiid}/check")
async def check_connection(request: Request, poiid: str, session: SessionDep) -> Response:
    """Run every check of this terminal now and show the verdict, steps and diagnosis."""
    started = time.perf_counter()
    ids = await _terminal_ids(session, [queries.normalise_query(poiid)])
    if not ids:
        raise NotFound("terminal", poiid)
    row = (await queries.terminal_rows(session, ids, uptime=False))[ids[0]]
    await session.close()  # no connection held (nor, on SQLite, an old snapshot) while checking
    try:
        state = request.app.state
        report = await check_terminal_now(state.db, state.settings, row.poiid, broker=state.agent_broker)
        view = checkview.from_report(report, row.tz)
    except DB_ERRORS:
        raise
    except Exception as exc:
        log.exception("manual check of %s failed", poiid)
        view = checkview.could_not_check(
            poiid,
            f"TermPulse failed while checking ({exc.__class__.__name__}: {exc})",
            row.store_code,
            started,
            row.tz,
        )
    detail = await queries.terminal_detail(session, row.poiid)
    # The verdict, and out of band: the badges, recent checks, state changes, what is checked.
    return render(
        request,
        "dashboard/check_result.html",
        {"v": view, "row": detail.row if detail else row, "d": detail, "now": utcnow()},
    )
