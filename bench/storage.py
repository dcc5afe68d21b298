"""Benchmark: what a check result costs on disk in PostgreSQL.

    .venv/bin/python bench/storage.py [--monitors 200] [--results 1000]

Writes `--monitors` x `--results` results through the real writer (app.monitoring.writer,
batches of 1,000), 99 % plain successes and 1 % failures, each with the steps a real TCP probe
against a loopback listener produced, into a fresh PostgreSQL database; then reads the size of
`check_results` (table, TOAST and indexes) and prints bytes per result, and what a terminal
with one monitor at a 60 s interval costs per day and for 14 days of raw retention.

Run twice: results stored as the writer stores them (a plain success without its steps), and
for comparison as before, every result with its steps (written as manual checks, which keep
them: the only difference in the row is the steps and the manual flag).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import text
from sqlalchemy.engine import make_url

from app.db import server_execute
from bench.machine import describe

BENCH_DB = "termpulse_bench_storage"


async def _probe_steps() -> tuple[list, list]:
    """The steps of a real ok TCP check and of a real refused one, on loopback."""
    from app.checks.context import ProbeContext
    from app.checks.guard import TargetGuard
    from app.checks.probes import run_probe
    from app.checks.resolver import Resolver

    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    ctx = ProbeContext(Resolver(["127.0.0.1"], 1), TargetGuard(["127.0.0.0/8"]))
    ok = await run_probe("tcp", f"127.0.0.1:{port}", {}, 2.0, ctx)
    server.close()
    refused = await run_probe("tcp", f"127.0.0.1:{port}", {}, 2.0, ctx)
    return ok.steps, refused.steps


async def run(db, monitors: int, per_monitor: int, full_steps: bool) -> dict:
    from app.db import utcnow
    from app.monitoring.writer import CheckOutcome, write_outcomes
    from app.vocabulary import Outcome

    async with db.engine.begin() as conn:
        await conn.execute(text("TRUNCATE check_results, state_changes RESTART IDENTITY"))
    ok_steps, fail_steps = await _probe_steps()
    start = utcnow() - timedelta(seconds=60 * per_monitor)
    batch: list[CheckOutcome] = []
    written = 0
    for r in range(per_monitor):
        for m in range(1, monitors + 1):
            failed = (r * monitors + m) % 100 == 0
            batch.append(
                CheckOutcome(
                    m,
                    Outcome.FAIL if failed else Outcome.OK,
                    start + timedelta(seconds=60 * r, milliseconds=m),
                    1.2,
                    fail_steps if failed else ok_steps,
                    "tcp_refused" if failed else None,
                    "connection refused" if failed else None,
                    manual=full_steps,
                )
            )
            if len(batch) == 1000:
                written += (await write_outcomes(db, batch)).written
                batch = []
    if batch:
        written += (await write_outcomes(db, batch)).written
    async with db.engine.connect() as conn:
        size = await conn.scalar(text("SELECT pg_total_relation_size('check_results')"))
        heap = await conn.scalar(text("SELECT pg_relation_size('check_results')"))
    per = size / written
    return {"written": written, "bytes": size, "heap": heap, "per_result": per}


async def main(args: argparse.Namespace) -> int:
    from app.db import Database
    from app.inventory.models import Monitor, Store
    from app.migrate import migrate

    base = make_url(
        os.environ.get("TERMPULSE_TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/x")
    )
    await server_execute(base, f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
    await server_execute(base, f'CREATE DATABASE "{BENCH_DB}"')
    db = Database(base.set(database=BENCH_DB).render_as_string(hide_password=False))
    try:
        await migrate(db.engine)
        async with db.engine.begin() as conn:
            await conn.execute(
                Store.__table__.insert(), [{"code": "B-1", "name": "Bench", "status": "unknown"}]
            )
            store = await conn.scalar(text("SELECT id FROM stores"))
            await conn.execute(
                Monitor.__table__.insert(),
                [
                    {
                        "key": f"m{i}",
                        "store_id": store,
                        "kind": "tcp",
                        "target": "127.0.0.1:1",
                        "params": {},
                        "interval_s": 60,
                        "timeout_s": 5.0,
                        "phase_ms": 0,
                        "state": "up",
                        "enabled": False,  # nothing claims them: only the writer writes
                    }
                    for i in range(args.monitors)
                ],
            )
        print(f"machine:  {describe()}")
        print(f"results:  {args.monitors} monitors x {args.results} (99 % ok, 1 % refused), PostgreSQL\n")
        for label, full in (("compact (as stored now)", False), ("every result with steps (before)", True)):
            r = await run(db, args.monitors, args.results, full)
            day = r["per_result"] * 1440
            print(
                f"{label:<34} {r['per_result']:6.0f} bytes per result (table+TOAST+indexes)"
                f" -> {day / 1024:6.0f} KiB per terminal per day at 60 s,"
                f" {14 * day / 2**20:5.2f} MiB for 14 days raw",
                flush=True,
            )
        return 0
    finally:
        await db.dispose()
        await server_execute(base, f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--monitors", type=int, default=200)
    parser.add_argument("--results", type=int, default=1000)
    sys.exit(asyncio.run(main(parser.parse_args())))
