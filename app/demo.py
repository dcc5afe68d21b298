"""`termpulse demo`: a fresh SQLite database holding the sample fleet, served at once."""

from __future__ import annotations

import asyncio
import logging

import uvicorn

from app.config import Settings
from app.db import Database
from app.inventory.csvimport import import_fleet
from app.migrate import migrate

log = logging.getLogger(__name__)


async def _prepare(database: Database) -> None:
    from app.cli import SAMPLE_FLEET

    await migrate(database.engine)
    files = [(name, (SAMPLE_FLEET / name).read_bytes()) for name in ("stores.csv", "terminals.csv")]
    async with database.sessionmaker() as session:
        summary = await import_fleet(session, files)
    log.info("demo fleet loaded: %s stores, %s terminals", summary.stores.created, summary.terminals.created)


async def _serve_demo(settings: Settings, host: str, port: int) -> None:
    from app.main import create_app

    database = Database(settings.database_url)
    await _prepare(database)
    app = create_app(settings, database=database, run_worker=False)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False))
    log.info("TermPulse demo on http://%s:%s", host, port)
    try:
        await server.serve()
    finally:
        await database.dispose()


def run_demo(settings: Settings, *, host: str, port: int) -> int:
    from app.cli import DEMO_DATABASE

    for suffix in ("", "-wal", "-shm"):
        DEMO_DATABASE.with_name(DEMO_DATABASE.name + suffix).unlink(missing_ok=True)
    demo_settings = settings.model_copy(update={
        "database_url": f"sqlite+aiosqlite:///{DEMO_DATABASE.resolve()}",
        "allowed_networks": ["127.0.0.0/8"],  # the demo's simulated fleet lives on loopback only
    })
    asyncio.run(_serve_demo(demo_settings, host, port))
    return 0
