"""Benchmark: TermPulse's checker beside Prometheus blackbox_exporter, same machine, same targets.

    apt-get install prometheus-blackbox-exporter wrk      # once, as root (this script installs nothing)
    .venv/bin/python bench/peers.py [--terminals 20000] [--duration 15] [--rounds 2] [--processes 2]

Both tools check the same loopback TCP targets (app.simulator.terminals, healthy plain-TCP
endpoints on 127.81.x.y:2000, in a separate process) with a TCP connect, at saturation, in
alternating rounds (blackbox, TermPulse, blackbox, TermPulse, ...), so a machine that is busy
with something else weighs on both alike:

* blackbox_exporter 0.23 (Debian), module `tcp_connect`, driven by wrk (2 threads, 200
  connections; a Lua script walks the targets and counts probes that did not answer
  `probe_success 1`). It keeps nothing: a probe's answer is its only record.
* TermPulse: `termpulse worker --processes N` on PostgreSQL, tcp monitors due every
  `--interval` seconds on as many of the terminals as make them due at 1.6x the probes/s
  blackbox_exporter just made (more than it can run: it is saturated, up to 1.6x). Not far
  more: a monitor checked later than its stale window (3 intervals; a result more than 5 s
  late) is unknown meanwhile, and every result is then a state change, which is no steady
  check (20,000 monitors due every 2 s on a machine that does 3,000 checks/s were that). On a
  machine where blackbox_exporter does more than --terminals / 3.2 probes/s, give more. Counted is what was
  **persisted**: check_results rows in the window, each with its state machine step, its
  monitor's new due time and lease released, in the database.

Printed per round: checks/s, CPU % of the tool's processes (100 % = one core; for TermPulse
the worker processes, and PostgreSQL's backends separately: they are the persistence), peak
RSS, failures; then the ratio of the medians. The bench database is dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil
from sqlalchemy import text
from sqlalchemy.engine import make_url

from app.config import Settings
from app.db import server_execute
from bench.checks import PORT, build_fleet, busy_seconds, cpu_seconds, persisted_results, reset_monitors
from bench.machine import describe

BENCH_DB = os.environ.get("TERMPULSE_BENCH_DB", "termpulse_bench_peers")  # a helper runs its own
ROOT = Path(__file__).resolve().parent.parent

BLACKBOX_CONFIG = """modules:
  tcp_connect:
    prober: tcp
    timeout: 5s
"""

# wrk: each thread walks the targets from its own offset; a probe that did not succeed is counted.
WRK_SCRIPT = """
local n = %(n)d
local threads = {}
local counter = 0
function setup(thread)
  thread:set("offset", counter * 7919)
  counter = counter + 1
  table.insert(threads, thread)
end
function init(args)
  i = tonumber(offset)
  failed = 0
end
function request()
  i = i + 1
  local k = i %% n
  local target = string.format("127.81.%%d.%%d:%(port)d", math.floor(k / 250), k %% 250 + 1)
  return wrk.format("GET", "/probe?module=tcp_connect&target=" .. target)
end
function response(status, headers, body)
  if status ~= 200 or not string.find(body, "probe_success 1", 1, true) then
    failed = failed + 1
  end
end
function done(summary, latency, requests)
  local f = 0
  for _, t in ipairs(threads) do f = f + t:get("failed") end
  io.write(string.format("WRK %%d %%d %%d %%f\\n", summary.requests, f,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.status
    + summary.errors.timeout, summary.duration / 1e6))
