"""Run the Alembic migrations programmatically (serve, migrate, tests)."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import PROJECT_ROOT


def alembic_config() -> Config:
    return Config(str(PROJECT_ROOT / "alembic.ini"))


async def migrate(engine: AsyncEngine) -> None:
    """Upgrade the database behind `engine` to the newest revision."""
    cfg = alembic_config()

    def _upgrade(connection) -> None:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "head")

    async with engine.begin() as conn:
        await conn.run_sync(_upgrade)
