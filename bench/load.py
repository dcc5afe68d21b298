"""100 concurrent users on a 50,000-terminal fleet, PostgreSQL, the checker running: latency per
page (p50/p95/p99) and the web processes' CPU per page, with 1 and with 2 web processes.

    .venv/bin/python bench/load.py [--stores 5000] [--per-store 10] [--clients 100]
                                   [--seconds 15] [--workers 1 2] [--reuse]

* Database: bench/pages.py's fleet (same TERMPULSE_BENCH_DATABASE_URL, same fill; --reuse keeps
  one already filled). Every check it runs stays on loopback: the terminals' and the store
  networks' TCP checks are pointed at one accept-and-close listener on 127.0.0.1 (in its own
  process), the DNS checks are disabled (they would ask the machine's resolver), nothing else
  is allowed (TERMPULSE_ALLOWED_NETWORKS=127.0.0.0/8); the cloud checks need provider accounts,
  which the fleet has none of. Intervals as filled (60 s): about 1,000 checks a second.
* Server: `termpulse serve --checker-processes 1` (one web process) and `serve --workers 2
  --checker-processes 1`, started afresh for each, then warmed for --warm seconds, longer
  (up to --warm-max) until the checker's share of a core is under 30 %.
* Users: --clients asyncio clients (httpx, one connection each, a logged-in session cookie),
  each asking for the page again as soon as it has the last one (--think S: after reading it
  0.5-1.5 x S seconds, as people and wall screens do), for --seconds per page: the
  overview, the terminals list, a terminal's page, a store's page and a store's history (the
  last three each over 500 terminals or stores picked at random).
* Before each page: VACUUM (ANALYZE) of the tables the checker rewrites, as autovacuum would
  (this machine's PostgreSQL runs with autovacuum off).
* Figures per page: requests/s, round trip p50/p95/p99 and the slowest, errors, and the web
  processes' CPU per request (their CPU time over the phase / requests: every request, the
  live polls of nobody, the relay), PostgreSQL's CPU per request (wrk only: the backends
  serving the bench database, the checker's writes included); the checker's CPU share and the machine's load
  average.
  The client runs on the same 2 cores: it takes CPU from the server (its share is printed).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import psutil  # noqa: E402
from sqlalchemy import text  # noqa: E402

import app.models  # noqa: E402,F401
from app.auth.models import User  # noqa: E402
from app.auth.passwords import hash_password  # noqa: E402
from app.db import Database  # noqa: E402
from bench.machine import database_backends, describe  # noqa: E402
from bench.pages import DEFAULT_URL, free_port, pct, prepare, sizes  # noqa: E402

PASSWORD = "bench-load-password"
SECRET = "bench-load-secret-key-0123456789abcdefghij"
TARGET_P95_MS = 500.0
SETTLED_PCT = 30.0  # the checker's share of a core once its first interval's storm is over

LISTENER = """
import asyncio, sys
async def main():
    async def shut(reader, writer):
        writer.close()
    server = await asyncio.start_server(shut, "127.0.0.1", int(sys.argv[1]), backlog=4096)
    await server.serve_forever()
