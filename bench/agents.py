"""Benchmark: one TermPulse server taking the results of 2,000 store agents over the real protocol.

    .venv/bin/python bench/agents.py [--agents 2000] [--warmup 75] [--duration 90] [--profile]

* PostgreSQL: its own database (`termpulse_bench_agents_<pid>` on the server of
  TERMPULSE_TEST_DATABASE_URL, default the local one), migrated, dropped at the end.
* The fleet: one store per agent, network profile fullsteam-ingenico (2 destinations: dns and
  tcp each, tls for the one on 443) and 4 LAN terminals (adyen_local: tcp + tls), so 13
  non-cloud monitors per store at a 60 s
  interval, each on its stable phase. Every agent is enrolled with app.agents.service.create_agent
  (the real token, hashed on the server).
* The server: `termpulse serve` (the real app, app.main.create_app under uvicorn, uvloop and
  httptools) in its own process, with its embedded worker (the agent-health job every 5 s, the
  sweeps); `--worker separate` runs `serve --no-worker` plus one `termpulse worker` instead.
* The agents: all of them in ONE separate process (uvloop), each with its own httpx.AsyncClient
  (keep-alive) and bearer token, speaking /api/agent/v1 as app/agent/runner.py does: GET /config
  at start (staggered over --ramp s), POST /heartbeat every heartbeat_s (15 s), the long poll
  GET /work?wait=25 always open (--no-long-poll to leave it out), and results uploaded with the
  runner's policy: a new result wakes the uploader, which lingers 1 s (--linger) to gather more,
  then POSTs everything queued (up to 500) in one batch, seq increasing per agent instance; a
  result queued while a POST is in flight goes in the next POST at once. A check "runs" at its
  due time and takes no time; 1 % of the monitors flap (2 failures, 2 successes, ...), so state
  changes go through the writer too. --resend makes that fraction of the batches be sent a
  second time (an answer lost on the way), which the server must count as duplicates.

Measured over a steady window after the warm-up (every monitor has reported at least once):
* results/s accepted (the server's answers), HTTP requests/s by call, errors (non-2xx and
  transport failures);
* the server process's CPU (utime+stime from /proc/<pid>/stat, % of one core) and RSS, and
  the CPU of PostgreSQL, of the agents' process and of the whole machine;
* results call latency p50/p99 (request sent -> answer);
* result -> state p50/p99, measured two ways:
  - by the agents: from the moment a result is made to the answer of the POST that carried it.
    The results call applies the results (results, monitor state, state changes) and commits
    before it answers, so the dashboard's state is visible no later than that: an upper bound;
  - by a probe on the database: 500 sampled monitors' last_checked_at polled every 100 ms;
    latency = when a new value is first seen - that value (the result's checked_at moved onto
    the server's clock by the agent's measured skew, here a few ms on one machine).
Finally exactly-once is checked: results stored (check_results rows plus the results folded
into latency_days) = results the server accepted, no (monitor, due time) stored twice among
the rows, every agent's last_seq = the highest seq it had acknowledged.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import heapq
import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

BENCH_DB = "termpulse_bench_agents"
ROOT = Path(__file__).resolve().parent.parent
API = "/api/agent/v1"
TERMINALS_PER_STORE = 4  # adyen_local: tcp + tls each; plus fullsteam-ingenico's 4 store checks = 12
CLK_TCK = os.sysconf("SC_CLK_TCK")


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


# --- the agents' process ---------------------------------------------------------------------


@dataclass
class Stats:
    calls: list[tuple[str, float, float, int]] = field(default_factory=list)  # (call, end, seconds, status)
    results: list[tuple[float, float]] = field(default_factory=list)  # (acknowledged at, made at) wall
    accepted: list[tuple[float, int, int]] = field(default_factory=list)  # (end, accepted, duplicates)
    failures: list[tuple[str, float, str]] = field(default_factory=list)  # (call, end, exception)
    resent: int = 0
    resent_duplicates: int = 0


STEPS = {
    "dns": lambda target: [{"step": "resolve", "ok": True, "ms": 3.1, "detail": f"{target} -> 203.0.113.7"}],
    "tcp": lambda target: [
        {"step": "resolve", "ok": True, "ms": 0.1, "detail": target.rsplit(":", 1)[0]},
        {"step": "connect", "ok": True, "ms": 1.4, "detail": f"connected to {target}"},
    ],
    "tls": lambda target: [
        {"step": "connect", "ok": True, "ms": 1.2, "detail": f"connected to {target}"},
        {"step": "tls", "ok": True, "ms": 6.8, "detail": "TLSv1.3, self-signed certificate accepted"},
    ],
}


@dataclass
class SimMonitor:
    id: int
    kind: str
    target: str
    interval_s: int
    phase_ms: int
    flapping: bool
    runs: int = 0


class SimAgent:
    """One store agent: its own HTTP client and token, heartbeats, long poll, batched results."""

    def __init__(self, base_url: str, token: str, args: argparse.Namespace, stats: Stats, rng: random.Random):
        import httpx

        self.http = httpx.AsyncClient(
            base_url=base_url + API,
            headers={"Authorization": f"Bearer {token}", "User-Agent": "termpulse-agent/bench"},
            timeout=30.0,
            trust_env=False,
            limits=httpx.Limits(max_connections=8, max_keepalive_connections=4, keepalive_expiry=60),
        )
        self.args, self.stats, self.rng = args, stats, rng
        self.instance = secrets.token_hex(8)
        self.seq = 0
        self.acked = 0
        self.pending: list[tuple[int, float, str]] = []  # (seq, made at wall, result JSON)
        self.wake = asyncio.Event()
        self.monitors: list[SimMonitor] = []
        self.heartbeat_s = 15.0
        self.etag: str | None = None
        self.tasks: list[asyncio.Task[None]] = []

    async def call(self, name: str, method: str, path: str, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            response = await self.http.request(method, path, **kwargs)
        except Exception as exc:
            self.stats.failures.append((name, time.time(), type(exc).__name__))
            return None
        self.stats.calls.append((name, time.time(), time.perf_counter() - t0, response.status_code))
        return response

    async def configure(self) -> None:
        while True:
            r = await self.call("config", "GET", "/config")
            if r is not None and r.status_code == 200:
                break
            await asyncio.sleep(1 + self.rng.random())
        body = r.json()
        self.etag = r.headers.get("ETag")
        self.heartbeat_s = float(body["heartbeat_s"])
        self.monitors = [
            SimMonitor(
                m["id"],
                m["kind"],
                m["target"],
                m["interval_s"],
                m["phase_ms"],
                self.rng.random() < self.args.flapping,
            )
            for m in body["monitors"]
        ]

    def start(self) -> None:
        self.tasks = [
            asyncio.create_task(self.control_loop()),
            asyncio.create_task(self.upload_loop()),
        ]
        if not self.args.no_long_poll:
            self.tasks.append(asyncio.create_task(self.work_loop()))

    def make_result(self, m: SimMonitor, due: datetime) -> None:
        """The check ran at its due time: queue its result, as the runner's _queue does."""
        m.runs += 1
        fail = m.flapping and (m.runs // 2) % 2 == 1
        now = datetime.now(UTC)
        steps = STEPS[m.kind](m.target)
        if fail:
            steps[-1] = {**steps[-1], "ok": False, "detail": "timed out after 5.0 s"}
        self.seq += 1
        body = {
            "seq": self.seq,
            "monitor_id": m.id,
            "due_at": due.isoformat(),
            "checked_at": now.isoformat(),
            "outcome": "fail" if fail else "ok",
            "latency_ms": round(self.rng.uniform(1.0, 40.0), 3),
            "steps": steps,
            "diagnosis": "tcp_timeout" if fail else None,
            "detail": "connection timed out (filtered)" if fail else "",
        }
        self.pending.append((self.seq, time.time(), json.dumps(body, separators=(",", ":"))))
        self.wake.set()

    async def control_loop(self) -> None:
        await asyncio.sleep(self.rng.uniform(0, self.heartbeat_s))
        while True:
            body = {
                "version": "bench",
                "instance": self.instance,
                "clock": datetime.now(UTC).isoformat(),
                "queue": len(self.pending),
                "dropped": 0,
            }
            r = await self.call("heartbeat", "POST", "/heartbeat", json=body)
            if r is not None and r.status_code == 200:
                answer = r.json()
                self._ack(int(answer["last_seq"]))
                if answer.get("config_etag") != self.etag:
                    r = await self.call(
                        "config", "GET", "/config", headers={"If-None-Match": self.etag or ""}
                    )
            await asyncio.sleep(self.heartbeat_s)

    def _ack(self, last_seq: int) -> None:
        if last_seq <= self.acked:
            return
        self.acked = last_seq
        now = time.time()
        keep = []
        for seq, made, text in self.pending:
            if seq <= last_seq:
                self.stats.results.append((now, made))
            else:
                keep.append((seq, made, text))
        self.pending = keep

    async def upload_loop(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            if 0 < len(self.pending) < 500:
                await asyncio.sleep(self.args.linger)
            while self.pending:
                batch = self.pending[:500]
                body = (
                    f'{{"instance":"{self.instance}","results":[' + ",".join(t for _, _, t in batch) + "]}"
                ).encode()
                r = await self.call(
                    "results", "POST", "/results", content=body, headers={"Content-Type": "application/json"}
                )
                if r is None or r.status_code != 200:
                    await asyncio.sleep(1.0)  # the runner backs off; the error is counted
                    continue
                answer = r.json()
                self.stats.accepted.append((time.time(), answer["accepted"], answer["duplicates"]))
                self._ack(int(answer["last_seq"]))
                if self.args.resend and self.rng.random() < self.args.resend:
                    # The answer was "lost": the same batch again. Nothing may be written twice.
                    again = await self.call(
                        "results",
                        "POST",
                        "/results",
                        content=body,
                        headers={"Content-Type": "application/json"},
                    )
                    if again is not None and again.status_code == 200:
                        a = again.json()
                        self.stats.accepted.append((time.time(), a["accepted"], a["duplicates"]))
                        self.stats.resent += 1
                        self.stats.resent_duplicates += a["duplicates"]

    async def work_loop(self) -> None:
        while True:
            r = await self.call("work", "GET", "/work", params={"wait": 25}, timeout=40.0)
            if r is None or r.status_code not in (200, 204):
                await asyncio.sleep(1.0)


async def schedule(agents: list[SimAgent]) -> None:
    """Every monitor's due times on its phase (app.schedule), one heap for the whole fleet."""
    from app.schedule import first_due_at, next_due_at

    now = datetime.now(UTC)
    heap: list[tuple[datetime, int, int]] = []
    for a_i, agent in enumerate(agents):
        for m_i, m in enumerate(agent.monitors):
            heap.append((first_due_at(now, m.interval_s, m.phase_ms), a_i, m_i))
    heapq.heapify(heap)
    while heap:
        due, a_i, m_i = heap[0]
        wait = (due - datetime.now(UTC)).total_seconds()
        if wait > 0:
            await asyncio.sleep(min(wait, 0.05))
            continue
        heapq.heappop(heap)
        agent = agents[a_i]
        m = agent.monitors[m_i]
        agent.make_result(m, due)
        heapq.heappush(heap, (next_due_at(due, m.interval_s, m.phase_ms, datetime.now(UTC)), a_i, m_i))


def report(stats: Stats, agents: list[SimAgent], t0: float, t1: float) -> dict[str, Any]:
    wall = t1 - t0
    inside = [c for c in stats.calls if t0 <= c[1] < t1]
    by_call: dict[str, list[tuple[str, float, float, int]]] = {}
    for c in inside:
        by_call.setdefault(c[0], []).append(c)
    lat = {
        name: {
            "per_s": len(cs) / wall,
            "p50_ms": 1000 * pct([c[2] for c in cs], 50),
            "p99_ms": 1000 * pct([c[2] for c in cs], 99),
            "max_ms": 1000 * max(c[2] for c in cs),
        }
        for name, cs in by_call.items()
        if name != "work"
    }
    errors: dict[str, int] = {}
    for c in inside:
        if c[3] >= 300 and not (c[0] == "config" and c[3] == 304):
            errors[f"{c[0]} {c[3]}"] = errors.get(f"{c[0]} {c[3]}", 0) + 1
    for name, at, exc in stats.failures:
        if t0 <= at < t1:
            errors[f"{name} {exc}"] = errors.get(f"{name} {exc}", 0) + 1
    r2s = [ack - made for ack, made in stats.results if t0 <= ack < t1]
    accepted = sum(a for at, a, _ in stats.accepted if t0 <= at < t1)
    return {
        "requests_per_s": len(inside) / wall,
        "calls": lat,
        "work_per_s": len(by_call.get("work", [])) / wall,
        "errors": errors,
        "accepted_per_s": accepted / wall,
        "r2s_n": len(r2s),
        "r2s_p50_ms": 1000 * pct(r2s, 50),
        "r2s_p99_ms": 1000 * pct(r2s, 99),
        "r2s_max_ms": 1000 * max(r2s or [0]),
        "results_per_post": accepted / max(1, len(by_call.get("results", []))),
    }


def totals(stats: Stats, agents: list[SimAgent]) -> dict[str, Any]:
    return {
        "made": sum(a.seq for a in agents),
        "pending": sum(len(a.pending) for a in agents),
        "accepted": sum(a for _, a, _ in stats.accepted),
        "duplicates": sum(d for _, _, d in stats.accepted),
        "resent": stats.resent,
        "resent_duplicates": stats.resent_duplicates,
        "seq": {a.instance: a.seq for a in agents},
        "errors_total": sum(1 for c in stats.calls if c[3] >= 300 and c[3] != 304) + len(stats.failures),
    }


def run_agents(args: argparse.Namespace) -> None:
    # httpcore asks sniffio which event loop runs at every lock it takes; without sniffio
    # installed (anyio no longer needs it) each ask is a failed import that searches sys.path,
    # which made this process spend a third of its CPU in importlib. Failing fast says the
    # same ("asyncio").
    sys.modules.setdefault("sniffio", None)  # type: ignore[arg-type]
    import uvloop

    from app.process import raise_fd_limit, tune_gc

    raise_fd_limit()
    tokens = json.loads(Path(args.tokens).read_text())

    async def main() -> None:
        stats = Stats()
        rng = random.Random(args.seed)
        agents = [SimAgent(args.server, t, args, stats, random.Random(rng.random())) for t in tokens]
        ramp = args.ramp / max(1, len(agents))

        async def bring_up(i: int, agent: SimAgent) -> None:
            await asyncio.sleep(i * ramp)
            await agent.configure()
            agent.start()

        ups = [asyncio.create_task(bring_up(i, a)) for i, a in enumerate(agents)]
        await asyncio.wait(ups, timeout=args.ramp + 60)  # a server that cannot keep up: go on anyway
        configured = [a for a in agents if a.monitors]
        # 2,000 agents' clients in one process (each real agent is a process of its own): the
        # collector's full passes over that heap would weigh on this process's timings, so it is
        # set up as the server's is.
        tune_gc()
        scheduler = asyncio.create_task(schedule(configured))
        print(
            json.dumps({"agents": len(configured), "monitors": sum(len(a.monitors) for a in configured)}),
            flush=True,
        )
        loop = asyncio.get_running_loop()
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            words = line.split()
            if not words or words[0] == "stop":
                break
            if words[0] == "report":
                print(json.dumps(report(stats, agents, float(words[1]), float(words[2]))), flush=True)
            elif words[0] == "quiesce":
                # Stop making results, let the uploads drain, then the totals for exactly-once.
                scheduler.cancel()
                for _ in range(300):
                    if not any(a.pending for a in agents):
                        break
                    await asyncio.sleep(0.1)
                await asyncio.sleep(1.0)  # a resend may still be on its way
                print(json.dumps(totals(stats, agents)), flush=True)
        for a in agents:
            for t in a.tasks:
                t.cancel()
        await asyncio.gather(*(a.http.aclose() for a in agents), return_exceptions=True)

    uvloop.run(main())


# --- the fleet ---------------------------------------------------------------------------------


async def build_fleet(db: Any, n: int) -> list[str]:
    """n stores with 12 non-cloud monitors each, and an agent enrolled for each; their tokens."""
    from sqlalchemy import insert, select

    from app.agents.service import create_agent
    from app.inventory.models import Store, Terminal
    from app.inventory.monitors import sync_monitors

    async with db.sessionmaker() as session:
        await session.execute(
            insert(Store),
            [
                {
                    "code": f"S-{s:05d}",
                    "name": f"Store {s}",
                    "region": "",
                    "timezone": "UTC",
                    "network_profile": "fullsteam-ingenico",
                    "tags": "",
                    "status": "unknown",
                }
                for s in range(1, n + 1)
            ],
        )
        ids = dict((await session.execute(select(Store.code, Store.id))).all())
        await session.execute(
            insert(Terminal),
            [
                {
                    "store_id": ids[f"S-{s:05d}"],
                    "poiid": f"P400Plus-{s:05d}{t:03d}",
                    "model": "P400Plus",
                    "serial": f"{s:05d}{t:03d}",
                    "label": f"Till {t}",
                    "provider": "adyen",
                    "integration": "local",
                    "lan_host": f"10.{s // 250}.{s % 250}.{10 + t}",
                    "lan_port": 8443,
                    "local_api": "adyen_local",
                    "status": "unknown",
                    "cloud_state": "not_enabled",
                }
                for s in range(1, n + 1)
                for t in range(1, TERMINALS_PER_STORE + 1)
            ],
        )
        stores = (await session.scalars(select(Store))).all()
        terminals = (await session.scalars(select(Terminal))).all()
        await sync_monitors(session, stores=stores, terminals=terminals)
        tokens = []
        for s in range(1, n + 1):
            enrolled = await create_agent(session, f"S-{s:05d} agent", [f"S-{s:05d}"])
            tokens.append(enrolled.token)
        await session.commit()
    return tokens


# --- the orchestrator ----------------------------------------------------------------------------


def proc_cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14 and 15)


def proc_rss_mib(pid: int) -> tuple[float, float]:
    values = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(value.split()[0]) / 1024
    return values.get("VmRSS", 0.0), values.get("VmHWM", 0.0)


def postgres_cpu(db_name: str) -> dict[int, float]:
    """CPU seconds of the PostgreSQL backends serving the bench database, by pid."""
    import psutil

    out = {}
    for p in psutil.process_iter(["name", "cmdline"]):
        if (p.info["name"] or "").startswith("postgres") and db_name in " ".join(p.info["cmdline"] or ()):
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                out[p.pid] = t.user + t.system
    return out


def machine_busy_s() -> float:
    import psutil

    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


async def probe_state(dsn: str, ids: list[int], stop: asyncio.Event, seen: list[tuple[float, float]]) -> None:
    """Poll last_checked_at of sampled monitors: (seen at, latency) for every new value."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    last: dict[int, datetime | None] = {}
    try:
        while not stop.is_set():
            rows = await conn.fetch("SELECT id, last_checked_at FROM monitors WHERE id = ANY($1)", ids)
            now = time.time()
            for mid, at in rows:
                if mid in last and at is not None and at != last[mid]:
                    seen.append((now, now - at.timestamp()))
                last[mid] = at
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.1)
    finally:
        await conn.close()


def py_spy() -> str:
    """py-spy from the virtualenv, else from PATH (it is a dev tool, not a dependency)."""
    beside = Path(sys.executable).parent / "py-spy"
    found = str(beside) if beside.exists() else shutil.which("py-spy")
    if found is None:
        raise SystemExit("--profile needs py-spy (pip install py-spy) in the virtualenv or on PATH")
    return found


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    import ctypes

    ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: no orphans if we are killed


def start_server(url: str, port: int, args: argparse.Namespace, log: Any) -> list[subprocess.Popen[bytes]]:
    from app.process import raise_fd_limit

    raise_fd_limit()  # inherited by the children: thousands of keep-alive connections
    env = {
        **os.environ,
        "TERMPULSE_DATABASE_URL": url,
        "TERMPULSE_LOG_LEVEL": "WARNING",
        "TERMPULSE_SECRET_KEY": "bench-secret-key-0123456789abcdefghij",
        "TERMPULSE_CHECK_INTERVAL_S": str(args.interval),
        "TERMPULSE_ALLOWED_NETWORKS": "127.0.0.0/8",  # the simulated stores live on loopback
    }
    exe = str(Path(sys.executable).parent / "termpulse")
    serve = [exe, "serve", "--host", "127.0.0.1", "--port", str(port)]
    extra = ["--no-worker"] if args.worker == "separate" else []
    opts: dict[str, Any] = {"env": env, "stdout": log, "stderr": log, "preexec_fn": _die_with_parent}
    procs = [subprocess.Popen([*serve, *extra], **opts)]
    if args.worker == "separate":
        procs.append(subprocess.Popen([exe, "worker"], **opts))
    return procs


async def wait_healthy(base: str, within: float = 60.0) -> None:
    import httpx

    deadline = time.monotonic() + within
    async with httpx.AsyncClient(base_url=base) as client:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get("/healthz")).status_code == 200:
                    return
            await asyncio.sleep(0.2)
    raise RuntimeError("the server did not come up")


async def main(args: argparse.Namespace) -> int:
    from sqlalchemy import select, text
    from sqlalchemy.engine import make_url

    from app.db import Database, server_execute
    from app.migrate import migrate
    from bench.checks import persisted_results
    from bench.machine import describe

    os.environ["TERMPULSE_CHECK_INTERVAL_S"] = str(args.interval)  # the monitors' interval
    base = make_url(
        os.environ.get("TERMPULSE_TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/x")
    )
    bench_db = f"{BENCH_DB}_{os.getpid()}"  # several runs at once (make bench, by hand) never meet
    await server_execute(base, f'CREATE DATABASE "{bench_db}"')
    url = base.set(database=bench_db).render_as_string(hide_password=False)
    dsn = base.set(drivername="postgresql", database=bench_db).render_as_string(hide_password=False)
    db = Database(url, pool_size=2, max_overflow=2)
    procs: list[subprocess.Popen[bytes]] = []
    sim: subprocess.Popen[str] | None = None
    tokens_file = None
    server_log = None
    log_end: int | None = None
    try:
        await migrate(db.engine)
        t = time.perf_counter()
        tokens = await build_fleet(db, args.agents)
        setup_s = time.perf_counter() - t
        async with db.sessionmaker() as s:
            await s.execute(text("ANALYZE"))
            monitor_ids = list((await s.scalars(select(text("id")).select_from(text("monitors")))).all())
        tokens_file = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)  # noqa: SIM115
        json.dump(tokens, tokens_file)
        tokens_file.close()

        port = args.port or free_port()
        server_url = f"http://127.0.0.1:{port}"
        server_log = tempfile.NamedTemporaryFile("w+b", suffix=".log", delete=False)  # noqa: SIM115
        procs = start_server(url, port, args, server_log)
        await wait_healthy(server_url)
        sim = subprocess.Popen(  # noqa: ASYNC220 (started once, before anything is measured)
            [
                sys.executable,
                __file__,
                "--agents-process",
                "--server",
                server_url,
                "--tokens",
                tokens_file.name,
                "--linger",
                str(args.linger),
                "--ramp",
                str(args.ramp),
                "--flapping",
                str(args.flapping),
                "--resend",
                str(args.resend),
                "--seed",
                str(args.seed),
                *(["--no-long-poll"] if args.no_long_poll else []),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            preexec_fn=_die_with_parent,
        )
        ready = json.loads(await asyncio.to_thread(sim.stdout.readline))  # type: ignore[union-attr]
        started = time.time()
        print(f"machine:  {describe()}")
        print(
            f"fleet:    {args.agents} stores, one agent each ({ready['agents']} configured in time), "
            f"{ready['monitors']} monitors "
            f"({ready['monitors'] // args.agents} per store: the fullsteam-ingenico profile's dns, tcp"
            f" and tls checks, {TERMINALS_PER_STORE} LAN terminals tcp+tls), interval {args.interval} s, "
            f"{100 * args.flapping:.0f}% flapping; built and enrolled in {setup_s:.0f} s"
        )
        print(
            "server:   termpulse serve (uvicorn, uvloop, httptools), "
            + ("embedded worker" if args.worker == "embedded" else "serve --no-worker + 1 termpulse worker")
            + f", PostgreSQL {base.host}:{base.port or 5432}/{bench_db}"
        )
        print(
            f"agents:   one process, httpx.AsyncClient per agent (keep-alive), heartbeat 15 s, "
            f"{'no long poll' if args.no_long_poll else 'long poll /work?wait=25 open'}, "
            f"results uploaded after a {args.linger:g} s linger (the runner's policy), "
            f"{100 * args.resend:g}% of batches resent\n",
            flush=True,
        )
        rng = random.Random(args.seed)
        sample = rng.sample(monitor_ids, min(args.sample, len(monitor_ids)))
        stop = asyncio.Event()
        seen: list[tuple[float, float]] = []
        probe = asyncio.create_task(probe_state(dsn, sample, stop, seen))

        await asyncio.sleep(max(0.0, args.warmup - (time.time() - started)))
        pids = [p.pid for p in procs]
        t0 = time.time()
        cpu0 = [proc_cpu_s(p) for p in pids]
        sim0, pg0, m0 = proc_cpu_s(sim.pid), postgres_cpu(bench_db), machine_busy_s()
        profiler = None
        if args.profile:
            out = Path(args.profile_out)
            profiler = subprocess.Popen(  # noqa: ASYNC220 (the profiler runs beside the window)
                [
                    py_spy(),
                    "record",
                    "--pid",
                    str(pids[0]),
                    "--duration",
                    str(int(args.duration)),
                    "--rate",
                    "200",
                    "--format",
                    "raw",
                    "--output",
                    str(out),
                    "--nonblocking",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        await asyncio.sleep(args.duration)
        t1 = time.time()
        cpu1 = [proc_cpu_s(p) for p in pids]
        sim1, pg1, m1 = proc_cpu_s(sim.pid), postgres_cpu(bench_db), machine_busy_s()
        pg_s = sum(v - pg0.get(pid, 0.0) for pid, v in pg1.items())
        rss = [proc_rss_mib(p) for p in pids]
        wall = t1 - t0
        stop.set()
        await probe
        if profiler is not None:
            await asyncio.to_thread(profiler.wait)

        assert sim.stdin is not None and sim.stdout is not None
        sim.stdin.write(f"report {t0} {t1}\n")
        sim.stdin.flush()
        r = json.loads(await asyncio.to_thread(sim.stdout.readline))
        probe_lat = [lat for at, lat in seen if t0 <= at < t1]

        cpu = [100 * (b - a) / wall for a, b in zip(cpu0, cpu1, strict=True)]
        print(f"window {wall:.0f} s after a {args.warmup:.0f} s warm-up:")
        print(
            f"  results accepted  {r['accepted_per_s']:7.1f}/s   ({r['results_per_post']:.2f} per POST)"
            f"   HTTP requests {r['requests_per_s']:6.1f}/s: "
            + ", ".join(f"{name} {c['per_s']:.1f}/s" for name, c in sorted(r["calls"].items()))
            + (f", work (long poll) {r['work_per_s']:.1f}/s" if not args.no_long_poll else "")
        )
        names = ["server"] if len(pids) == 1 else ["server (serve --no-worker)", "worker"]
        for name, c, (now_rss, peak) in zip(names, cpu, rss, strict=True):
            print(f"  {name:<26} CPU {c:5.1f}% of one core   RSS {now_rss:5.0f} MiB (peak {peak:.0f})")
        # Per unit of work: comparable between runs on a machine others load (the percentage
        # is too, but only at the same pace of results and calls).
        server_ms = 10 * cpu[0] * wall  # the serving process's CPU ms in the window
        print(
            f"  server CPU per HTTP request {server_ms / max(1.0, r['requests_per_s'] * wall):.3f} ms,"
            f" per result accepted {server_ms / max(1.0, r['accepted_per_s'] * wall):.3f} ms"
        )
        print(
            f"  PostgreSQL backends CPU {100 * pg_s / wall:5.1f}%"
            f"   agents' process {100 * (sim1 - sim0) / wall:5.1f}%"
            f"   machine {100 * (m1 - m0) / wall / (os.cpu_count() or 1):3.0f}% busy (all cores),"
            f" load average {os.getloadavg()[0]:.1f}"
        )
        for name, c in sorted(r["calls"].items()):
            print(
                f"  {name + ' call':<16} p50 {c['p50_ms']:7.1f} ms   p99 {c['p99_ms']:7.1f} ms   "
                f"max {c['max_ms']:7.0f} ms"
            )
        print(
            f"  result -> state, by the agents (made -> results call answered, {r['r2s_n']} results): "
            f"p50 {r['r2s_p50_ms']:.0f} ms  p99 {r['r2s_p99_ms']:.0f} ms  max {r['r2s_max_ms']:.0f} ms"
        )
        print(
            f"  result -> state, by the database probe ({len(probe_lat)} new last_checked_at of "
            f"{len(sample)} monitors, 100 ms polls): p50 {1000 * pct(probe_lat, 50):.0f} ms  "
            f"p99 {1000 * pct(probe_lat, 99):.0f} ms  max {1000 * max(probe_lat or [0]):.0f} ms"
        )
        print(f"  errors: {r['errors'] or 'none'}", flush=True)

        server_log.flush()
        log_end = os.path.getsize(server_log.name)  # noqa: ASYNC240 - after the measured part
        # Exactly once: drain, then compare the server's answers with the database.
        sim.stdin.write("quiesce\n")
        sim.stdin.flush()
        tot = json.loads(await asyncio.to_thread(sim.stdout.readline))
        async with db.sessionmaker() as s:
            stored = await persisted_results(db)  # raw rows + results folded into their day
            doubles = await s.scalar(
                text(
                    "SELECT count(*) FROM (SELECT monitor_id, due_at FROM check_results"
                    " GROUP BY 1, 2 HAVING count(*) > 1) d"
                )
            )
            seqs = dict((await s.execute(text("SELECT instance, last_seq FROM agents"))).all())
        behind = sum(1 for inst, seq in tot["seq"].items() if (seqs.get(inst) or 0) != seq)
        ok = tot["pending"] == 0 and stored == tot["made"] and doubles == 0 and behind == 0
        verdict = "yes" if ok else "NO"
        if tot["pending"] and not doubles and stored <= tot["made"]:
            verdict = "cannot tell (the agents could not send everything: the server did not keep up)"
        print(
            f"exactly once: {verdict}: {tot['made']} results made, {stored} stored, "
            f"{tot['pending']} still queued at the agents; {doubles} due times stored twice; "
            f"{behind} agents whose last_seq on the server differs from the last seq they made; "
            f"{tot['duplicates']} duplicates answered ({tot['resent']} batches resent on purpose); "
            f"errors over the whole run: {tot['errors_total']}"
        )
        return 0 if ok else 1
    finally:
        if sim is not None:
            with contextlib.suppress(OSError, ValueError):
                sim.stdin.write("stop\n")  # type: ignore[union-attr]
                sim.stdin.flush()  # type: ignore[union-attr]
            try:
                sim.wait(15)
            except subprocess.TimeoutExpired:
                sim.kill()
        for p in procs:
            p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        if tokens_file is not None:
            os.unlink(tokens_file.name)
        if server_log is not None:
            server_log.seek(0)
            lines = server_log.read(log_end).decode(errors="replace").splitlines()
            server_log.close()
            if args.server_log:
                os.replace(server_log.name, args.server_log)
            else:
                os.unlink(server_log.name)
            errors = [
                line for line in lines if " ERROR " in line or line.startswith(("sqlalchemy.", "asyncpg."))
            ]
            if errors:
                print(f"server log: {len(errors)} error lines, e.g.:", *errors[:3], sep="\n  ")
            if any(p.returncode not in (None, 0) for p in procs):
                codes = ", ".join(f"{p.args[1]} {p.returncode}" for p in procs)
                print(f"server log (exit status {codes}):", *lines[-20:], sep="\n  ")
        await db.dispose()
        if not args.keep:
            await server_execute(base, f'DROP DATABASE IF EXISTS "{bench_db}" WITH (FORCE)')


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--agents", type=int, default=2000)
    parser.add_argument("--interval", type=int, default=60, help="the monitors' interval (s)")
    parser.add_argument("--warmup", type=float, default=75.0, help="from the last agent up to the window (s)")
    parser.add_argument("--duration", type=float, default=90.0, help="the measured window (s)")
    parser.add_argument("--linger", type=float, default=1.0, help="the agents' upload linger (s)")
    parser.add_argument("--ramp", type=float, default=20.0, help="agents start over this many seconds")
    parser.add_argument("--flapping", type=float, default=0.01, help="fraction of monitors that flap")
    parser.add_argument("--resend", type=float, default=0.005, help="fraction of batches sent twice")
    parser.add_argument("--no-long-poll", action="store_true", help="agents keep no GET /work open")
    parser.add_argument("--worker", choices=("embedded", "separate"), default="embedded")
    parser.add_argument("--sample", type=int, default=500, help="monitors the database probe watches")
    parser.add_argument("--port", type=int, default=0, help="the server's port (default: a free one)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--profile", action="store_true", help="py-spy the server during the window")
    parser.add_argument(
        "--profile-out", default="bench-agents.pyspy.txt", help="py-spy raw (collapsed) output"
    )
    parser.add_argument("--keep", action="store_true", help="keep the bench database")
    parser.add_argument("--server-log", help="keep the server's log in this file")
    parser.add_argument("--agents-process", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--server", help=argparse.SUPPRESS)
    parser.add_argument("--tokens", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.agents_process:
        run_agents(args)
        sys.exit(0)
    import logging

    logging.basicConfig(level=logging.WARNING)
    import uvloop

    sys.exit(uvloop.run(main(args)))
