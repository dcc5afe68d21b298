"""Migration 0008 on both databases: a store of a 0007 installation keeps its profile (now a
record, seeded from the presets) and its network monitors their ids and keys, marked as a
profile's destinations for the target guard; down and up again."""

from __future__ import annotations

import pytest
from alembic import command
from sqlalchemy import select
from sqlalchemy.engine import make_url

from app.db import Database, server_execute
from app.inventory.models import Monitor, NetworkProfile, Store
from app.inventory.profiles import PRESETS
from app.migrate import alembic_config


@pytest.fixture(params=["postgresql", "sqlite"])
def server_url(request, tmp_path) -> str | None:
    """Sync on purpose (as tests/conftest.py's migrated_database): None for SQLite."""
    return request.getfixturevalue("pg_url") if request.param == "postgresql" else None


@pytest.fixture
async def fresh_url(server_url, tmp_path):
    """An empty database of its own (migrated by the test step by step)."""
    if server_url is None:
        yield f"sqlite+aiosqlite:///{tmp_path / 'm8.db'}"
        return
    base = make_url(server_url)
    url = base.set(database=f"{base.database}_m8")
    await server_execute(base, f'DROP DATABASE IF EXISTS "{url.database}"')
    await server_execute(base, f'CREATE DATABASE "{url.database}"')
    yield url.render_as_string(hide_password=False)
    await server_execute(base, f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)')


async def test_0008_keeps_stores_and_monitors_and_seeds_the_presets(fresh_url):
    database = Database(fresh_url)
    cfg = alembic_config()

    def to(revision, down=False):
        def run(connection):
            cfg.attributes["connection"] = connection
            (command.downgrade if down else command.upgrade)(cfg, revision)

        return run

    async with database.engine.begin() as conn:
        await conn.run_sync(to("0007"))
        await conn.execute(
            Store.__table__.insert(), [{"code": "S-1", "name": "One", "network_profile": "mixed"}]
        )
        sid = (await conn.execute(select(Store.id))).scalar_one()
        monitors = [
            {
                "key": f"s{sid}:dns:terminal-api-live.adyen.com",
                "kind": "dns",
                "target": "terminal-api-live.adyen.com",
            },
            {
                "key": f"s{sid}:tcp:terminal-api-live.adyen.com:443",
                "kind": "tcp",
                "target": "terminal-api-live.adyen.com:443",
            },
        ]
        await conn.execute(
            Monitor.__table__.insert(), [{**m, "store_id": sid, "params": {}} for m in monitors]
        )
        before = dict((await conn.execute(select(Monitor.key, Monitor.id))).all())
        await conn.run_sync(to("0008"))
    async with database.engine.connect() as conn:
        rows = (await conn.execute(select(NetworkProfile.name, NetworkProfile.destinations))).all()
        assert dict(rows) == {n: [d.as_json() for d in dests] for n, (_, dests) in PRESETS.items()}
        assert (await conn.execute(select(Store.network_profile))).scalar_one() == "mixed"
        after = (await conn.execute(select(Monitor.key, Monitor.id, Monitor.params))).all()
        assert {k: i for k, i, _ in after} == before
        assert all(p == {"by_name": True} for _, _, p in after)
    async with database.engine.begin() as conn:
        await conn.run_sync(to("0007", down=True))
        await conn.run_sync(to("0008"))
    await database.dispose()