asyncio.run(main())
"""


HOT_TABLES = "terminals, stores, monitors, latency_days, agents"


async def vacuum(url: str) -> None:
    """VACUUM (ANALYZE) the tables the checker rewrites: what autovacuum does in a real
    deployment. This machine's PostgreSQL runs with autovacuum off (its CI configuration), so
    without it the checker's dead rows pile up and the pages' counts read them all."""
    database = Database(url)
    async with database.engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text(f"VACUUM (ANALYZE) {HOT_TABLES}"))
    await database.dispose()


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


async def bench_user(url: str) -> None:
    """The admin the benches log in as (a fleet with a user is no longer open to everyone)."""
    database = Database(url)
    async with database.engine.begin() as conn:
        await conn.execute(text("DELETE FROM users WHERE username = 'bench'"))
        await conn.execute(
            User.__table__.insert().values(
                username="bench", role="admin", password_hash=hash_password(PASSWORD)
            )
        )
    await database.dispose()


async def login(client: httpx.AsyncClient) -> str:
    r = await client.post("/login", data={"username": "bench", "password": PASSWORD, "next": "/"})
    assert r.status_code == 303, (r.status_code, r.text[:300])
    cookie = r.cookies["termpulse_session"]
    client.cookies.clear()
    return cookie


async def loopback_only(url: str, port: int) -> dict[str, list[str]]:
    """Point every TCP check at the listener, disable the DNS checks, spread the due times over
    a minute; a user to log in with; the pages' targets."""
    database = Database(url)
    async with database.engine.begin() as conn:
        await conn.execute(text("UPDATE monitors SET enabled = false WHERE kind = 'dns'"))
        await conn.execute(
            text(
                "UPDATE monitors SET target = :target, lease_owner = NULL, lease_expires_at = NULL,"
                " next_due_at = now() + make_interval(secs => (id % 60)) WHERE kind = 'tcp'"
            ),
            {"target": f"127.0.0.1:{port}"},
        )
        await conn.execute(text("DELETE FROM users WHERE username = 'bench'"))
        await conn.execute(
            User.__table__.insert().values(
                username="bench", role="admin", password_hash=hash_password(PASSWORD)
            )
        )
        poiids = list(
            (await conn.execute(text("SELECT poiid FROM terminals ORDER BY random() LIMIT 500"))).scalars()
        )
        codes = list(
            (await conn.execute(text("SELECT code FROM stores ORDER BY random() LIMIT 500"))).scalars()
        )
        checks = await conn.scalar(text("SELECT count(*) FROM monitors WHERE enabled AND kind = 'tcp'"))
    await database.dispose()
    print(
        f"checks on loopback: {checks:,} TCP monitors at 60 s (~{checks / 60:,.0f} checks/s), DNS checks off"
    )
    return {"poiid": poiids, "code": codes}


def pages(targets: dict[str, list[str]]) -> dict[str, list[str]]:
    return {
        "overview": ["/"],
        "terminals list": ["/terminals"],
        "terminal detail": [f"/terminals/{p}" for p in targets["poiid"]],
        "store page": [f"/stores/{c}" for c in targets["code"]],
        "history (store, default period)": [f"/history?scope=store&id={c}" for c in targets["code"]],
    }


class Server:
    """`termpulse serve` (with --workers N when N > 1) and its checker process."""

    def __init__(self, url: str, workers: int) -> None:
        self.url = url
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "TERMPULSE_DATABASE_URL": url,
            "TERMPULSE_SECRET_KEY": SECRET,
            "TERMPULSE_ALLOWED_NETWORKS": "127.0.0.0/8",
            "TERMPULSE_DNS_NAMESERVERS": "127.0.0.1",  # nothing answers: no query leaves the machine
            "TERMPULSE_LOG_LEVEL": "WARNING",
        }
        cmd = [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        cmd += ["--checker-processes", "1"] + (["--workers", str(workers)] if workers > 1 else [])
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env)
        self.workers = workers

    def wait(self) -> None:
        for _ in range(600):
            try:
                if httpx.get(self.base + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise SystemExit("the server did not start")

    def processes(self) -> tuple[list[psutil.Process], list[psutil.Process]]:
        """(web processes, checker processes)."""
        parent = psutil.Process(self.proc.pid)
        children = parent.children(recursive=True)
        checker = [c for c in children if "worker" in c.cmdline()]
        web = [c for c in children if "--listen-fd" in c.cmdline()] if self.workers > 1 else [parent]
        return web, checker

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(40)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def backend_cpu(url: str) -> dict[int, float]:
    """CPU seconds so far of each PostgreSQL backend serving this database: the pages' queries
    and the checker's writes."""
    found = {}
    for p in database_backends(url):
        with contextlib.suppress(psutil.NoSuchProcess):
            t = p.cpu_times()
            found[p.pid] = t.user + t.system
    return found


def backend_cpu_since(url: str, before: dict[int, float]) -> float:
    """CPU seconds the backends used since `before` (one that ended meanwhile is not counted)."""
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in backend_cpu(url).items())


