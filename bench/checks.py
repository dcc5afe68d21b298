"""Benchmark: the real scheduler and writer against 10,000 simulated TCP terminals.

    .venv/bin/python bench/checks.py [--terminals 10000] [--duration 40] [--profile]

* PostgreSQL: its own database (`termpulse_bench_checks` on the server of
  TERMPULSE_TEST_DATABASE_URL, default the local one), migrated, dropped at the end.
* The terminals: helper simulator endpoints (app.simulator.terminals, behaviour healthy,
  plain TCP) on 127.81.x.y:2000, in a separate process, so the worker's CPU is its own.
* The worker: app.monitoring.worker.Worker as `termpulse worker` runs it (uvloop, the
  APScheduler sweep every second, the batched writer), tcp monitors with the probe's
  default parameters, one store per 10 terminals.

Scenarios, each on a fresh schedule:
  steady-10s   10,000 monitors at a 10 s interval (1,000 checks/s due): lag p50/p99
  steady-5s    the same at 5 s (2,000 checks/s due): can it sustain 2,000 checks/s?
  backlog      10,000 monitors all due at once: how fast a backlog is drained
Figures: checks/s claimed, run and persisted (counted in the database), lag = start minus
due time, CPU % of the worker process (100 % = one core), of the simulator process, and how
busy the whole machine was (PostgreSQL included; 100 % = all cores), peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil
from sqlalchemy import select, text
from sqlalchemy.engine import make_url

from app.db import server_execute
from bench.machine import describe

BENCH_DB = "termpulse_bench_checks"
ALERTS = False  # --alerts
PORT = 2000


def address(i: int) -> str:
    return f"127.81.{i // 250}.{i % 250 + 1}"


# --- the simulator process ---------------------------------------------------------------


def run_simulator(n: int) -> None:
    import uvloop

    from app.simulator.terminals import TerminalSimulator, TerminalSpec

    async def main() -> None:
        sim = TerminalSimulator()
        await sim.start(TerminalSpec(f"BENCH-{i}", address(i), PORT, "tcp") for i in range(n))
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the parent closes it
        await sim.stop()

    uvloop.run(main())


# --- helpers ---------------------------------------------------------------------------------


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


def busy_seconds() -> float:
    """CPU seconds the whole machine spent busy (all cores; PostgreSQL included)."""
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def cpu_seconds(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total


# --- the fleet ---------------------------------------------------------------------------------


async def build_fleet(db, n: int) -> None:
    from app.inventory.models import Store, Terminal

    stores = [
        {"code": f"B-{s:05d}", "name": f"Bench store {s}", "status": "unknown"} for s in range(n // 10 + 1)
    ]
    async with db.engine.begin() as conn:
        await conn.execute(Store.__table__.insert(), stores)
        ids = dict((await conn.execute(select(Store.code, Store.id))).all())
        await conn.execute(
            Terminal.__table__.insert(),
            [
                {
                    "store_id": ids[f"B-{i // 10:05d}"],
                    "poiid": f"BENCH-{i}",
                    "model": "P400",
                    "serial": str(i),
                    "integration": "local",
                    "lan_host": address(i),
                    "lan_port": PORT,
                    "local_api": "tcp",
                    "status": "unknown",
                    "cloud_state": "not_enabled",
                }
                for i in range(n)
            ],
        )


async def reset_monitors(db, n: int, interval: int, all_due_now: bool) -> None:
    """Fresh monitors: one tcp monitor for each of the first `n` terminals, on its phase (or
    all due now)."""
    from app.db import utcnow
    from app.inventory.models import Monitor, Terminal
    from app.schedule import first_due_at, phase_ms

    async with db.engine.begin() as conn:
        await conn.execute(
            text("TRUNCATE check_results, state_changes, rollups, monitors RESTART IDENTITY CASCADE")
        )
        await conn.execute(Terminal.__table__.update().values(status="unknown", last_seen_at=None))
        query = select(Terminal.id, Terminal.store_id, Terminal.lan_host).order_by(Terminal.id).limit(n)
        terminals = (await conn.execute(query)).all()
        start = utcnow() + timedelta(seconds=3)
        rows = []
        for tid, sid, host in terminals:
            key = f"t{tid}:tcp"
            phase = phase_ms(key, interval)
            rows.append(
                {
                    "key": key,
                    "store_id": sid,
                    "terminal_id": tid,
                    "kind": "tcp",
                    "target": f"{host}:{PORT}",
                    "params": {},
                    "interval_s": interval,
                    "timeout_s": 5.0,
                    "phase_ms": phase,
                    "next_due_at": start if all_due_now else first_due_at(start, interval, phase),
                    "state": "unknown",
                    "state_since": utcnow(),
                }
            )
        for i in range(0, len(rows), 5000):
            await conn.execute(Monitor.__table__.insert(), rows[i : i + 5000])
    async with db.engine.connect() as conn:
        await conn.execute(text("ANALYZE monitors"))
        await conn.commit()


async def persisted_results(db) -> int:
    """Results in the database, in one snapshot: raw rows plus the results folded into their
    monitor's day (latency_days, app.monitoring.compact: plain successes counted, others kept)."""
    from app.monitoring.compact import Day, Kept

    async with db.engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="REPEATABLE READ")
        async with conn.begin():
            raw = await conn.scalar(text("SELECT count(*) FROM check_results"))
            days = (await conn.execute(text("SELECT buckets, recent, kept FROM latency_days"))).all()
    folded = sum(sum(Day.unpack(b, r).counts) + len(Kept.unpack(k).entries) for b, r, k in days)
    return int(raw or 0) + folded


