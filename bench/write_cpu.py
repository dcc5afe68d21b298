"""CPU per check of the scheduled path minus the probe: claim, state machine, fold, write.

    .venv/bin/python bench/write_cpu.py [--monitors 20000] [--claim 500] [--batch 1000] [--passes 4]

On PostgreSQL (TERMPULSE_TEST_DATABASE_URL's server, database `termpulse_bench_write_cpu` or
TERMPULSE_BENCH_DB, dropped at the end): one tcp monitor per terminal, then, without probing,
what a worker does around each check: `claim_due` in claims of --claim, one healthy outcome per
claimed monitor (the steps a real tcp probe returns), `write_outcomes` in batches of --batch under
the claim's lease. A first pass takes every monitor from unknown to up (state changes); the
measured passes are the steady state, every result a plain success folded into its day.

Printed per pass: checks, and the CPU milliseconds per check of this process (the worker's
share) and of the database's backends serving it (PostgreSQL's share), from their CPU times, so
a machine busy with something else changes them little (unlike throughput). Compare commits
with --root (the app package of another checkout).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _setup_path(root: str | None) -> None:
    sys.path.insert(0, str(ROOT))  # bench.checks
    if root:
        sys.path.insert(0, str(Path(root).resolve()))


async def backends_cpu(db, dbname: str) -> float:
    import psutil
    from sqlalchemy import text

    async with db.engine.connect() as conn:
        pids = (
            await conn.execute(
                text("SELECT pid FROM pg_stat_activity WHERE datname = :d"),
                {"d": dbname},
            )
        ).scalars()
        total = 0.0
        for pid in pids:
            try:
                t = psutil.Process(pid).cpu_times()
                total += t.user + t.system
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
    return total


async def main(args) -> None:
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    from app.checks.result import ProbeResult, step
    from app.db import Database, server_execute, utcnow
    from app.migrate import migrate
    from app.monitoring.scheduler import claim_due
    from app.monitoring.writer import CheckOutcome, new_owner_id, write_outcomes
    from app.vocabulary import Outcome
    from bench.checks import build_fleet, reset_monitors

    base = make_url(
        os.environ.get("TERMPULSE_TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/x")
    )
    name = os.environ.get("TERMPULSE_BENCH_DB", "termpulse_bench_write_cpu")
    await server_execute(base, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await server_execute(base, f'CREATE DATABASE "{name}"')
    url = base.set(database=name).render_as_string(hide_password=False)
    db = Database(url, pool_size=4, max_overflow=0)
    try:
        await migrate(db.engine)
        await build_fleet(db, args.monitors)
        if args.sql:  # an experiment on the schema or settings before measuring
            async with db.engine.begin() as conn:
                for statement in args.sql.split(";"):
                    if statement.strip():
                        await conn.exec_driver_sql(statement)
        await reset_monitors(db, args.monitors, 60, all_due_now=True)  # 60 s: no pass is a silence
        owner = new_owner_id()
        template = ProbeResult(
            Outcome.OK,
            0.2,
            [step("resolve", True, 0.004, "127.81.0.1 (literal)"), step("connect", True, 0.2, "")],
            detail="port 2000 open on 127.81.0.1 (connected)",
        )
        for n in range(args.passes + 1):
            t_proc, t_pg, wall = time.process_time(), await backends_cpu(db, name), time.perf_counter()
            done = 0
            pending: list[CheckOutcome] = []
            while done < args.monitors:
                claimed = await claim_due(db, owner, args.claim, 30.0, 86400.0)
                if not claimed:
                    break
                now = utcnow()
                for i, c in enumerate(claimed):
                    latency = 0.2 + i % 7 / 10
                    result = ProbeResult(template.outcome, latency, template.steps, detail=template.detail)
                    pending.append(CheckOutcome.of(c.id, result, now, due_at=c.due_at))
                if len(pending) >= args.batch:
                    await write_outcomes(db, pending, lease_owner=owner)
                    done += len(pending)
                    pending = []
            if pending:
                await write_outcomes(db, pending, lease_owner=owner)
                done += len(pending)
            proc = time.process_time() - t_proc
            pg = await backends_cpu(db, name) - t_pg
            wall = time.perf_counter() - wall
            label = "first (unknown -> up)" if n == 0 else f"steady {n}"
            async with db.engine.connect() as conn:
                upd, hot = (
                    await conn.execute(
                        text(
                            "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables"
                            " WHERE relname = 'monitors'"
                        )
                    )
                ).one()
            print(
                f"pass {label:<22} {done:6d} checks in {wall:5.2f} s: worker {1000 * proc / done:.4f} ms"
                f" + PostgreSQL {1000 * pg / done:.4f} ms = {1000 * (proc + pg) / done:.4f} ms CPU per check"
                f" | monitors updates HOT {100 * hot / max(upd, 1):.0f}% (so far)",
                flush=True,
            )
    finally:
        await db.dispose()
        await server_execute(base, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--monitors", type=int, default=20_000)
    parser.add_argument("--claim", type=int, default=500)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--passes", type=int, default=4)
    parser.add_argument("--sql", help="SQL to run on the bench database before measuring (experiments)")
    parser.add_argument("--root", help="run the app package of this checkout instead")
    parsed = parser.parse_args()
    _setup_path(parsed.root)
    import uvloop

    uvloop.run(main(parsed))
