"""Live updates pushed to open dashboards: a state change to 1,000 Server-Sent Events clients,
and the database's load with 0 and with 1,000 dashboards open. PostgreSQL.

    .venv/bin/python bench/sse.py [--clients 1000] [--changes 10] [--window 20] [--pollers 0]

* Database: its own (`termpulse_bench_sse` on the server of TERMPULSE_BENCH_DATABASE_URL,
  default postgresql+asyncpg://postgres@127.0.0.1:5432/termpulse_bench_sse), migrated, holding
  the sample fleet (60 stores, 246 terminals), every terminal up.
* Server: uvicorn serving app.main:create_app in its own process, no checker: the state
  changes are written by this script through the one writer (two failed or one passed check
  of each monitor of a terminal), as a checker would, and published by NOTIFY.
* Clients: `--clients` streams of /live/events?view=overview (each what a wall screen's
  overview opens) on one httpx client in this process. A change takes the changed store to
  the top of the worst-first page, so every one of them must get it.
* Figures: per change, the time from the writer's call to each client receiving its update
  (p50, p95, max, and how many within 2 s); the database's transactions per second
  (pg_stat_database xact_commit + xact_rollback) over `--window` seconds with one change every
  2 s, with no dashboard open, with `--few`, with all of them and with none again (the
  listener starts with the first dashboard; then a few transactions per change to render it
  and a SELECT 1 every 10 s; the last window shows what the database does anyway).
  `--pollers N` adds a window with N clients polling /live/overview every 2 s instead (what
  the pages did before), to compare.
The machine is shared: the load average is printed with the figures; they are noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import httpx
from sqlalchemy import select, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import app.models  # noqa: E402,F401
from app.db import Database, server_execute, utcnow  # noqa: E402
from app.inventory.csvimport import import_fleet  # noqa: E402
from app.inventory.models import Monitor, Terminal  # noqa: E402
from app.migrate import migrate  # noqa: E402
from app.monitoring.writer import CheckOutcome, write_outcomes  # noqa: E402
from app.vocabulary import Outcome  # noqa: E402
from bench.machine import describe  # noqa: E402
from bench.pages import free_port  # noqa: E402

DEFAULT_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/termpulse_bench_sse"
FLEET = ROOT / "app" / "inventory" / "fleet"


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


async def prepare(url: str) -> Database:
    name = make_url(url).database
    await server_execute(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await server_execute(url, f'CREATE DATABASE "{name}"')
    database = Database(url)
    await migrate(database.engine)
    files = [(p.name, p.read_bytes()) for p in (FLEET / "stores.csv", FLEET / "terminals.csv")]
    async with database.sessionmaker() as session:
        await import_fleet(session, files)
    # Everything up: one passing check of every monitor, through the writer.
    async with database.sessionmaker() as session:
        ids = list(await session.scalars(select(Monitor.id)))
    await write_outcomes(database, [CheckOutcome(i, Outcome.OK, utcnow()) for i in ids])
    async with database.engine.connect() as conn:  # not autovacuum in the middle of a window
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text("VACUUM ANALYZE"))
    return database


def start_server(url: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "TERMPULSE_DATABASE_URL": url, "TERMPULSE_LOG_LEVEL": "WARNING"}
    cmd = [sys.executable, "-m", "uvicorn", "--factory", "app.main:create_app", "--host", "127.0.0.1"]
    cmd += [
        "--port",
        str(port),
        "--no-access-log",
        "--log-level",
        "warning",
        "--timeout-graceful-shutdown",
        "5",
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env)
    base = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("the server did not start")


class Dashboards:
    """N open overviews: each records when it received each update."""

    def __init__(self, http: httpx.AsyncClient, n: int) -> None:
        self.received: list[list[float]] = [[] for _ in range(n)]
        self.ready = 0
        self.all_ready = asyncio.Event()
        self.tasks = [asyncio.create_task(self._one(http, i, n)) for i in range(n)]

    async def _one(self, http: httpx.AsyncClient, i: int, n: int) -> None:
        async with http.stream("GET", "/live/events?view=overview") as r:
            r.raise_for_status()
            first = True
            async for line in r.aiter_lines():
                if first and line.startswith("event: ping"):
                    first = False
                    self.ready += 1
                    if self.ready == n:
                        self.all_ready.set()
                elif line == "event: update":
                    self.received[i].append(time.perf_counter())

    async def close(self) -> None:
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def flip(database: Database, terminal_id: int, down: bool) -> tuple[float, float]:
    """One state change of a terminal through the one writer: when it was asked, when the
    transaction that changed the state had committed."""
    async with database.sessionmaker() as session:
        ids = list(await session.scalars(select(Monitor.id).where(Monitor.terminal_id == terminal_id)))
    t0 = time.perf_counter()
    now = utcnow()
    if down:
        for n in (2, 1):
            at = now - timedelta(milliseconds=n)
            await write_outcomes(
                database, [CheckOutcome(m, Outcome.FAIL, at, diagnosis="tcp_refused") for m in ids]
            )
    else:
        await write_outcomes(database, [CheckOutcome(m, Outcome.OK, now) for m in ids])
    return t0, time.perf_counter()


async def xacts(database: Database) -> int:
    async with database.engine.connect() as conn:
        await conn.execute(text("SELECT pg_stat_clear_snapshot()"))
        value = await conn.scalar(
            text(
                "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()"
            )
        )
    return int(value or 0)


async def window(database: Database, terminal_id: int, seconds: float) -> float:
    """Transactions per second of the whole database while a change happens every 2 s."""
    await asyncio.sleep(1.5)  # the statistics of what came before are flushed
    before, t0 = await xacts(database), time.perf_counter()
    down = True
    while time.perf_counter() - t0 < seconds:
        await flip(database, terminal_id, down)
        down = not down
        await asyncio.sleep(2)
    if not down:  # leave it up
        await flip(database, terminal_id, False)
    await asyncio.sleep(1.5)
    return (await xacts(database) - before) / (time.perf_counter() - t0)


async def pollers(base: str, n: int, stop: asyncio.Event) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=30, limits=httpx.Limits(max_connections=n)) as http:

        async def one(k: int) -> None:
            await asyncio.sleep(2 * k / n)  # spread as real screens are
            while not stop.is_set():
                await http.get("/live/overview?page=1&known=")
                await asyncio.sleep(2)

        await asyncio.gather(*(one(k) for k in range(n)), return_exceptions=True)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--changes", type=int, default=10)
    ap.add_argument("--window", type=float, default=20)
    ap.add_argument("--few", type=int, default=10, help="dashboards of the middle window")
    ap.add_argument("--pollers", type=int, default=0)
    args = ap.parse_args()
    url = os.environ.get("TERMPULSE_BENCH_DATABASE_URL", DEFAULT_URL)
    print(f"machine: {describe()}; load average {loadavg()}")
    database = await prepare(url)
    async with database.sessionmaker() as session:
        terminal = await session.scalar(
            select(Terminal.id)
            .join(Monitor, Monitor.terminal_id == Terminal.id)
            .order_by(Terminal.id)
            .limit(1)
        )
        fleet = await session.scalar(select(text("count(*)")).select_from(Terminal))
    assert terminal is not None
    proc, base = start_server(url)
    try:
        print(f"fleet: {fleet} terminals, 60 stores; server {base} (one process)")
        idle = await window(database, terminal, args.window)
        print(f"database, 0 dashboards open:      {idle:7.1f} transactions/s   (load {loadavg()})")
        async with httpx.AsyncClient(base_url=base, timeout=httpx.Timeout(60, read=None)) as http:
            few = Dashboards(http, args.few)
            await asyncio.wait_for(few.all_ready.wait(), 60)
            some = await window(database, terminal, args.window)
            print(
                f"database, {args.few} dashboards open:     {some:7.1f} transactions/s   (load {loadavg()})"
            )
            await few.close()

        limits = httpx.Limits(max_connections=args.clients + 10, max_keepalive_connections=0)
        async with httpx.AsyncClient(
            base_url=base, timeout=httpx.Timeout(60, read=None), limits=limits
        ) as http:
            t0 = time.perf_counter()
            boards = Dashboards(http, args.clients)
            await asyncio.wait_for(boards.all_ready.wait(), 180)
            print(f"{args.clients} dashboards connected in {time.perf_counter() - t0:.1f} s")
            delays: list[float] = []
            after_commit: list[float] = []
            within = []
            down = True
            for _ in range(args.changes):
                counts = [len(r) for r in boards.received]
                asked, committed = await flip(database, terminal, down)
                down = not down
                deadline = time.perf_counter() + 30
                while time.perf_counter() < deadline:
                    if all(len(r) > c for r, c in zip(boards.received, counts, strict=True)):
                        break
                    await asyncio.sleep(0.05)
                got = [r[c] - asked for r, c in zip(boards.received, counts, strict=True) if len(r) > c]
                delays += got
                after_commit += [g - (committed - asked) for g in got]
                within.append(sum(1 for d in got if d <= 2.0))
                word = "down" if not down else "up  "
                p50, worst, write = statistics.median(got), max(got), committed - asked
                print(
                    f"  change {word}: {len(got)}/{args.clients} got it, p50 {p50 * 1000:6.0f} ms, "
                    f"max {worst * 1000:6.0f} ms (its write {write * 1000:4.0f} ms)  (load {loadavg()})"
                )
                await asyncio.sleep(1)
            if not down:
                await flip(database, terminal, False)
            delays.sort()
            p95 = delays[int(0.95 * (len(delays) - 1))]
            print(
                f"state change -> {args.clients} SSE clients: p50 {statistics.median(delays) * 1000:.0f} ms, "
                f"p95 {p95 * 1000:.0f} ms, max {delays[-1] * 1000:.0f} ms; within 2 s: "
                f"{min(within)}-{max(within)} of {args.clients} per change"
            )
            after_commit.sort()
            print(
                f"  from the commit: p50 {statistics.median(after_commit) * 1000:.0f} ms, "
                f"p95 {after_commit[int(0.95 * (len(after_commit) - 1))] * 1000:.0f} ms, "
                f"max {after_commit[-1] * 1000:.0f} ms"
            )
            busy = await window(database, terminal, args.window)
            print(
                f"database, {args.clients} dashboards open: {busy:7.1f} transactions/s   (load {loadavg()})"
            )
            await boards.close()
        # Again with none: what the database does anyway (autovacuum after the changes) shows.
        again = await window(database, terminal, args.window)
        print(f"database, 0 dashboards open again: {again:6.1f} transactions/s   (load {loadavg()})")
        if args.pollers:
            stop = asyncio.Event()
            task = asyncio.create_task(pollers(base, args.pollers, stop))
            polled = await window(database, terminal, args.window)
            stop.set()
            await task
            print(
                f"database, {args.pollers} dashboards polling every 2 s instead: {polled:7.1f} transactions/s"
            )
    finally:
        proc.terminate()
        proc.wait(15)
        await database.dispose()
        await server_execute(url, f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')
    print(f"load average at the end: {loadavg()}")


if __name__ == "__main__":
    asyncio.run(main())
