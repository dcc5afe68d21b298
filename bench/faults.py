"""Benchmark: the checking engine under faults, on a private PostgreSQL it may stop.

    .venv/bin/python bench/faults.py [--terminals 10000] [--interval 10] [--only NAME]

* PostgreSQL: a private cluster made by this bench (initdb in a temporary folder, its own
  port, fsync off; run as the `postgres` user when started as root), so stopping it hurts
  nothing else; removed at the end.
* The fleet: `--terminals` simulated TCP terminals (bench/checks.py's simulator process,
  127.81.x.y:2000), one tcp monitor each at `--interval` s on its phase.

Scenarios (each on a fresh schedule):
  restart   one worker; PostgreSQL restarted (stop -m fast, start) mid-run
  stop-30s  one worker; PostgreSQL stopped for 30 s, then started
            both: results lost (the writer's count) and stored twice (same monitor and due
            time), monitors whose silence was recorded as unknown, and their unknown spell
            against the outage (started within interval + 5 s of the stop, ended after it)
  kill-9    two `termpulse worker --processes 1` processes; one killed with SIGKILL: time
            until every monitor it held a lease on has run again (target under 15 s)
  hung      500 more monitors whose targets accept and never answer a TLS handshake (5 s
            timeout), all due at one moment, beside the healthy fleet: the healthy checks'
            lag p99 (start minus due time, from the database) in the 20 s around it (target
            under 1 s)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import select, text

from bench.checks import address, build_fleet, pct, reset_monitors
from bench.machine import describe

PG_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)), None)
SECRET = "bench-faults-secret-key-0123456789abcdef"


class Cluster:
    """A throw-away PostgreSQL server: start(), stop(), restart()."""

    def __init__(self) -> None:
        assert PG_BIN is not None, "PostgreSQL server binaries not found under /usr/lib/postgresql"
        self.home = Path(tempfile.mkdtemp(prefix="termpulse-faults-"))
        self.data = self.home / "data"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        if os.geteuid() == 0:
            shutil.chown(self.home, "postgres")
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres")

    def _run(self, tool: str, *args: str) -> None:
        runner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run([*runner, str(PG_BIN / tool), *args], check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        opts = (
            f"-p {self.port} -k {self.home} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        )
        self._run("pg_ctl", "-D", str(self.data), "-o", opts, "-w", "-l", f"{self.data}.log", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    def remove(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "stop")
        shutil.rmtree(self.home, ignore_errors=True)


def _settings(url: str, args: argparse.Namespace):
    from app.config import Settings

    return Settings(
        database_url=url,
        secret_key=SECRET,
        allowed_networks=["127.0.0.0/8"],
        worker_concurrency=1000,
        claim_batch=1000,
    )


async def _counts(db) -> tuple[int, int]:
    """(results stored, (monitor, due time) pairs stored more than once)."""
    async with db.sessionmaker() as s:
        stored = await s.scalar(text("SELECT count(*) FROM check_results"))
        doubled = await s.scalar(
            text(
                "SELECT count(*) FROM (SELECT 1 FROM check_results"
                " GROUP BY monitor_id, due_at HAVING count(*) > 1) d"
            )
        )
    return stored or 0, doubled or 0


async def outage(db, cluster: Cluster, args: argparse.Namespace, down_s: float, name: str) -> None:
    from app.db import utcnow
    from app.monitoring.worker import Worker

    await reset_monitors(db, args.terminals, args.interval, False)
    worker = Worker(_settings(db.url, args), db, maintenance=False, cloud=False)
    await worker.start()
    try:
        await asyncio.sleep(args.interval * 2 + 5)  # every monitor up
        stopped_at = utcnow()
        await asyncio.to_thread(cluster.stop)
        await asyncio.sleep(down_s)
        await asyncio.to_thread(cluster.start)
        back_at = utcnow()
        await asyncio.sleep(args.interval * 3 + 10)  # the catch-up and a few rounds after it
    finally:
        await worker.stop()
    stored, doubled = await _counts(db)
    async with db.sessionmaker() as s:
        spells = (
            await s.execute(
                text(
                    "SELECT w.monitor_id, w.at AS went, min(b.at) AS back FROM state_changes w"
                    " LEFT JOIN state_changes b ON b.monitor_id = w.monitor_id AND b.at > w.at"
                    "  AND b.from_state = 'unknown'"
                    " WHERE w.to_state = 'unknown' AND w.at >= :t0 GROUP BY w.monitor_id, w.at"
                ),
                {"t0": stopped_at - timedelta(seconds=args.interval * 2)},
            )
        ).all()
        burst = await s.scalar(
            text(
                "SELECT coalesce(max(n), 0) FROM (SELECT count(*) AS n FROM check_results"
                " WHERE checked_at >= :a AND checked_at < :b GROUP BY date_trunc('second', checked_at)) c"
            ),
            {"a": back_at, "b": back_at + timedelta(seconds=30)},
        )
    monitors = {r.monitor_id for r in spells}
    slack = timedelta(seconds=args.interval + 5)
    covering = {
        r.monitor_id
        for r in spells
        if r.went <= stopped_at + slack and r.back is not None and r.back >= back_at
    }
    w = worker.writer
    print(
        f"{name:<9} PostgreSQL down {(back_at - stopped_at).total_seconds():5.1f} s: results stored {stored},"
        f" lost {w.lost} (failed batches {w.failed_batches}), stored twice {doubled};"
        f" monitors recorded unknown {len(monitors)} of {args.terminals},"
        f" their spell covering the outage {len(covering)}; the busiest second of the 30 s after it"
        f" ran {burst} checks (steady {args.terminals // args.interval}/s)",
        flush=True,
    )


async def kill9(db, cluster: Cluster, args: argparse.Namespace) -> None:
    from app.db import utcnow
    from app.inventory.models import Monitor
    from app.monitoring.models import CheckResult, WorkerBeat

    await reset_monitors(db, args.terminals, args.interval, False)
    env = {
        **os.environ,
        "TERMPULSE_DATABASE_URL": db.url,
        "TERMPULSE_SECRET_KEY": SECRET,
        "TERMPULSE_ALLOWED_NETWORKS": "127.0.0.0/8",
        "TERMPULSE_LOG_LEVEL": "WARNING",
    }
    cmd = [sys.executable, "-m", "app.cli", "worker", "--processes", "1"]
    procs = [subprocess.Popen(cmd, env=env) for _ in range(2)]  # noqa: ASYNC220
    try:
        await asyncio.sleep(args.interval * 2 + 10)
        victim = procs[0]
        async with db.sessionmaker() as s:
            owner = await s.scalar(select(WorkerBeat.id).where(WorkerBeat.pid == victim.pid))
            held = set((await s.scalars(select(Monitor.id).where(Monitor.lease_owner == owner))).all())
        killed_at, t0 = utcnow(), time.monotonic()
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        took = None
        while time.monotonic() - t0 < 90:
            async with db.sessionmaker() as s:
                ran = set(
                    (
                        await s.scalars(
                            select(CheckResult.monitor_id)
                            .where(CheckResult.monitor_id.in_(held), CheckResult.checked_at > killed_at)
                            .distinct()
                        )
                    ).all()
                )
            if ran >= held:
                took = time.monotonic() - t0
                break
            await asyncio.sleep(0.25)
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            p.wait(30)
    _, doubled = await _counts(db)
    result = f"{took:.1f} s" if took is not None else "not within 90 s"
    print(
        f"kill-9    one of two worker processes killed holding {len(held)} leases: all run again by the"
        f" other in {result} (lease 10 s, renewed every 3.3 s); stored twice {doubled}",
        flush=True,
    )


async def hung(db, args: argparse.Namespace) -> None:
    from app.db import utcnow
    from app.inventory.models import Monitor
    from app.monitoring.worker import Worker

    async def silent(reader, writer):
        await asyncio.sleep(60)
        writer.close()

    tarpits = [await asyncio.start_server(silent, address(args.terminals + i), 2443) for i in range(10)]
    await reset_monitors(db, args.terminals, args.interval, False)
    due = utcnow() + timedelta(seconds=args.interval + 5)
    async with db.engine.begin() as conn:
        store = await conn.scalar(text("SELECT min(id) FROM stores"))
        await conn.execute(
            Monitor.__table__.insert(),
            [
                {
                    "key": f"hung:{i}",
                    "store_id": store,
                    "kind": "tls",
                    "target": f"{address(args.terminals + i % 10)}:2443",
                    "params": {"server_name": "hung.example"},
                    "interval_s": 3600,
                    "timeout_s": 5.0,
                    "phase_ms": 0,
                    "next_due_at": due,
                    "state": "unknown",
                    "state_since": utcnow(),
                }
                for i in range(500)
            ],
        )
    worker = Worker(_settings(db.url, args), db, maintenance=False, cloud=False)
    await worker.start()
    try:
        await asyncio.sleep(args.interval + 5 + 15)
    finally:
        await worker.stop()
        for t in tarpits:
            t.close()
    async with db.sessionmaker() as s:
        rows = (
            await s.execute(
                text(
                    "SELECT extract(epoch FROM r.checked_at - r.due_at) FROM check_results r"
                    " JOIN monitors m ON m.id = r.monitor_id"
                    " WHERE m.kind = 'tcp' AND r.due_at BETWEEN :a AND :b"
                ),
                {"a": due - timedelta(seconds=5), "b": due + timedelta(seconds=15)},
            )
        ).scalars()
        lags = [float(v) for v in rows]
    print(
        f"hung      500 hung TLS targets due at one moment beside {args.terminals} healthy monitors:"
        f" healthy lag p50 {pct(lags, 50) * 1000:.0f} ms, p99 {pct(lags, 99) * 1000:.0f} ms,"
        f" max {max(lags or [0]) * 1000:.0f} ms ({len(lags)} healthy checks due in those 20 s)",
        flush=True,
    )


async def main(args: argparse.Namespace) -> int:
    from app.db import Database, server_execute
    from app.migrate import migrate
    from app.process import raise_fd_limit

    raise_fd_limit()
    cluster = Cluster()
    cluster.start()
    sim = subprocess.Popen(  # noqa: ASYNC220 (started once, before anything is measured)
        [sys.executable, str(Path(__file__).with_name("checks.py")), "--simulator", str(args.terminals)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        await server_execute(cluster.url(), "CREATE DATABASE faults")
        db = Database(cluster.url("faults"), pool_size=5, max_overflow=10)
        await migrate(db.engine)
        await build_fleet(db, args.terminals)
        if (await asyncio.to_thread(sim.stdout.readline)).strip() != "ready":
            print("simulator failed to start", file=sys.stderr)
            return 1
        print(f"machine:  {describe()}; load average {os.getloadavg()[0]:.1f} at the start")
        print(
            f"fleet:    {args.terminals} simulated TCP terminals, one tcp monitor each"
            f" every {args.interval} s;"
            f" private PostgreSQL on 127.0.0.1:{cluster.port}\n",
            flush=True,
        )
        plan = {
            "restart": lambda: outage(db, cluster, args, 0.0, "restart"),
            "stop-30s": lambda: outage(db, cluster, args, 30.0, "stop-30s"),
            "kill-9": lambda: kill9(db, cluster, args),
            "hung": lambda: hung(db, args),
        }
        for name, run in plan.items():
            if args.only in (None, name):
                await run()
        await db.dispose()
        return 0
    finally:
        sim.stdin.close()
        try:
            sim.wait(10)
        except subprocess.TimeoutExpired:
            sim.kill()
        cluster.remove()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--terminals", type=int, default=10_000)
    parser.add_argument("--interval", type=int, default=10)
    parser.add_argument("--only", choices=("restart", "stop-30s", "kill-9", "hung"))
    import uvloop

    sys.exit(uvloop.run(main(parser.parse_args())))