# --- a scenario --------------------------------------------------------------------------------


async def scenario(
    name: str,
    db,
    settings,
    sim_proc: psutil.Process,
    n: int,
    interval: int,
    all_due_now: bool,
    warmup: float,
    duration: float,
    profile: bool,
) -> dict:
    from app.monitoring.worker import Worker

    await reset_monitors(db, n, interval, all_due_now)
    jobs = ()
    if ALERTS:  # --alerts: the alert jobs on the worker too, as serve and worker run them
        from app.alerts.runner import alert_jobs

        jobs = alert_jobs(settings, db)
    worker = Worker(settings, db, keep_lag=True, maintenance=False, jobs=jobs)
    me = psutil.Process()
    await worker.start()
    try:
        if all_due_now:
            # Backlog: time from the first claim to the last result persisted.
            # Polling the worker's counters: it has no event to await.
            while worker.dispatcher.stats.claimed == 0:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            t0 = time.monotonic()
            cpu0, sim0, sys0 = cpu_seconds([me]), cpu_seconds([sim_proc]), busy_seconds()
            lag_from = 0
            while worker.writer.written < n and time.monotonic() - t0 < 120:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
            t1 = time.monotonic()
        else:
            await asyncio.sleep(warmup)
            t0 = time.monotonic()
            cpu0, sim0, sys0 = cpu_seconds([me]), cpu_seconds([sim_proc]), busy_seconds()
            st0 = (worker.dispatcher.stats.claimed, worker.dispatcher.stats.started, worker.writer.written)
            db0 = (
                worker.dispatcher.stats.claims,
                worker.dispatcher.stats.claim_s,
                worker.writer.batches,
                worker.writer.write_s,
            )
            lag_from = len(worker.dispatcher.stats.lag_s)
            if profile:
                import cProfile

                prof = cProfile.Profile()
                prof.enable()
            await asyncio.sleep(duration)
            if profile:
                prof.disable()
            t1 = time.monotonic()
        cpu1, sim1, sys1 = cpu_seconds([me]), cpu_seconds([sim_proc]), busy_seconds()
        stats = worker.dispatcher.stats
        lags = stats.lag_s[lag_from:]
        if all_due_now:
            st0, db0 = (0, 0, 0), (0, 0.0, 0, 0.0)
        db1 = (stats.claims, stats.claim_s, worker.writer.batches, worker.writer.write_s)
        st1 = (stats.claimed, stats.started, worker.writer.written)
    finally:
        await worker.stop()
    stored_total = await persisted_results(db)  # the worker has stopped: every result written
    async with db.sessionmaker() as s:
        doubles = await s.scalar(
            text(
                "SELECT count(*) FROM"
                " (SELECT monitor_id, due_at FROM check_results GROUP BY 1, 2 HAVING count(*) > 1) d"
            )
        )
    wall = t1 - t0
    out = {
        "name": name,
        "wall": wall,
        "claimed": (st1[0] - st0[0]) / wall,
        "run": (st1[1] - st0[1]) / wall,
        "written": (st1[2] - st0[2]) / wall,
        "in_db": stored_total == worker.writer.written,
        "lag_p50": pct(lags, 50),
        "lag_p99": pct(lags, 99),
        "lag_max": max(lags or [0]),
        "cpu": 100 * (cpu1 - cpu0) / wall,
        "sim_cpu": 100 * (sim1 - sim0) / wall,
        "machine": 100 * (sys1 - sys0) / wall / os.cpu_count(),
        "failed_batches": worker.writer.failed_batches,
        "dropped": worker.writer.dropped,
        "doubles": doubles,
        "overloaded": stats.overloaded,
        "samples": len(lags),
        "claims": db1[0] - db0[0],
        "claim_busy": (db1[1] - db0[1]) / wall,
        "batches": db1[2] - db0[2],
        "write_busy": (db1[3] - db0[3]) / wall,
    }
    if not all_due_now and profile:
        import pstats

        print(f"\n--- cProfile of the worker during {name} (top 25 by own time) ---")
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
    return out


