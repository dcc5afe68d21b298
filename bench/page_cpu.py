"""Server CPU per page at fleet scale: the app in this process (ASGI, no network), one request at
a time, CPU time (time.process_time: Python, Jinja, the driver, everything the server does, and
the in-process client's share, which the /healthz row shows) per page; --profile prints where it
goes (cProfile on CPU time, the top functions by own and by cumulative time).

    .venv/bin/python bench/page_cpu.py [--requests 30] [--profile PAGE]

* Database: the one bench/pages.py fills (TERMPULSE_BENCH_DATABASE_URL, default
  termpulse_bench_pages): `bench/pages.py --keep` first, or --reuse when it is there.
* Each request renders its page: the overview's and the list's shared renders
  (app.dashboard.queries.shared_view) are dropped before each, the data they read once a second
  is not. The last two rows are what a second user asking within the same second costs.
* PG mean: the CPU time of the PostgreSQL backends serving the bench database per page (the
  page's queries; the server's other processes, WAL writer and the like, are not counted).
* Target: under 15 ms of server CPU per page at 50,000 terminals (issue 14).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from app.config import Settings  # noqa: E402
from app.dashboard import queries  # noqa: E402
from app.db import Database  # noqa: E402
from app.main import create_app  # noqa: E402
from bench.checks import cpu_seconds  # noqa: E402
from bench.load import bench_user, login  # noqa: E402
from bench.machine import database_backends, describe  # noqa: E402
from bench.pages import DEFAULT_URL, pct, sample_targets, sizes  # noqa: E402


def page_paths(targets: dict[str, str]) -> dict[str, str]:
    return {
        "baseline: /healthz": "/healthz",  # the client's and the middleware's share of every row
        "overview": "/",
        "terminals list": "/terminals",
        "terminals list, filtered": "/terminals?status=down&region=North",
        "terminal detail": f"/terminals/{targets['down']}",
        "store page": f"/stores/{targets['store']}",
        "history": f"/history?scope=store&id={targets['store']}",
        "stores list (admin)": "/admin/stores",
        # The same two pages again for a second user within the second: the shared render.
        "overview, shared render": "/",
        "terminals list, shared render": "/terminals",
    }


async def measure(url: str, requests: int, profile: str | None) -> None:
    targets = await sample_targets(url)
    database = Database(url)
    settings = Settings(database_url=url, secret_key="bench-page-cpu-secret-key-0123456789")
    app = create_app(settings, database=database)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        await bench_user(url)
        client.headers["Cookie"] = f"termpulse_session={await login(client)}"
        print(
            f"  {'page':<31} {'CPU p50':>9} {'p95':>8} {'PG mean':>9} {'wall p50':>9} {'bytes':>9}"
            "   target CPU < 15 ms"
        )
        for name, path in page_paths(targets).items():
            for _ in range(3):  # warm: templates compiled, statements cached, pool filled
                r = await client.get(path)
                assert r.status_code == 200, (path, r.status_code, r.text[:300])
            cpu, wall = [], []
            backends = database_backends(url)
            pg0 = cpu_seconds(backends)
            profiler = cProfile.Profile(time.process_time) if name == profile else None
            for _ in range(requests):
                if not name.endswith("shared render"):
                    queries.drop_views()  # each request renders (its data caches as they are)
                c0, w0 = time.process_time(), time.perf_counter()
                if profiler:
                    profiler.enable()
                r = await client.get(path)
                if profiler:
                    profiler.disable()
                cpu.append((time.process_time() - c0) * 1000)
                wall.append((time.perf_counter() - w0) * 1000)
            pg_ms = 1000 * (cpu_seconds(backends) - pg0) / requests
            ok = "ok" if pct(cpu, 0.5) < 15 else "over"
            print(
                f"  {name:<31} {pct(cpu, 0.5):6.1f} ms {pct(cpu, 0.95):5.1f} ms {pg_ms:6.1f} ms"
                f" {pct(wall, 0.5):6.1f} ms {len(r.content):9,}   {ok}"
            )
            if profiler:
                stats = pstats.Stats(profiler).sort_stats("tottime")
                stats.print_stats(35)
                stats.sort_stats("cumulative").print_stats(45)
    await app.state.relay.close()
    await database.dispose()


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=30)
    ap.add_argument("--profile", metavar="PAGE", help="cProfile this page (its name as printed)")
    args = ap.parse_args()
    url = os.environ.get("TERMPULSE_BENCH_DATABASE_URL", DEFAULT_URL)
    print(f"machine: {describe()}; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    n = await sizes(url)
    print("fleet: " + ", ".join(f"{k} {v:,}" for k, v in n.items()))
    print(f"Server CPU per page (in process, one request at a time, {args.requests} requests each):")
    await measure(url, args.requests, args.profile)


if __name__ == "__main__":
    asyncio.run(main())
