"""Benchmark: what checking a terminal costs on disk in PostgreSQL, per day.

    .venv/bin/python bench/storage.py [--monitors 100] [--days 2] [--stored both|before|after]

Writes `--days` whole UTC days of results at a 60 s interval for `--monitors` monitors (one
monitor per terminal) through the real writer (app.monitoring.writer, batches of 1,000), with
the steps a real TCP probe against a loopback listener produced, into a fresh PostgreSQL
database; rolls the hours and days up (app.monitoring.maintenance); then reads the size of
each table (heap, TOAST and indexes, of a fresh copy: what the rows take, less what the empty
tables take: a fixed few KiB for the whole fleet) and prints bytes
per terminal per day, by component: raw results (kept `RAW_DAYS` = 14 days: check_results rows
and the kept results folded into latency_days) and what is kept forever (folded plain
successes, as they are once their last 20 are cleared two days on; state changes; rollups).

Three profiles of checking, each stored two ways:
  quiet:    every check ok;
  outage:   every check ok but one short outage every day (two refusals: down, then up again);
  1 % fail: every 100th check refused (a single refusal: no state change), the rest ok;
  down 1 h: every check ok but an hour down every day (60 refusals in a row);
  before:   every result a row, a plain success without its steps (TERMPULSE_KEEP_PLAIN_RESULTS);
  after:    scheduled results folded into latency_days (the default): plain successes counted,
            the others (failures, state changes) kept whole in the day's `kept`.
Also the writer's pace (results/s, batches of 1,000 of 5-minute spans: noisy on a loaded machine).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import text
from sqlalchemy.engine import make_url

from app.db import server_execute
from bench.machine import describe

BENCH_DB = "termpulse_bench_storage"
RAW_DAYS = 14
TABLES = ("check_results", "latency_days", "state_changes", "rollups")


def _load() -> str:
    """The load average (1, 5, 15 min): figures on a loaded machine are noisy."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


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


def _fails(profile: str, r: int, m: int, per_day: int) -> bool:
    if profile == "quiet":
        return False
    if profile == "outage":  # one outage a day, at a different time for each monitor
        return (r - m * 7) % per_day in (600, 601)
    if profile == "down 1 h":
        return 600 <= (r - m * 7) % per_day < 660
    return (r + m) % 100 == 0


async def _sizes(db) -> dict[str, int]:
    """Bytes each table's rows take (all partitions of check_results), heap + TOAST + indexes:
    measured on a fresh copy with the same indexes, so dead row versions (a day's row is
    rewritten as results are folded; VACUUM cannot remove them while another database's
    transaction is open on this shared server) are not counted."""
    sizes = {}
    async with db.engine.begin() as conn:
        for table in TABLES:
            await conn.execute(text(f"CREATE TEMP TABLE copy_{table} (LIKE {table} INCLUDING ALL)"))
            await conn.execute(text(f"INSERT INTO copy_{table} SELECT * FROM {table}"))
            sizes[table] = await conn.scalar(text(f"SELECT pg_total_relation_size('copy_{table}')"))
            await conn.execute(text(f"DROP TABLE copy_{table}"))
    return sizes