async def main(args) -> int:
    import uvloop  # noqa: F401

    from app.config import Settings
    from app.db import Database
    from app.migrate import migrate
    from app.process import raise_fd_limit

    limit = raise_fd_limit()
    base = make_url(
        os.environ.get("TERMPULSE_TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/x")
    )
    await server_execute(base, f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
    await server_execute(base, f'CREATE DATABASE "{BENCH_DB}"')
    url = base.set(database=BENCH_DB).render_as_string(hide_password=False)
    settings = Settings(
        database_url=url,
        allowed_networks=["127.0.0.0/8"],
        worker_concurrency=args.concurrency,
        claim_batch=args.batch,
        lease_s=30,
    )
    db = Database(url, pool_size=5, max_overflow=5)
    sim = subprocess.Popen(  # noqa: ASYNC220 (started once, before anything is measured)
        [sys.executable, __file__, "--simulator", str(args.terminals)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        await migrate(db.engine)
        await build_fleet(db, args.terminals)
        line = await asyncio.to_thread(sim.stdout.readline)
        if line.strip() != "ready":
            print("simulator failed to start", file=sys.stderr)
            return 1
        print(f"machine:  {describe()}")
        print(
            f"fleet:    {args.terminals} simulated TCP terminals on 127.81.x.y:{PORT} (separate process), "
            f"{args.terminals // 10 + 1} stores; RLIMIT_NOFILE {limit}"
        )
        print(
            f"worker:   concurrency {args.concurrency}, claim batch {args.batch}, uvloop, PostgreSQL "
            f"{base.host}:{base.port or 5432}/{BENCH_DB}\n"
        )
        sim_proc = psutil.Process(sim.pid)
        results = []
        plan = [("steady-10s", 10, False), ("steady-5s", 5, False), ("backlog", 60, True)]
        if args.only:
            plan = [p for p in plan if p[0] == args.only]
        for name, interval, backlog in plan:
            r = await scenario(
                name,
                db,
                settings,
                sim_proc,
                args.terminals,
                interval,
                backlog,
                args.warmup,
                args.duration,
                args.profile and name == "steady-5s",
            )
            results.append(r)
            print(
                f"{name:<11} {r['wall']:5.1f} s: checks/s claimed {r['claimed']:7.0f}  run {r['run']:7.0f}  "
                f"written {r['written']:7.0f} (all in the db: {'yes' if r['in_db'] else 'NO'}) | lag p50 "
                f"{r['lag_p50'] * 1000:6.1f} ms  p99 {r['lag_p99'] * 1000:6.1f} ms"
                f"  max {r['lag_max'] * 1000:6.0f} ms"
                f" | CPU worker {r['cpu']:4.0f}%  simulator {r['sim_cpu']:4.0f}%"
                f"  machine {r['machine']:3.0f}% busy"
                f" | doubles {r['doubles']} dropped {r['dropped']}"
                f" failed batches {r['failed_batches']}"
                f" overloaded {r['overloaded']}",
                flush=True,
            )
            print(
                f"{'':<11} claims {r['claims']}"
                f" ({100 * r['claim_busy']:.0f}% of the time in claim transactions), "
                f"write batches {r['batches']}"
                f" (avg {r['written'] * r['wall'] / max(r['batches'], 1):.0f} results, "
                f"{100 * r['write_busy']:.0f}% of the time in write transactions)",
                flush=True,
            )
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"\npeak RSS of the worker process: {rss:.0f} MiB")
        return 0
    finally:
        sim.stdin.close()
        try:
            sim.wait(10)
        except subprocess.TimeoutExpired:
            sim.kill()
        await db.dispose()
        if not args.keep:
            await server_execute(base, f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--terminals", type=int, default=10_000)
    parser.add_argument("--duration", type=float, default=30.0, help="measured seconds per steady scenario")
    parser.add_argument("--warmup", type=float, default=15.0)
    parser.add_argument("--concurrency", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--only", choices=("steady-10s", "steady-5s", "backlog"))
    parser.add_argument("--profile", action="store_true", help="cProfile the worker during steady-5s")
    parser.add_argument("--keep", action="store_true", help="keep the bench database")
    parser.add_argument("--alerts", action="store_true", help="run the alert jobs on the worker too")
    parser.add_argument("--simulator", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    ALERTS = args.alerts
    if args.simulator:
        run_simulator(args.simulator)
        sys.exit(0)
    import logging

    logging.basicConfig(level=logging.WARNING)
    import uvloop

    sys.exit(uvloop.run(main(args)))
