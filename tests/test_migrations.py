"""The migrations are the schema: they match the models, and go down and up again, on both databases."""

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from app.db import Base
from app.migrate import alembic_config
from app.monitoring.partitions import is_partition


async def test_models_match_migrations(db):
    def diff(connection):
        # check_results' day partitions (PostgreSQL) are made by a job, not by the models.
        skip = lambda name, type_, _parent: type_ == "table" and is_partition(name)  # noqa: E731
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "include_name": lambda *a: not skip(*a)}
        )
        return compare_metadata(context, Base.metadata)

    async with db.engine.connect() as conn:
        assert await conn.run_sync(diff) == []


async def test_downgrade_and_upgrade_again(tmp_path):
    from app.db import Database

    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'm.db'}")
    cfg = alembic_config()

    def cycle(connection):
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "head")
        command.downgrade(cfg, "base")
        command.upgrade(cfg, "head")

    async with database.engine.begin() as conn:
        await conn.run_sync(cycle)
    await database.dispose()
