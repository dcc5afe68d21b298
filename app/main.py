"""The FastAPI application: routers of every domain, static files, lifespan."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from app import __version__
from app.config import Settings, get_settings
from app.db import Database
from app.auth.routes import require_login
from app.auth.routes import router as auth_router
from app.ops.routes import record_request_metrics
from app.ops.routes import router as ops_router

log = logging.getLogger(__name__)


def create_app(
    settings: Settings | None = None, *, database: Database | None = None, run_worker: bool = False
) -> FastAPI:
    settings = settings or get_settings()
    owns_database = database is None
    database = database or Database(settings.database_url)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        worker = None
        if run_worker:
            from app.monitoring.worker import start_embedded_worker

            worker = await start_embedded_worker(settings, database)
        yield
        if worker is not None:
            await worker.stop()
        if owns_database:
            await database.dispose()

    app = FastAPI(
        title="TermPulse", version=__version__, lifespan=lifespan,
        description="Connectivity of payment-terminal fleets: stores, terminals, checks and history.",
    )
    app.state.settings = settings
    app.state.db = database
    app.middleware("http")(require_login)
    from app.dashboard.routes import database_down_banner

    app.middleware("http")(database_down_banner)  # outside the login: a down database gets a banner
    app.middleware("http")(record_request_metrics)
    app.mount("/static", StaticFiles(directory=str(settings.static_dir)), name="static")

    from app.inventory.api import router as inventory_api
    from app.inventory.pages import router as inventory_pages

    app.include_router(ops_router)
    app.include_router(auth_router)
    app.include_router(inventory_api, prefix="/api/v1")
    app.include_router(inventory_pages)
    from app.providers.api import router as providers_api
    from app.providers.pages import router as providers_pages
    app.include_router(providers_api, prefix="/api/v1")  # provider accounts (issue 4)
    app.include_router(providers_pages)
    from app.dashboard.routes import router as dashboard_router

    app.include_router(dashboard_router)
    from app.history.routes import router as history_router

    app.include_router(history_router)  # /history, its exports, /api/v1/uptime
    return app
