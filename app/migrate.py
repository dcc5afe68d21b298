"""Run the Alembic migrations programmatically (serve, worker, migrate, tests)."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import bundled_dir

_MIGRATION_LOCK = 0x7E4D_9015  # app and workers may start together: one migrates, the others wait


def alembic_config() -> Config:
    """Alembic configured in code, so an installed package needs no alembic.ini.

    (alembic.ini stays in the repository for running `alembic` by hand there.)
    """
    cfg = Config()
    # ConfigParser interpolation: a literal % in the path must be doubled.
    cfg.set_main_option("script_location", str(bundled_dir("migrations")).replace("%", "%%"))
    return cfg


async def migrate(engine: AsyncEngine) -> None:
    """Upgrade the database behind `engine` to the newest revision."""
    cfg = alembic_config()

    def _upgrade(connection: Connection) -> None:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "head")

    async with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
        await conn.run_sync(_upgrade)
