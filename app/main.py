"""The FastAPI application: routers of every domain, static files, lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import FrameType

import uvicorn
from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException

from app import __version__
from app.agents.api import router as agents_api
from app.agents.pages import router as agents_pages
from app.agents.protocol import router as agent_protocol
from app.agents.service import TOKENS, TOKENS_CHANNEL
from app.alerts.api import router as incidents_api
from app.alerts.pages import admin as notifications_pages
from app.alerts.pages import router as incidents_pages
from app.alerts.runner import alert_jobs
from app.auth.audit_pages import router as audit_pages
from app.auth.routes import RequireLogin, announce_setup
from app.auth.routes import router as auth_router
from app.auth.sso import oidc_client
from app.auth.sso import router as sso_pages
from app.auth.users import router as users_pages
from app.config import Settings, get_settings
from app.dashboard.live import LiveHub
from app.dashboard.live import router as live_events
from app.dashboard.queries import clear_caches, drop_views
from app.dashboard.routes import router as dashboard_pages
from app.db import Database
from app.errors import AppError
from app.history.api import router as history_api
from app.history.daily import daily_uptime_jobs
from app.history.pages import router as history_pages
from app.inventory.api import router as inventory_api
from app.inventory.pages import router as inventory_pages
from app.inventory.service import INVENTORY_CHANNEL
from app.monitoring.agents import AgentBroker, AgentWriter
from app.monitoring.api import router as checks_api
from app.monitoring.changes import listen
from app.monitoring.worker import start_embedded_worker
from app.ops.routes import RequestMetrics
from app.ops.routes import router as ops_routes
from app.providers.api import router as providers_api
from app.providers.pages import router as providers_pages
from app.relay import Relay
from app.web.errors import DatabaseDownBanner, app_error, document_errors, http_error, unusable_input
from app.web.limits import PagesInTurn, RefuseLargeBodies
from app.web.security import RefuseCrossOrigin, SecurityHeaders
from app.windows.api import router as windows_api
from app.windows.pages import router as windows_pages

log = logging.getLogger(__name__)


def create_app(
    settings: Settings | None = None,
    *,
    database: Database | None = None,
    run_worker: bool = False,
    setup_token: str | None = None,
    announce: bool = True,
) -> FastAPI:
    """The application. With `setup_token` (termpulse serve), a database without users serves
    only the setup page, which needs that token (printed in the log at start); without it (the
    demo, the tests), such a database is open to everyone, with a banner saying so."""
    settings = settings or get_settings()
    owns_database = database is None
    database = database or Database(settings.database_url)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The alert jobs (evaluate, deliver the outbox) run beside the checks, on the same worker.
        # So does the daily uptime job (stored days for long reports).
        jobs = [*alert_jobs(settings, database), *daily_uptime_jobs(settings, database)]
        await relay.start()  # before any request: a check handed over by another process is heard
        worker = await start_embedded_worker(settings, database, jobs=jobs) if run_worker else None
        if setup_token is not None and announce:  # serve --workers N: said once, by the parent
            await announce_setup(database, setup_token)
        yield
        if app.state.live is not None:
            await app.state.live.stop()
        if worker is not None:
            await worker.stop()
        await app.state.agent_writer.close()
        await relay.close()
        if owns_database:
            await database.dispose()

    app = FastAPI(
        title="TermPulse",
        version=__version__,
        lifespan=lifespan,
        description="Connectivity of payment-terminal fleets: stores, terminals, checks and history.",
        docs_url=None,  # /docs is app.ops.routes': Swagger UI from /static, no CDN
        redoc_url=None,
        # TermPulse exports Prometheus metrics (/metrics), not OpenTelemetry; FastAPI's own
        # telemetry looked the global OpenTelemetry providers up (environment reads) on every
        # request: ~10 µs each, hundreds of times a second under 2,000 store agents.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    app.state.setup_token = setup_token
    app.state.oidc = oidc_client(settings)  # None without TERMPULSE_OIDC_ISSUER; a wrong setting stops here
    app.state.db = database
    # Messages between this server's processes (app.relay): nothing shared is kept only in memory.
    relay = app.state.relay = Relay(database)
    relay.subscribe(INVENTORY_CHANNEL, lambda _message: clear_caches())  # a store, a region, a model
    relay.subscribe(TOKENS_CHANNEL, lambda message: TOKENS.forget(message["agent"]))
    relay.on_reconnect(clear_caches)
    listen(relay, lambda _changes: drop_views())  # a state changed: no page renders the old one
    app.state.agent_broker = AgentBroker(relay)  # Check connection -> the store agents' long polls
    app.state.agent_writer = AgentWriter(database)  # the store agents' results and heartbeats
    # Live updates pushed to open pages: where this process hears every change (NOTIFY on
    # PostgreSQL; on SQLite only its own checker's, so only with one). Else the pages poll.
    hears_changes = database.dialect == "postgresql" or run_worker
    app.state.live = LiveHub(database, relay) if hears_changes else None
    # The last added is the outermost.
    app.add_middleware(RequireLogin)
    app.add_middleware(DatabaseDownBanner)  # outside the login: a down database gets a banner
    app.add_middleware(RefuseCrossOrigin)  # before the login and any handler: no side effect
    app.add_middleware(SecurityHeaders)
    app.add_middleware(RequestMetrics)
    app.add_middleware(RefuseLargeBodies, limit_mb=settings.upload_max_mb)  # before anything reads it
    app.add_middleware(PagesInTurn, limit=settings.page_concurrency)  # the login check too, in turn
    app.mount("/static", StaticFiles(directory=str(settings.static_dir)), name="static")

    for router in (
        agent_protocol,  # /api/agent/v1, token-authenticated; first: most calls are the agents'
        ops_routes,
        auth_router,
        sso_pages,
        users_pages,
        audit_pages,
        inventory_pages,
        providers_pages,
        agents_pages,
        dashboard_pages,
        live_events,
        history_pages,
        windows_pages,
        notifications_pages,
        incidents_pages,
    ):
        app.include_router(router)
    apis = (inventory_api, checks_api, providers_api, history_api, agents_api, windows_api, incidents_api)
    for router in apis:
        app.include_router(router, prefix="/api/v1")
    # Refusals (app.errors): JSON under /api, the message in the page elsewhere.
    app.add_exception_handler(AppError, app_error)
    app.add_exception_handler(HTTPException, http_error)  # 401/403/404 on a page: an HTML page
    for unusable in (DBAPIError, OverflowError):  # a value the database cannot hold: a 422 (else raised on)
        app.add_exception_handler(unusable, unusable_input)
    document_errors(app)
    return app


class StoppingServer(uvicorn.Server):
    """uvicorn's server that, when a stop begins (SIGINT, SIGTERM), first tells the store
    agents' long polls to end, so they answer at once instead of holding the graceful stop
    until its timeout and being cancelled with a traceback each."""

    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self.broker: AgentBroker = app.state.agent_broker
        self.live: LiveHub | None = app.state.live

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        with contextlib.suppress(RuntimeError):  # no loop running (not serving yet): none waits
            asyncio.get_running_loop().call_soon_threadsafe(self.broker.stop)
            if self.live is not None:  # the open pages' streams end too
                asyncio.get_running_loop().call_soon_threadsafe(self.live.end_streams)
        super().handle_exit(sig, frame)
