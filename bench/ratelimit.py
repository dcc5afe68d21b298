"""Benchmark: what a rate-limited call costs, in memory (SQLite: one process) and in
PostgreSQL (shared by every process: one upsert per call, app.web.ratelimit).

    .venv/bin/python bench/ratelimit.py [--calls 5000] [--keys 1000] [--concurrency 20]

Calls spread over `--keys` keys (API tokens, accounts), `--concurrency` at a time, on a fresh
database of its own (TERMPULSE_TEST_DATABASE_URL's server, PostgreSQL on 127.0.0.1 by default).
Prints calls per second and the latency p50/p99 of one call, with the machine's load average
(the figures move with it).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

from sqlalchemy import make_url

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.machine import describe

BENCH_DB = "termpulse_bench_ratelimit"


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


async def _run(limiter, calls: int, keys: int, concurrency: int) -> tuple[float, list[float]]:
    latencies: list[float] = []
    queue = iter(range(calls))

    async def one_worker() -> None:
        for i in queue:
            started = time.perf_counter()
            await limiter.hit(f"token-{i % keys}")
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(one_worker() for _ in range(concurrency)))
    return calls / (time.perf_counter() - started), latencies


def _line(name: str, rate: float, latencies: list[float]) -> str:
    q = statistics.quantiles(latencies, n=100)
    return f"{name:<12} {rate:>9,.0f} calls/s   p50 {q[49] * 1000:6.2f} ms   p99 {q[98] * 1000:6.2f} ms"


async def main(args: argparse.Namespace) -> int:
    from app.db import Database, server_execute
    from app.migrate import migrate
    from app.web.ratelimit import InDatabase, InProcess

    base = make_url(
        os.environ.get("TERMPULSE_TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/x")
    )
    await server_execute(base, f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
    await server_execute(base, f'CREATE DATABASE "{BENCH_DB}"')
    db = Database(base.set(database=BENCH_DB).render_as_string(hide_password=False))
    try:
        await migrate(db.engine)
        print(f"machine: {describe()}, load average {_load()}")
        print(f"{args.calls:,} calls over {args.keys:,} keys, {args.concurrency} at a time (never refused)\n")
        limiters = {"in memory": InProcess(10**9, 60.0), "PostgreSQL": InDatabase(db, "b", 10**9, 60.0)}
        for name, limiter in limiters.items():
            rate, latencies = await _run(limiter, args.calls, args.keys, args.concurrency)
            print(_line(name, rate, latencies))
        print(f"\nload average after: {_load()}")
    finally:
        await db.dispose()
        await server_execute(base, f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=20)
    sys.exit(asyncio.run(main(parser.parse_args())))