end
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tree(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def rss_mib(procs: list[psutil.Process]) -> float:
    total = 0
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += p.memory_info().rss
    return total / 2**20


def postgres_backends() -> list[psutil.Process]:
    """PostgreSQL's processes (WAL writer, checkpointer, and the backends of the bench database,
    not those of another database someone else is using): their CPU is the persistence."""
    out = []
    for p in psutil.process_iter(["name", "cmdline"]):
        name = p.info["name"] or ""
        cmdline = p.info["cmdline"] or [""]
        if not (name.startswith("postgres") or cmdline[0].startswith("postgres")):
            continue
        words = " ".join(cmdline).split()
        # a backend's title: "postgres: [15/main: ]user database host(port) activity"
        backend = "postgres:" in words and any(
            "(" in w and w.startswith(("127.", "[local]", "::1")) for w in words
        )
        if backend and BENCH_DB not in words:
            continue
        out.append(p)
    return out


# --- blackbox_exporter ---------------------------------------------------------------------------


def blackbox_round(n: int, duration: float, tmp: Path) -> dict:
    port = free_port()
    config = tmp / "blackbox.yml"
    config.write_text(BLACKBOX_CONFIG)
    script = tmp / "walk.lua"
    script.write_text(WRK_SCRIPT % {"n": n, "port": PORT})
    exporter = subprocess.Popen(
        [
            "prometheus-blackbox-exporter",
            f"--config.file={config}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=error",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("blackbox_exporter did not start") from None
                time.sleep(0.05)
        bb = psutil.Process(exporter.pid)
        cpu0, sys0, peak = cpu_seconds([bb]), busy_seconds(), 0.0
        wrk = subprocess.Popen(
            ["wrk", "-t2", "-c200", f"-d{duration:.0f}s", "-s", str(script), f"http://127.0.0.1:{port}/"],
            stdout=subprocess.PIPE,
            text=True,
        )
        wrk_proc = psutil.Process(wrk.pid)
        wrk_cpu = 0.0
        while wrk.poll() is None:
            peak = max(peak, rss_mib([bb]))
            wrk_cpu = max(wrk_cpu, cpu_seconds([wrk_proc]))
            time.sleep(0.2)
        cpu1, sys1 = cpu_seconds([bb]), busy_seconds()
        out = wrk.stdout.read() if wrk.stdout else ""
        line = next((x for x in out.splitlines() if x.startswith("WRK ")), None)
        if line is None:
            raise RuntimeError(f"wrk printed no summary:\n{out}")
        requests, failed, errors, wall = line.split()[1:]
        wall_s = float(wall)
        return {
            "rate": (int(requests) - int(failed)) / wall_s,
            "failed": int(failed) + int(errors),
            "cpu": 100 * (cpu1 - cpu0) / wall_s,
            "driver_cpu": 100 * wrk_cpu / wall_s,
            "pg_cpu": 0.0,
            "machine": 100 * (sys1 - sys0) / wall_s / (os.cpu_count() or 1),
            "rss": peak,
            "hot": None,
        }
    finally:
        exporter.send_signal(signal.SIGTERM)
        exporter.wait(10)


# --- TermPulse -----------------------------------------------------------------------------------


async def termpulse_round(db, url: str, n: int, args) -> dict:
    await reset_monitors(db, n, args.interval, all_due_now=False)
    # A worker that has run before: the hours up to now are rolled up. Else a new database's
    # first rollups go back to its first day's midnight, each hour reading every monitor's day
    # (a quarter of a worker's CPU in the measured window), which no steady checker does.
    async with db.engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO rolled_up_hours (bucket_start)"
                " VALUES (date_trunc('hour', now()) - interval '1 hour') ON CONFLICT DO NOTHING"
            )
        )
    env = {
        **os.environ,
        "TERMPULSE_DATABASE_URL": url,
        "TERMPULSE_SECRET_KEY": "bench-peers-" + "k" * 40,
        "TERMPULSE_ALLOWED_NETWORKS": "127.0.0.0/8",
        "TERMPULSE_WORKER_CONCURRENCY": str(args.concurrency),
        "TERMPULSE_CLAIM_BATCH": str(args.concurrency),
        "TERMPULSE_LOG_LEVEL": "WARNING",
    }
    worker = subprocess.Popen(  # noqa: ASYNC220 (started before the measured window)
        [str(Path(sys.executable).parent / "termpulse"), "worker", "--processes", str(args.processes)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        sup = psutil.Process(worker.pid)
        await asyncio.sleep(args.warmup)
        if worker.poll() is not None:
            raise RuntimeError(f"termpulse worker exited:\n{worker.stderr.read() if worker.stderr else ''}")
        procs, pg = tree(sup), postgres_backends()
        t0 = time.monotonic()
        stored0, failed0 = await persisted_results(db), await failures(db)
        cpu0, pg0, sys0, peak = cpu_seconds(procs), cpu_seconds(pg), busy_seconds(), 0.0
        while time.monotonic() - t0 < args.duration:
            peak = max(peak, rss_mib(tree(sup)))
            await asyncio.sleep(0.2)
        t1 = time.monotonic()
        stored1, failed1 = await persisted_results(db), await failures(db)
        cpu1, pg1, sys1 = cpu_seconds(procs), cpu_seconds(pg), busy_seconds()
    finally:
        worker.send_signal(signal.SIGTERM)
        await asyncio.to_thread(worker.wait, 30)
    async with db.sessionmaker() as s:
        hot = (
            await s.execute(
                text("SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'monitors'")
            )
        ).one()
    persisted_n, failed = stored1 - stored0, failed1 - failed0
    wall = t1 - t0
    return {
        "rate": (persisted_n - failed) / wall,
        "failed": failed,
        "cpu": 100 * (cpu1 - cpu0) / wall,
        "driver_cpu": 0.0,
        "pg_cpu": 100 * (pg1 - pg0) / wall,
        "machine": 100 * (sys1 - sys0) / wall / (os.cpu_count() or 1),
        "rss": peak,
        "hot": 100 * hot.n_tup_hot_upd / max(hot.n_tup_upd, 1),
        "monitors": n,
    }


async def failures(db) -> int:
    async with db.engine.connect() as conn:
        return int(await conn.scalar(text("SELECT count(*) FROM check_results WHERE outcome <> 'ok'")) or 0)


def show(tool: str, i: int, r: dict) -> None:
    extra = f"  wrk {r['driver_cpu']:4.0f}%" if r["driver_cpu"] else f"  PostgreSQL {r['pg_cpu']:4.0f}%"
    per_check = 10 * (r["cpu"] + r["pg_cpu"]) / max(r["rate"], 1)  # % of a core per check/s -> ms
    print(
        f"{tool:<17} round {i}: {r['rate']:7.0f} checks/s ok | failed {r['failed']:5d} | CPU {r['cpu']:4.0f}%"
        f"{extra} = {per_check:.2f} ms CPU per check | machine {r['machine']:3.0f}% busy"
        f" | RSS {r['rss']:5.0f} MiB"
        f" | load {os.getloadavg()[0]:.1f}"
        + (f" | monitors updates HOT {r['hot']:.0f}%" if r["hot"] is not None else "")
        + (f" | {r['monitors']} monitors" if "monitors" in r else ""),
        flush=True,
    )


async def main(args) -> int:
    from app.db import Database
    from app.migrate import migrate
    from app.process import raise_fd_limit

    missing = [tool for tool in ("prometheus-blackbox-exporter", "wrk") if shutil.which(tool) is None]
    if missing:
        print(
            f"not found: {', '.join(missing)}; install with: apt-get install prometheus-blackbox-exporter wrk"
        )
        return 2
    raise_fd_limit()
    base = make_url(
        os.environ.get("TERMPULSE_TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/x")
    )
    await server_execute(base, f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
    await server_execute(base, f'CREATE DATABASE "{BENCH_DB}"')
    url = base.set(database=BENCH_DB).render_as_string(hide_password=False)
    db = Database(url, pool_size=2, max_overflow=2)
    sim = subprocess.Popen(  # noqa: ASYNC220 (started once, before anything is measured)
        [sys.executable, str(ROOT / "bench/checks.py"), "--simulator", str(args.terminals)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        await migrate(db.engine)
        await build_fleet(db, args.terminals)
        if args.sql:  # an experiment on the schema or settings before measuring
            async with db.engine.begin() as conn:
                await conn.exec_driver_sql(args.sql)
        if (await asyncio.to_thread(sim.stdout.readline)).strip() != "ready":
            print("simulator failed to start", file=sys.stderr)
            return 1
        print(f"machine:   {describe()}")
        print(f"targets:   {args.terminals} simulated TCP terminals on 127.81.x.y:{PORT} (separate process)")
        print(
            f"TermPulse: termpulse worker --processes {args.processes}, concurrency {args.concurrency} each,"
            f" monitors due every {args.interval} s: 1.6x blackbox's last probes/s (saturated),"
            f" PostgreSQL, {args.warmup:.0f} s warm-up, {args.duration:.0f} s measured"
        )
        print(f"blackbox:  {version()} module tcp_connect, wrk -t2 -c200, {args.duration:.0f} s\n")
        rates: dict[str, list[float]] = {"blackbox_exporter": [], "TermPulse": []}
        monitors = args.terminals
        with tempfile.TemporaryDirectory() as tmp:
            for i in range(1, args.rounds + 1):
                if args.tool != "termpulse":
                    r = await asyncio.to_thread(blackbox_round, args.terminals, args.duration, Path(tmp))
                    show("blackbox_exporter", i, r)
                    rates["blackbox_exporter"].append(r["rate"])
                    monitors = min(args.terminals, math.ceil(1.6 * r["rate"] * args.interval))
                if args.tool != "blackbox":
                    r = await termpulse_round(db, url, monitors, args)
                    show("TermPulse", i, r)
                    rates["TermPulse"].append(r["rate"])
        if args.tool != "both":
            return 0
        bb, tp = (statistics.median(v) for v in rates.values())
        print(f"\nmedian: blackbox_exporter {bb:.0f} probes/s, TermPulse {tp:.0f} checks/s persisted:")
        print(f"TermPulse / blackbox_exporter = {tp / bb:.2f}x (target: at least 1.5x)")
        return 0
    finally:
        if sim.stdin:
            sim.stdin.close()
        try:
            sim.wait(10)
        except subprocess.TimeoutExpired:
            sim.kill()
        await db.dispose()
        await server_execute(base, f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')


def version() -> str:
    out = subprocess.run(
        ["prometheus-blackbox-exporter", "--version"], capture_output=True, text=True, check=False
    )
    first = (out.stdout or out.stderr).splitlines()
    return first[0].split(" (")[0] if first else "blackbox_exporter"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--terminals", type=int, default=20_000)
    parser.add_argument("--sql", help="SQL to run on the bench database before measuring (experiments)")
    parser.add_argument("--interval", type=int, default=2, help="TermPulse monitors' interval (s)")
    parser.add_argument("--duration", type=float, default=15.0, help="measured seconds per round")
    parser.add_argument("--warmup", type=float, default=10.0, help="TermPulse's seconds before measuring")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--tool", choices=("both", "termpulse", "blackbox"), default="both")
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--concurrency",
        type=int,
        default=Settings.model_fields["worker_concurrency"].default,
        help="TermPulse checks in flight per process (default: the product's)",
    )
    import uvloop

    sys.exit(uvloop.run(main(parser.parse_args())))