async def run(db, monitors: int, days: int, profile: str, keep_plain: bool) -> dict[str, float]:
    from app.config import get_settings
    from app.monitoring.compact import RECENT_DAYS, forget_kept, forget_recent
    from app.monitoring.maintenance import rollup_pending
    from app.monitoring.partitions import create_partition
    from app.monitoring.writer import CheckOutcome, write_outcomes
    from app.vocabulary import Outcome

    os.environ["TERMPULSE_KEEP_PLAIN_RESULTS"] = "true" if keep_plain else "false"
    get_settings.cache_clear()
    async with db.engine.begin() as conn:
        await conn.execute(
            text(
                "TRUNCATE check_results, latency_days, state_changes, rollups, rollup_redo, rolled_up_hours"
                " RESTART IDENTITY"
            )
        )
        await conn.execute(text("UPDATE monitors SET state = 'up', last_checked_at = NULL"))
    ok_steps, fail_steps = await _probe_steps()
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start = today - timedelta(days=days)
    async with db.engine.begin() as conn:  # as the retention job makes them ahead
        for d in range(days):
            await create_partition(conn, (start + timedelta(days=d)).date())
    # What the empty tables and partitions take: fixed, whatever the fleet (not per terminal).
    empty = await _sizes(db)
    per_day = 1440
    batch: list[CheckOutcome] = []
    t0 = time.perf_counter()
    for r in range(per_day * days):
        for m in range(1, monitors + 1):
            failed = _fails(profile, r, m, per_day)
            batch.append(
                CheckOutcome(
                    m,
                    Outcome.FAIL if failed else Outcome.OK,
                    start + timedelta(seconds=60 * r, milliseconds=m),
                    1.0 + (r * m) % 13 * 0.1,
                    fail_steps if failed else ok_steps,
                    "tcp_refused" if failed else None,
                    "connection refused" if failed else None,
                )
            )
            if len(batch) == 1000:
                await write_outcomes(db, batch)
                batch = []
    if batch:
        await write_outcomes(db, batch)
    rate = per_day * days * monitors / (time.perf_counter() - t0)
    await rollup_pending(db, today, max_hours=24 * days)
    async with db.sessionmaker() as session:  # as the retention job does two days on
        await forget_recent(session, (today + timedelta(days=RECENT_DAYS)).date())
        await session.commit()
    sizes = {t: (b - empty[t]) / (monitors * days) for t, b in (await _sizes(db)).items()}
    async with db.sessionmaker() as session:  # as the retention job does RAW_DAYS on
        await forget_kept(session, today + timedelta(days=RAW_DAYS + 1))
        await session.commit()
    forever = ((await _sizes(db))["latency_days"] - empty["latency_days"]) / (monitors * days)
    kept = sizes["latency_days"] - forever  # raw results, kept RAW_DAYS
    return sizes | {"check_results": sizes["check_results"] + kept, "latency_days": forever, "rate": rate}


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
                        "state_since": datetime.now(UTC) - timedelta(days=args.days + 1),
                        "enabled": False,  # nothing claims them: only the writer writes
                    }
                    for i in range(args.monitors)
                ],
            )
        print(f"machine:  {describe()}, load average {_load()}")
        print(
            f"fleet:    {args.monitors} terminals (one monitor each) x {args.days} days at 60 s, PostgreSQL\n"
            "          bytes per terminal per day (table+TOAST+indexes of the rows),"
            f" raw kept {RAW_DAYS} days\n"
            "          raw: check_results rows + kept results folded into latency_days;"
            " folded: the plain successes' buckets\n"
        )
        print(
            f"{'profile':<9} {'stored':<7} {'raw':>8} {'folded':>7} {'changes':>8} {'rollups':>8}"
            f" {'per day':>9} {'forever/day':>12} {'raw 14 days':>12} {'written/s':>10}"
        )
        for profile in ("quiet", "outage", "1 % fail", "down 1 h"):
            for label, keep in (("before", True), ("after", False)):
                if args.stored not in ("both", label):
                    continue
                b = await run(db, args.monitors, args.days, profile, keep)
                forever = b["latency_days"] + b["state_changes"] + b["rollups"]
                print(
                    f"{profile:<9} {label:<7} {b['check_results']:8.0f} {b['latency_days']:7.0f}"
                    f" {b['state_changes']:8.0f} {b['rollups']:8.0f}"
                    f" {b['check_results'] + forever:9.0f} {forever:12.0f}"
                    f" {RAW_DAYS * b['check_results'] / 1024:8.0f} KiB {b['rate']:10.0f}",
                    flush=True,
                )
        print(f"\nload average after: {_load()}")
        return 0
    finally:
        await db.dispose()
        await server_execute(base, f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--monitors", type=int, default=100)
    parser.add_argument("--days", type=int, default=2)
    parser.add_argument("--stored", choices=("both", "before", "after"), default="both")
    sys.exit(asyncio.run(main(parser.parse_args())))
