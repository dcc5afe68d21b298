"""Import benchmark: 5,000 stores and 50,000 terminals into PostgreSQL, first run and unchanged re-run.

Targets: first import < 10 s, unchanged re-import < 3 s. On a shared machine the wall time
follows the load: the importing process's CPU time and the load average are printed beside it.
Run: .venv/bin/python bench/import.py
Database: TERMPULSE_BENCH_DATABASE_URL (default: a fresh termpulse_bench_import on the local server).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url

from app.db import Database, server_execute
from app.inventory.csvimport import import_fleet
from app.inventory.models import Monitor
from app.migrate import migrate
from bench.fleetgen import generate
from bench.machine import describe

STORES, PER_STORE = 5_000, 10
DEFAULT_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/termpulse_bench_import"


async def fresh_database(url: str) -> Database:
    name = make_url(url).database
    await server_execute(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await server_execute(url, f'CREATE DATABASE "{name}"')
    database = Database(url)
    await migrate(database.engine)
    return database


async def timed_import(database: Database, files) -> tuple[float, float, object]:
    """(wall s, CPU s of this process, summary)."""
    async with database.sessionmaker() as session:
        started, cpu = time.perf_counter(), time.process_time()
        summary = await import_fleet(session, files)
        return time.perf_counter() - started, time.process_time() - cpu, summary


async def main() -> None:
    url = os.environ.get("TERMPULSE_BENCH_DATABASE_URL", DEFAULT_URL)
    stores_csv, terminals_csv = generate(STORES, PER_STORE)
    files = [("stores.csv", stores_csv), ("terminals.csv", terminals_csv)]
    database = await fresh_database(url)
    try:
        load = os.getloadavg()[0]
        first, first_cpu, summary = await timed_import(database, files)
        again, again_cpu, unchanged = await timed_import(database, files)
        async with database.sessionmaker() as session:
            monitors = await session.scalar(select(func.count()).select_from(Monitor))
            version = await session.scalar(text("SHOW server_version"))
    finally:
        await database.dispose()
    print(
        f"fleet: {STORES:,} stores, {STORES * PER_STORE:,} terminals"
        f" ({len(terminals_csv) / 2**20:.1f} MiB CSV), "
        f"{monitors:,} monitors derived"
    )
    print(
        f"machine: {describe()}; PostgreSQL {version};"
        f" load average {load:.1f} before, {os.getloadavg()[0]:.1f} after"
    )
    print(
        f"first import:       {first:6.2f} s, CPU {first_cpu:5.2f} s"
        f"  ({summary.stores}; terminals {summary.terminals})  target < 10 s"
    )
    print(
        f"unchanged re-import:{again:6.2f} s, CPU {again_cpu:5.2f} s"
        f"  (terminals {unchanged.terminals})  target < 3 s"
    )


if __name__ == "__main__":
    asyncio.run(main())
