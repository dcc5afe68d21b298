"""Server CPU per store agent call: the app in this process (ASGI, no network, no uvicorn) on
PostgreSQL, the calls made as bench/agents.py's agents make them, in waves of concurrent calls
(so the agents' writer batches them as it does under thousands of agents). CPU time
(time.process_time: everything the process does, the writer's transactions and the driver
included, and this script's own small share, which the /healthz row shows) per call, and how
much of it the garbage collector took; --profile CALL prints where that call's CPU goes
(cProfile on CPU time).

    .venv/bin/python bench/agent_calls.py [--agents 400] [--wave 40] [--rounds 4] [--per-post 4]
        [--long-polls] [--python-gc] [--profile results]

* PostgreSQL: its own database (`termpulse_bench_agent_calls_<pid>` on the server of
  TERMPULSE_TEST_DATABASE_URL), migrated, the fleet of bench/agents.py (one store and agent
  per --agents, 13 monitors each), dropped at the end.
* Calls: heartbeat (POST /heartbeat), results (POST /results, --per-post results each, the
  monitors' next due times: after warm-up rounds every one is a plain success), config (GET
  /config with the ETag it has: 304), work (the long poll GET /work, with a 10 ms wait instead
  of 25 s: the same work but the waiting), and /healthz for the floor every request pays.
* --long-polls: every agent also keeps GET /work?wait=25 open meanwhile, as real agents do
  (thousands of requests alive at any time: what makes the collector's full runs costly).
* The collector is set up as `termpulse serve` sets it (app.process.tune_gc); --python-gc leaves
  Python's settings, to compare.
Complements bench/agents.py (the real protocol over HTTP with 2,000 agents), which measures
the server process's CPU on a machine that others load too.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import json
import os
import pstats
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy.engine import make_url  # noqa: E402

from app.config import Settings  # noqa: E402
from app.db import Database, server_execute  # noqa: E402
from app.main import create_app  # noqa: E402
from app.migrate import migrate  # noqa: E402
from app.process import tune_gc  # noqa: E402
from bench.agents import API, build_fleet, pct  # noqa: E402
from bench.machine import describe  # noqa: E402

Answer = tuple[int, dict[bytes, bytes], bytes]


class Driver:
    """Calls the ASGI app as uvicorn would (one scope per request, the body in one message,
    a disconnect only once the answer is complete)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def call(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        body: bytes = b"",
        query: bytes = b"",
        etag: str | None = None,
    ) -> Answer:
        headers = [
            (b"host", b"127.0.0.1:8000"),
            (b"user-agent", b"termpulse-agent/bench"),
            (b"accept", b"*/*"),
        ]
        if token is not None:
            headers.append((b"authorization", f"Bearer {token}".encode()))
        if etag is not None:
            headers.append((b"if-none-match", etag.encode()))
        if body:
            headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "1.1",
            "server": ("127.0.0.1", 8000),
            "client": ("127.0.0.1", 50000),
            "scheme": "http",
            "method": method,
            "root_path": "",
            "path": path,
            "raw_path": path.encode(),
            "query_string": query,
            "headers": headers,
        }
        done = asyncio.Event()
        sent = False
        status, answer_headers, chunks = 0, {}, []

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await done.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status, answer_headers
            if message["type"] == "http.response.start":
                status, answer_headers = message["status"], dict(message.get("headers", ()))
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    done.set()

        await self.app(scope, receive, send)
        done.set()
        return status, answer_headers, b"".join(chunks)


class Agent:
    def __init__(self, token: str) -> None:
        self.token = token
        self.instance = os.urandom(8).hex()
        self.seq = 0
        self.etag = ""
        self.monitors: list[dict[str, Any]] = []
        self.due: dict[int, datetime] = {}

    def results_body(self, per_post: int) -> bytes:
        results = []
        now = datetime.now(UTC)
        for m in self.monitors[:per_post]:
            due = self.due[m["id"]] = self.due.get(m["id"], now - timedelta(seconds=1)) + timedelta(seconds=1)
            self.seq += 1
            results.append(
                {
                    "seq": self.seq,
                    "monitor_id": m["id"],
                    "due_at": due.isoformat(),
                    "checked_at": now.isoformat(),
                    "outcome": "ok",
                    "latency_ms": 3.25,
                    "steps": [
                        {"step": "resolve", "ok": True, "ms": 0.1, "detail": "10.0.0.1"},
                        {"step": "connect", "ok": True, "ms": 1.4, "detail": f"connected to {m['target']}"},
                    ],
                    "diagnosis": None,
                    "detail": "",
                }
            )
        return json.dumps({"instance": self.instance, "results": results}, separators=(",", ":")).encode()

    def beat_body(self) -> bytes:
        now = datetime.now(UTC).isoformat()
        beat = {"version": "bench", "instance": self.instance, "clock": now, "queue": 0, "dropped": 0}
        return json.dumps(beat).encode()


async def waves(
    agents: list[Agent], wave: int, call: Callable[[Agent], Awaitable[Answer]], expect: int
) -> float:
    """Every agent makes the call once, `wave` at a time concurrently; the CPU seconds it took."""
    c0 = time.process_time()
    for i in range(0, len(agents), wave):
        answers = await asyncio.gather(*(call(a) for a in agents[i : i + wave]))
        bad = [a for a in answers if a[0] != expect]
        if bad:
            raise SystemExit(f"expected {expect}, got {bad[0][0]}: {bad[0][2][:300]!r}")
    return time.process_time() - c0