def cpu_s(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


async def phase(
    server: Server, cookie: str, paths: list[str], clients: int, seconds: float, think: float
) -> tuple[list[float], int, int, float, float, float]:
    """(latencies ms, errors, timeouts, web CPU s, checker CPU s, client CPU s) of `clients`
    users asking for `paths` in turn for `seconds`."""
    web, checker = server.processes()
    latencies: list[float] = []
    errors = timeouts = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    headers = {"Cookie": f"termpulse_session={cookie}"}
    async with httpx.AsyncClient(base_url=server.base, timeout=30, limits=limits, headers=headers) as client:

        async def user(k: int, deadline: float) -> None:
            nonlocal errors, timeouts
            i = k * 7
            if think:  # people do not all click at the same instant: arrivals spread over a pause
                await asyncio.sleep(think * random.random())
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                try:
                    r = await client.get(paths[i % len(paths)])
                    errors += r.status_code != 200
                except httpx.TimeoutException:
                    timeouts += 1
                except httpx.HTTPError:  # the server closed the connection: counted, asked again
                    errors += 1
                latencies.append((time.perf_counter() - t0) * 1000)
                i += 1
                if think:
                    await asyncio.sleep(think * (0.5 + random.random()))  # reading the page

        await asyncio.gather(*(user(k, time.perf_counter() + 2) for k in range(clients)))  # connections open
        latencies.clear()
        errors = timeouts = 0
        web0, checker0, client0 = cpu_s(web), cpu_s(checker), time.process_time()
        await asyncio.gather(*(user(k, time.perf_counter() + seconds) for k in range(clients)))
        return (
            latencies,
            errors,
            timeouts,
            cpu_s(web) - web0,
            cpu_s(checker) - checker0,
            time.process_time() - client0,
        )


# wrk: each connection walks the paths from its thread's offset, with the session cookie.
WRK_SCRIPT = """
local paths = {%(paths)s}
local counter = 0
function setup(thread)
  thread:set("offset", counter * 7919)
  counter = counter + 1
end
function init(args)
  i = tonumber(offset)
end
function request()
  i = i + 1
  return wrk.format("GET", paths[(i %% #paths) + 1], {["Cookie"] = "termpulse_session=%(cookie)s"})
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("WRK %%d %%d %%f %%f %%f %%f %%f\\n", summary.requests,
    e.connect + e.read + e.write + e.status + e.timeout, summary.duration / 1e6,
    latency:percentile(50) / 1000, latency:percentile(95) / 1000, latency:percentile(99) / 1000,
    latency.max / 1000))
end
"""


def wrk_phase(
    server: Server, cookie: str, paths: list[str], clients: int, seconds: float
) -> dict[str, float]:
    """The figures of `clients` wrk connections asking for `paths` in turn, no pause, for
    `seconds` (wrk is C: it takes a tenth of the CPU the Python client takes)."""
    web, checker = server.processes()
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(WRK_SCRIPT % {"paths": ", ".join(f'"{p}"' for p in paths), "cookie": cookie})
    try:
        web0, checker0, pg0 = cpu_s(web), cpu_s(checker), backend_cpu(server.url)
        cmd = [
            "wrk",
            "-t2",
            f"-c{clients}",
            f"-d{seconds:.0f}s",
            "--timeout",
            "30s",
            "-s",
            f.name,
            server.base,
        ]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        client = psutil.Process(proc.pid)
        client_s = 0.0
        while proc.poll() is None:
            client_s = max(client_s, cpu_s([client]))
            time.sleep(0.2)
        out = proc.stdout.read() if proc.stdout else ""
    finally:
        os.unlink(f.name)
    line = next((x for x in out.splitlines() if x.startswith("WRK ")), None)
    if line is None:
        raise SystemExit(f"wrk printed no summary:\n{out}")
    n, errors, wall, p50, p95, p99, slowest = (float(x) for x in line.split()[1:])
    return {
        "rate": n / wall,
        "p50": p50,
        "p95": p95,
        "p99": p99,
        "max": slowest,
        "errors": errors,
        "web_ms": 1000 * (cpu_s(web) - web0) / max(n, 1),
        "pg_ms": 1000 * backend_cpu_since(server.url, pg0) / max(n, 1),
        "checker": 100 * (cpu_s(checker) - checker0) / wall,
        "client": 100 * client_s / wall,
    }


async def httpx_phase(
    server: Server, cookie: str, paths: list[str], clients: int, seconds: float, think: float
) -> dict[str, float]:
    lat, errors, timeouts, web_s, checker_s, client_s = await phase(
        server, cookie, paths, clients, seconds, think
    )
    n = len(lat)
    return {
        "rate": n / seconds,
        "p50": pct(lat, 0.5),
        "p95": pct(lat, 0.95),
        "p99": pct(lat, 0.99),
        "max": max(lat),
        "errors": errors + timeouts,
        "web_ms": 1000 * web_s / max(n, 1),
        "checker": 100 * checker_s / seconds,
        "client": 100 * client_s / seconds,
    }


async def run(url: str, workers: int, targets: dict[str, list[str]], args: argparse.Namespace) -> None:
    server = Server(url, workers)
    try:
        server.wait()
        async with httpx.AsyncClient(base_url=server.base, timeout=30) as client:
            cookie = await login(client)
        web = f"{workers} web process{'es' if workers > 1 else ''}"
        users = f"{args.clients} users, " + (f"~{args.think:g} s between pages" if args.think else "no pause")
        print(f"\n{web} + 1 checker process, {users}; warming {args.warm:.0f}-{args.warm_max:.0f} s")
        # The checker's first interval (every monitor's first check after the fill, which
        # finds the fill's states stale) and the caches: the pages are measured after it, once
        # the checker's share has settled (a slow machine takes longer than a fast one).
        _, checker = server.processes()
        started, share = time.monotonic(), 100.0
        while True:
            before = cpu_s(checker)
            await asyncio.sleep(10)
            share = 100 * (cpu_s(checker) - before) / 10
            waited = time.monotonic() - started
            if waited >= args.warm_max or (waited >= args.warm and share < SETTLED_PCT):
                break
        print(f"  checker before the pages: {share:.0f} % of a core (after {waited:.0f} s)")
        print(
            f"  {'page':<32} {'req/s':>6} {'p50':>7} {'p95':>7} {'p99':>7} {'max':>7} {'err':>4}"
            f" {'web CPU/req':>11} {'PG CPU/req':>10} {'checker':>7} {'client':>6}"
            f"  load avg   p95 < {TARGET_P95_MS:.0f} ms"
        )
        for name, paths in pages(targets).items():
            if args.pages and not any(name.startswith(p) for p in args.pages):
                continue
            await vacuum(url)  # outside the measured window
            if args.client == "wrk":
                r = await asyncio.to_thread(wrk_phase, server, cookie, paths, args.clients, args.seconds)
            else:
                r = await httpx_phase(server, cookie, paths, args.clients, args.seconds, args.think)
            verdict = "ok" if r["p95"] < TARGET_P95_MS else "over"
            print(
                f"  {name:<32} {r['rate']:6.0f} {r['p50']:5.0f}ms {r['p95']:5.0f}ms"
                f" {r['p99']:5.0f}ms {r['max']:5.0f}ms {r['errors']:4.0f}"
                f" {r['web_ms']:8.1f} ms {r.get('pg_ms', float('nan')):7.1f} ms {r['checker']:5.0f} %"
                f" {r['client']:4.0f} %  {load_average()}  {verdict}",
                flush=True,
            )
    finally:
        server.stop()


async def fleet(url: str, args: argparse.Namespace) -> None:
    await prepare(url, args.stores, args.per_store, args.reuse)
    n = await sizes(url)
    print("fleet: " + ", ".join(f"{k} {v:,}" for k, v in n.items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stores", type=int, default=5000)
    ap.add_argument("--per-store", type=int, default=10)
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--warm", type=float, default=80, help="seconds at least before the pages")
    ap.add_argument(
        "--warm-max", type=float, default=300, help=f"at most, if the checker stays over {SETTLED_PCT:.0f} %%"
    )
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--think", type=float, default=0.0, help="mean seconds a user reads a page (0: none)")
    ap.add_argument(
        "--client",
        choices=("wrk", "httpx"),
        help="wrk (C, apt-get install wrk) or the Python client; default wrk when it is there"
        " and users do not pause (--think needs httpx)",
    )
    ap.add_argument("--reuse", action="store_true", help="keep a database already filled to this size")
    ap.add_argument("--pages", nargs="+", help="only the pages whose names start so (e.g. overview terminal)")
    args = ap.parse_args()
    url = os.environ.get("TERMPULSE_BENCH_DATABASE_URL", DEFAULT_URL)
    if args.client is None:
        args.client = "wrk" if shutil.which("wrk") and not args.think else "httpx"
    if args.client == "wrk" and args.think:
        ap.error("--think needs --client httpx (wrk does not pause)")

    print(f"machine: {describe()}; load average before: {load_average()}")
    asyncio.run(fleet(url, args))
    port = free_port()
    listener = subprocess.Popen([sys.executable, "-c", LISTENER, str(port)])
    try:
        asyncio.run(bench_user(url))
        targets = asyncio.run(loopback_only(url, port))
        for workers in args.workers:
            asyncio.run(run(url, workers, targets, args))
    finally:
        listener.terminate()
        listener.wait()
    print(f"\nload average after: {load_average()} (2 cores; other sessions share the machine)")


if __name__ == "__main__":
    main()
