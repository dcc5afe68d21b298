"""Operations: health and readiness probes, Prometheus metrics, the request metrics middleware
and the API docs (/docs: Swagger UI served from /static, so it works without internet)."""

from __future__ import annotations

import time
from datetime import datetime, timedelta

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.db import utcnow
from app.inventory.models import Agent, Monitor, Store, Terminal
from app.monitoring.workers import is_running, workers
from app.vocabulary import State
from app.web.deps import SessionDep
from app.web.errors import DB_ERRORS
from app.web.templating import render

router = APIRouter(tags=["operations"])

HTTP_REQUESTS = Counter(
    "termpulse_http_requests_total", "HTTP requests served", ["method", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "termpulse_http_request_seconds",
    "Server time per request",
    ["route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1, 2.5),
)


class RequestMetrics:
    """Middleware: every answer counted by method, route and status, and timed until it starts.

    Plain ASGI (no task and no body relay per request, as Starlette's BaseHTTPMiddleware has)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()

        async def send_counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                path = getattr(scope.get("route"), "path", "unmatched")
                HTTP_REQUESTS.labels(scope["method"], path, str(message["status"])).inc()
                HTTP_LATENCY.labels(path).observe(time.perf_counter() - started)
            await send(message)

        await self.app(scope, receive, send_counted)


@router.get("/healthz", summary="The process is up")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="The database is reachable")
async def readyz(session: SessionDep) -> JSONResponse:
    try:
        await session.execute(text("SELECT 1"))
    except Exception as exc:
        return JSONResponse({"status": "unavailable", "reason": f"database: {exc.__class__.__name__}"}, 503)
    return JSONResponse({"status": "ok"})


class _Snapshot(Collector):
    """The fleet's state as read for one scrape (a registry of its own: no gauge kept between
    scrapes, so a state nobody is in any more disappears instead of sticking at its last value)."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families


OVERDUE_GRACE = timedelta(seconds=10)  # due this long ago and not run yet: overdue


async def _overdue(session: AsyncSession, now: datetime) -> tuple[int, datetime | None]:
    """Centrally run monitors overdue (due over OVERDUE_GRACE ago, not run), and the oldest due."""
    count, oldest = (
        await session.execute(
            select(func.count(), func.min(Monitor.next_due_at)).where(
                Monitor.enabled.is_(True),
                Monitor.agent_id.is_(None),  # a store agent keeps its own schedule
                Monitor.next_due_at < now - OVERDUE_GRACE,
            )
        )
    ).one()
    return count, oldest


async def fleet_families(session: AsyncSession, now: datetime | None = None) -> list[Metric]:
    """Gauges from the database, each one grouped query: terminals and stores by state and region,
    monitors by kind and state, failing monitors by kind and diagnosis, overdue monitors and the
    oldest one's lateness (scheduling lag), store agents by state."""
    now = now or utcnow()
    terminals = GaugeMetricFamily(
        "termpulse_terminals", "Terminals by status and store region", labels=["state", "region"]
    )
    for state, region, n in await session.execute(
        select(Terminal.status, Store.region, func.count())
        .join(Store, Store.id == Terminal.store_id)
        .group_by(Terminal.status, Store.region)
    ):
        terminals.add_metric([state, region], n)
    stores = GaugeMetricFamily("termpulse_stores", "Stores by status and region", labels=["state", "region"])
    for state, region, n in await session.execute(
        select(Store.status, Store.region, func.count()).group_by(Store.status, Store.region)
    ):
        stores.add_metric([state, region], n)
    monitors = GaugeMetricFamily("termpulse_monitors", "Monitors by kind and state", labels=["kind", "state"])
    failing = GaugeMetricFamily(
        "termpulse_monitors_failing",
        "Monitors down or unknown, by kind and the diagnosis of their last result",
        labels=["kind", "diagnosis"],
    )
    bad: dict[tuple[str, str], int] = {}
    by_state: dict[tuple[str, str], int] = {}
    for kind, state, diagnosis, n in await session.execute(
        select(Monitor.kind, Monitor.state, Monitor.last_diagnosis, func.count()).group_by(
            Monitor.kind, Monitor.state, Monitor.last_diagnosis
        )
    ):
        by_state[(kind, state)] = by_state.get((kind, state), 0) + n
        if state in (State.DOWN, State.UNKNOWN):
            key = (kind, diagnosis or "none")
            bad[key] = bad.get(key, 0) + n
    for (kind, state), n in sorted(by_state.items()):
        monitors.add_metric([kind, state], n)
    for (kind, diagnosis), n in sorted(bad.items()):
        failing.add_metric([kind, diagnosis], n)
    overdue_n, oldest = await _overdue(session, now)
    overdue = GaugeMetricFamily(
        "termpulse_monitors_overdue",
        f"Centrally run monitors due more than {OVERDUE_GRACE.seconds} s ago and not run yet",
        value=overdue_n,
    )
    lag = GaugeMetricFamily(
        "termpulse_schedule_lag_seconds",
        "How late the most overdue centrally run monitor is (0: none overdue)",
        value=(now - oldest).total_seconds() if oldest is not None else 0.0,
    )
    agents = GaugeMetricFamily("termpulse_agents", "Store agents by state", labels=["state"])
    for state, n in await session.execute(
        select(Agent.state, func.count()).where(Agent.revoked_at.is_(None)).group_by(Agent.state)
    ):
        agents.add_metric([state], n)
    running = GaugeMetricFamily(
        "termpulse_workers_running", "Checking workers that sent a heartbeat in the last 15 s"
    )
    per_worker = {
        name: GaugeMetricFamily(f"termpulse_worker_{name}", text, labels=["worker"])
        for name, text in (
            ("checks_per_s", "Checks finished per second, per running worker"),
            ("results_queued", "Results waiting to be written (the database was slow or down)"),
            ("results_lost", "Results given up since the worker started (queue bound, failed batches)"),
        )
    }
    alive = [w for w in await workers(session) if is_running(w, now)]
    running.add_metric([], len(alive))
    for w in alive:
        f = w.figures or {}
        per_worker["checks_per_s"].add_metric([w.id], float(f.get("checks_per_s") or 0))
        per_worker["results_queued"].add_metric([w.id], float(f.get("queued") or 0))
        per_worker["results_lost"].add_metric([w.id], float(f.get("lost") or 0))
    return [terminals, stores, monitors, failing, overdue, lag, agents, running, *per_worker.values()]


@router.get("/status", include_in_schema=False)  # admin: app.auth.rules
async def status_page(request: Request, session: SessionDep) -> Response:
    """Is TermPulse itself checking? Workers (heartbeat, rate, lag, queue, losses, database
    errors), overdue monitors, store agents."""
    now = utcnow()
    overdue_n, oldest = await _overdue(session, now)
    by_state = select(Agent.state, func.count()).where(Agent.revoked_at.is_(None)).group_by(Agent.state)
    agents = {state: n for state, n in await session.execute(by_state)}
    rows = [(w, is_running(w, now)) for w in await workers(session)]
    context = {
        "workers": rows,
        "running": sum(1 for _, alive in rows if alive),
        "overdue": overdue_n,
        "lag_s": (now - oldest).total_seconds() if oldest is not None else 0.0,
        "grace_s": OVERDUE_GRACE.seconds,
        "agents": agents,
        "now": now,
    }
    return render(request, "ops/status.html", context)


@router.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
async def metrics(session: SessionDep) -> Response:
    """This process's counters (HTTP, checks, provider polls), then the fleet's gauges read from
    the database for this scrape."""
    try:
        families = await fleet_families(session)
        up = 1.0
    except DB_ERRORS:  # this process's counters still; the fleet's gauges when the database answers
        families, up = [], 0.0
    families.append(GaugeMetricFamily("termpulse_database_up", "The database answered this scrape", value=up))
    snapshot = CollectorRegistry(auto_describe=False)
    snapshot.register(_Snapshot(families))
    body = generate_latest() + generate_latest(snapshot)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


SWAGGER_UI = "/static/vendor/swagger-ui-bundle-5.31.0.js", "/static/vendor/swagger-ui-5.31.0.css"


@router.get("/docs", include_in_schema=False)
async def api_docs(request: Request) -> Response:
    """The OpenAPI description in Swagger UI, every asset from this server (no CDN, no
    validator badge calling out): a self-hosted machine without internet gets its docs."""
    js, css = SWAGGER_UI
    context = {
        "title": f"{request.app.title} API",
        "openapi_url": request.app.openapi_url or "/openapi.json",
        "swagger_js": js,
        "swagger_css": css,
    }
    return render(request, "ops/docs.html", context)