async def measure(args: argparse.Namespace, url: str) -> None:
    database = Database(url)
    await migrate(database.engine)
    t = time.perf_counter()
    tokens = await build_fleet(database, args.agents)
    print(f"machine:  {describe()}")
    built = time.perf_counter() - t
    print(f"fleet:    {args.agents} stores and agents, 13 monitors each, built in {built:.0f} s")
    settings = Settings(database_url=url, secret_key="bench-agent-calls-secret-key-0123456789")
    app = create_app(settings, database=database)
    if not args.python_gc:
        tune_gc()  # as termpulse serve does before serving
    driver = Driver(app)
    agents = [Agent(token) for token in tokens]

    async def config(a: Agent) -> Answer:
        answer = await driver.call("GET", f"{API}/config", token=a.token)
        a.etag = answer[1][b"etag"].decode()
        a.monitors = json.loads(answer[2])["monitors"]
        return answer

    await waves(agents, args.wave, config, 200)

    async def heartbeat(a: Agent) -> Answer:
        return await driver.call("POST", f"{API}/heartbeat", token=a.token, body=a.beat_body())

    async def results(a: Agent) -> Answer:
        return await driver.call("POST", f"{API}/results", token=a.token, body=a.results_body(args.per_post))

    async def config_304(a: Agent) -> Answer:
        return await driver.call("GET", f"{API}/config", token=a.token, etag=a.etag)

    async def work(a: Agent) -> Answer:
        return await driver.call("GET", f"{API}/work", token=a.token, query=b"wait=0.01")

    async def healthz(a: Agent) -> Answer:
        return await driver.call("GET", "/healthz")

    calls: dict[str, tuple[Callable[[Agent], Awaitable[Answer]], int]] = {
        "/healthz (the floor)": (healthz, 200),
        "heartbeat": (heartbeat, 200),
        "results": (results, 200),
        "config (ETag: 304)": (config_304, 304),
        "work (long poll)": (work, 204),
    }

    async def polling(a: Agent) -> None:  # as the agents do: a long poll always open
        while True:
            await driver.call("GET", f"{API}/work", token=a.token, query=b"wait=25")

    pollers = [asyncio.create_task(polling(a)) for a in agents] if args.long_polls else []
    for _ in range(args.warmup):  # the monitors reach their steady state; statements are cached
        await waves(agents, args.wave, heartbeat, 200)
        await waves(agents, args.wave, results, 200)
    print(
        f"calls:    {len(agents)} agents per round, {args.wave} at a time, {args.rounds} rounds; "
        f"results {args.per_post} per POST\n"
    )
    print(f"  {'call':<22} {'CPU per call p50':>17} {'min':>8} {'max':>8}   (of which the collector)")
    for name, (call, expect) in calls.items():
        collector = Collector()
        gc.callbacks.append(collector)
        per_call = []
        profiler = cProfile.Profile(time.process_time) if args.profile and args.profile in name else None
        for _ in range(args.rounds):
            if profiler:
                profiler.enable()
            cpu = await waves(agents, args.wave, call, expect)
            if profiler:
                profiler.disable()
            per_call.append(1000 * cpu / len(agents))
        gc.callbacks.remove(collector)
        gc_ms = 1000 * sum(collector.seconds) / (len(agents) * args.rounds)
        print(
            f"  {name:<22} {pct(per_call, 50):14.3f} ms {min(per_call):8.3f} {max(per_call):8.3f}"
            f"   GC {gc_ms:.3f} ms/call, collections by generation {collector.runs}"
        )
        if profiler:
            stats = pstats.Stats(profiler).sort_stats("tottime")
            stats.print_stats(30)
            stats.sort_stats("cumulative").print_stats(50)
    for task in pollers:
        task.cancel()
    await asyncio.gather(*pollers, return_exceptions=True)
    await app.state.agent_writer.close()
    await app.state.relay.close()
    await database.dispose()


class Collector:
    """CPU seconds and count of the garbage collector's runs, by generation."""

    def __init__(self) -> None:
        self.seconds = [0.0, 0.0, 0.0]
        self.runs = [0, 0, 0]
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.process_time()
        else:
            self.seconds[info["generation"]] += time.process_time() - self._started
            self.runs[info["generation"]] += 1


async def main(args: argparse.Namespace) -> None:
    base = make_url(
        os.environ.get("TERMPULSE_TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/x")
    )
    name = f"termpulse_bench_agent_calls_{os.getpid()}"
    await server_execute(base, f'CREATE DATABASE "{name}"')
    try:
        await measure(args, base.set(database=name).render_as_string(hide_password=False))
    finally:
        await server_execute(base, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--agents", type=int, default=400)
    parser.add_argument("--wave", type=int, default=40, help="calls made at once (the writer batches them)")
    parser.add_argument("--rounds", type=int, default=4, help="measured rounds per call")
    parser.add_argument("--warmup", type=int, default=3, help="rounds of heartbeats and results first")
    parser.add_argument("--per-post", type=int, default=4, help="results per POST /results")
    parser.add_argument("--long-polls", action="store_true", help="every agent keeps GET /work?wait=25 open")
    parser.add_argument("--python-gc", action="store_true", help="Python's collector settings, not serve's")
    parser.add_argument("--profile", help="cProfile this call (a part of its name: results, heartbeat...)")
    import uvloop

    uvloop.run(main(parser.parse_args()))
