"""Dashboard pages at fleet scale: 5,000 stores, 50,000 terminals, 30 days of history, PostgreSQL.

    .venv/bin/python bench/pages.py [--stores 5000] [--per-store 10] [--requests 60]
                                    [--concurrency 50] [--seconds 10] [--workers 1] [--reuse] [--keep]

* Database: its own (`termpulse_bench_pages` on the server of TERMPULSE_BENCH_DATABASE_URL,
  default postgresql+asyncpg://postgres@127.0.0.1:5432/termpulse_bench_pages), migrated, filled
  with INSERT ... SELECT generate_series on the server (fast, no Python loops), ANALYZEd.
  --reuse keeps an already filled database of the same size; --keep leaves it after the run.
* History: state changes over 30 days (outages of 10-90 min on every monitor, a few each),
  raw check results for the last 24 h (every 15 min, each terminal monitor), hourly rollups
  for 48 h and daily rollups for 30 days, one address change per 10 terminals.
* Server: uvicorn serving app.main:create_app in its own process (--workers N), no worker.
* Figures: server time (the Server-Timing header the dashboard sets: queries + rendering) and
  round trip p50/p95 per page, sequential; then requests/s and latency with 50 concurrent
  clients over a mix of the pages; then EXPLAIN ANALYZE of every query one page runs, with
  a warning for any sequential scan of a table that grows with the fleet.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from sqlalchemy import event, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

import app.models  # noqa: E402,F401
from app.db import Database, server_execute  # noqa: E402
from app.migrate import migrate  # noqa: E402
from bench.machine import describe  # noqa: E402

DEFAULT_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/termpulse_bench_pages"
BIG_TABLES = ("terminals", "monitors", "state_changes", "check_results", "rollups", "terminal_events")


# --- data ------------------------------------------------------------------------------------

FILL = [
    (
        "stores",
        """
INSERT INTO stores (id, code, name, region, timezone, network_profile, tags, status, status_since,
                    created_at, updated_at)
SELECT i, 'S-' || lpad(i::text, 5, '0'),
       (ARRAY['York','Hull','Bath','Kent','Derby','Leeds','Bristol','Essex'])[1 + i % 8] || ' #' || i,
       (ARRAY['North','South','East','West','Central','Coast','Alps','Islands'])[1 + i % 8], 'Europe/London',
       (ARRAY['fullsteam-ingenico','adyen-cloud','paynt-local','mixed'])[1 + i % 4], '',
       CASE WHEN i % 401 = 0 THEN 'down' ELSE 'up' END,
       now() - make_interval(mins => i % 5000), now() - interval '90 days', now()
FROM generate_series(1, :stores) AS i""",
    ),
    (
        "terminals",
        """
INSERT INTO terminals (id, store_id, poiid, model, serial, label, provider, integration, lan_host, lan_port,
                       local_api, mac, cloud_enabled, status, status_since, cloud_state, last_seen_at,
                       created_at, updated_at)
SELECT i, 1 + (i - 1) / :per_store, m || '-' || (100000000 + (i::bigint * 7919) % 899999999), m,
       (100000000 + (i::bigint * 7919) % 899999999)::text, 'Till ' || (1 + (i - 1) % :per_store),
       (ARRAY['adyen','stripe','paynt','ingenico'])[1 + i % 4], (ARRAY['cloud','local','both'])[1 + i % 3],
       '10.' || (i / 65536) % 256 || '.' || (i / 256) % 256 || '.' || i % 256, 8443, 'tcp',
       '02:00:' || lpad(to_hex(i % 256), 2, '0') || ':00:00:01', (i % 3 <> 1 AND i % 7 <> 0),
       CASE WHEN i % 50 = 0 THEN 'down' WHEN i % 97 = 0 THEN 'unknown'
            WHEN i % 1000 = 1 THEN 'maintenance' ELSE 'up' END,
       CASE WHEN i % 50 = 0 THEN now() - make_interval(mins => i % 900)
            ELSE now() - make_interval(hours => 24 + i % 200) END,
       CASE WHEN i % 3 = 1 OR i % 7 = 0 THEN 'not_enabled' WHEN i % 50 = 0 THEN 'disconnected'
            ELSE 'connected' END,
       now() - make_interval(secs => i % 120), now() - interval '60 days', now()
FROM (SELECT i, (ARRAY['A920','A77','V400m','AMS1','Move5000','Lane3000','S1F2'])[1 + i % 7] AS m
      FROM generate_series(1, :stores * :per_store) AS i) AS g""",
    ),
    (
        "monitors (terminals)",
        """
INSERT INTO monitors (key, store_id, terminal_id, kind, target, params, interval_s, timeout_s, fail_threshold,
                      success_threshold, enabled, phase_ms, next_due_at, state, state_since,
                      consecutive_failures, consecutive_successes, last_checked_at, last_latency_ms,
                      last_diagnosis)
SELECT 't' || t.id || ':' || k.kind, t.store_id, t.id, k.kind,
       CASE WHEN k.kind = 'tcp' THEN t.lan_host || ':' || t.lan_port ELSE t.poiid END,
       '{}'::jsonb, 60, 5, 2, 1, true,
       (t.id * 37) % 60000, now(), t.status, t.status_since, 0, 0, now() - make_interval(secs => t.id % 60),
       3 + t.id % 40, CASE WHEN t.status = 'down' THEN 'tcp_timeout' END
FROM terminals t
JOIN (VALUES ('tcp'), ('cloud')) AS k(kind)
  ON (k.kind = 'tcp' AND t.integration IN ('local', 'both')) OR (k.kind = 'cloud' AND t.cloud_enabled)""",
    ),
    (
        "monitors (store networks)",
        """
INSERT INTO monitors (key, store_id, terminal_id, kind, target, params, interval_s, timeout_s, fail_threshold,
                      success_threshold, enabled, phase_ms, next_due_at, state, state_since,
                      consecutive_failures, consecutive_successes, last_checked_at, last_latency_ms)
SELECT 's' || s.id || ':' || d.kind || ':' || d.target, s.id, NULL, d.kind, d.target,
       '{}'::jsonb, 60, 5, 2, 1, true,
       (s.id * 53) % 60000, now(), s.status, s.status_since, 0, 0, now(), 8
FROM stores s
JOIN (VALUES ('fullsteam-ingenico', 'dns', 'prodssl.protectedtransactions.com'),
             ('fullsteam-ingenico', 'tcp', 'prodssl.protectedtransactions.com:443'),
             ('fullsteam-ingenico', 'dns', 'temterminalsnar01.icloud.ingenico.com'),
             ('fullsteam-ingenico', 'tcp', 'temterminalsnar01.icloud.ingenico.com:7003'),
             ('adyen-cloud', 'dns', 'terminal-api-live.adyen.com'),
             ('adyen-cloud', 'tcp', 'terminal-api-live.adyen.com:443'),
             ('mixed', 'dns', 'prodssl.protectedtransactions.com'),
             ('mixed', 'tcp', 'temterminalsnar01.icloud.ingenico.com:7003'),
             ('mixed', 'tcp', 'terminal-api-live.adyen.com:443')) AS d(profile, kind, target)
  ON d.profile = s.network_profile""",
    ),
    (
        "state changes (30 days)",
        """
INSERT INTO state_changes (monitor_id, store_id, terminal_id, at, from_state, to_state, diagnosis)
SELECT m.id, m.store_id, m.terminal_id,
       now() - make_interval(days => 2 + 7 * j) - make_interval(secs => (m.id * 7919) % 86400)
             + make_interval(mins => e * (10 + m.id % 80)),
       CASE WHEN e = 0 THEN 'up' ELSE 'down' END, CASE WHEN e = 0 THEN 'down' ELSE 'up' END,
       CASE WHEN e = 0 THEN 'tcp_timeout' END
FROM monitors m, generate_series(0, m.id % 4) AS j, generate_series(0, 1) AS e""",
    ),
    (
        "state changes (current outages)",
        """
INSERT INTO state_changes (monitor_id, store_id, terminal_id, at, from_state, to_state, diagnosis)
SELECT id, store_id, terminal_id, state_since, 'up', state, 'tcp_timeout'
FROM monitors WHERE state IN ('down', 'unknown')""",
    ),
    (
        "check results (24 h, every 15 min)",
        """
INSERT INTO check_results (monitor_id, due_at, checked_at, outcome, latency_ms, steps, diagnosis, manual)
SELECT m.id, ts, ts, CASE WHEN m.state = 'down' AND ts > m.state_since THEN 'fail' ELSE 'ok' END,
       3 + (m.id % 40) + (extract(epoch FROM ts)::bigint % 17), '[]',
       CASE WHEN m.state = 'down' AND ts > m.state_since THEN 'tcp_timeout' END, false
FROM monitors m,
     generate_series(date_trunc('minute', now()) - interval '24 hours', now(), interval '15 minutes') AS ts
WHERE m.terminal_id IS NOT NULL""",
    ),
    (
        "rollups (hourly, 48 h)",
        """
INSERT INTO rollups (monitor_id, period, bucket_start, count, ok_count, latency_sum_ms, latency_min_ms,
                     latency_max_ms, seconds_down, seconds_unknown)
SELECT m.id, 'hour', b, 60, 60, 60 * (3 + m.id % 40), 3, 50, 0, 0
FROM monitors m,
     generate_series(date_trunc('hour', now()) - interval '48 hours', date_trunc('hour', now()),
                     interval '1 hour') AS b""",
    ),
    (
        "rollups (daily, 30 days)",
        """
INSERT INTO rollups (monitor_id, period, bucket_start, count, ok_count, latency_sum_ms, latency_min_ms,
                     latency_max_ms, seconds_down, seconds_unknown)
SELECT m.id, 'day', b, 1440, 1430, 1440 * (3 + m.id % 40), 3, 80, 600, 0
FROM monitors m,
     generate_series(date_trunc('day', now()) - interval '30 days', date_trunc('day', now()),
                     interval '1 day') AS b""",
    ),
    (
        "address changes",
        """
INSERT INTO terminal_events (terminal_id, at, kind, detail, source)
SELECT id, now() - make_interval(days => id % 30), 'address_changed',
       jsonb_build_object('old', '10.9.' || id % 256 || '.1:8443', 'new', lan_host || ':' || lan_port),
       'bench'
FROM terminals WHERE id % 10 = 0""",
    ),
]


async def prepare(url: str, stores: int, per_store: int, reuse: bool) -> None:
    name = make_url(url).database
    if reuse:
        try:
            database = Database(url)
            async with database.engine.connect() as conn:
                n = await conn.scalar(text("SELECT count(*) FROM terminals"))
            await database.dispose()
            if n == stores * per_store:
                print(f"reusing {name}: {n:,} terminals already there")
                return
        except Exception:
            pass
    await server_execute(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await server_execute(url, f'CREATE DATABASE "{name}"')
    database = Database(url)
    await migrate(database.engine)
    started = time.perf_counter()
    async with database.engine.begin() as conn:
        for label, sql in FILL:
            t0 = time.perf_counter()
            sql = sql.replace(":stores", str(int(stores))).replace(":per_store", str(int(per_store)))
            result = await conn.execute(text(sql))
            print(f"  {label:<36} {result.rowcount:>11,} rows  {time.perf_counter() - t0:6.1f} s", flush=True)
        for table in ("stores", "terminals"):
            await conn.execute(
                text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")
            )
    async with database.engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text("VACUUM ANALYZE"))
    print(f"  filled and analysed in {time.perf_counter() - started:.0f} s")
    await database.dispose()


async def sizes(url: str) -> dict[str, int]:
    database = Database(url)
    out = {}
    async with database.engine.connect() as conn:
        for table in (
            "stores",
            "terminals",
            "monitors",
            "state_changes",
            "check_results",
            "rollups",
            "terminal_events",
        ):
            out[table] = await conn.scalar(text(f"SELECT count(*) FROM {table}"))
    await database.dispose()
    return out


async def sample_targets(url: str) -> dict[str, str]:
    database = Database(url)
    async with database.engine.connect() as conn:
        # A down terminal as filled; after bench/load.py's checker ran on the fleet, maybe none.
        down = await conn.scalar(
            text("SELECT poiid FROM terminals WHERE status = 'down' ORDER BY id LIMIT 1 OFFSET 300")
        ) or await conn.scalar(text("SELECT poiid FROM terminals ORDER BY id LIMIT 1 OFFSET 300"))
        store = await conn.scalar(text("SELECT code FROM stores ORDER BY id LIMIT 1 OFFSET 2500"))
        ids = (
            (await conn.execute(text("SELECT id FROM terminals ORDER BY id LIMIT 50 OFFSET 20000")))
            .scalars()
            .all()
        )
        serial = await conn.scalar(text("SELECT serial FROM terminals ORDER BY id LIMIT 1 OFFSET 31337"))
    await database.dispose()
    return {"down": down, "store": store, "known": ",".join(f"{i}:x" for i in ids), "serial": serial}


# --- server ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(url: str, workers: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "TERMPULSE_DATABASE_URL": url, "TERMPULSE_LOG_LEVEL": "WARNING"}
    cmd = [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        "app.main:create_app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-access-log",
        "--log-level",
        "warning",
        "--workers",
        str(workers),
    ]
    try:
        import uvloop  # noqa: F401

        cmd += ["--loop", "uvloop"]
    except ImportError:
        pass
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env)
    base = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("the server did not start")


# --- measuring -------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def server_ms(response: httpx.Response) -> float:
    m = re.search(r"dur=([\d.]+)", response.headers.get("server-timing", ""))
    return float(m.group(1)) if m else float("nan")


async def sequential(client: httpx.AsyncClient, pages: dict[str, str], n: int) -> None:
    print(f"\nSequential, {n} requests per page (after 5 warm-up requests):")
    print(
        f"  {'page':<34} {'server p50':>10} {'p95':>8} {'round trip p50':>15} {'p95':>8} {'bytes':>9}"
        "  target p95 < 150 ms"
    )
    for name, path in pages.items():
        for _ in range(5):
            r = await client.get(path)
            assert r.status_code in (200, 204), (path, r.status_code, r.text[:300])
        server, wall = [], []
        for _ in range(n):
            t0 = time.perf_counter()
            r = await client.get(path, headers={"HX-Request": "true"} if name.startswith("live") else None)
            wall.append((time.perf_counter() - t0) * 1000)
            server.append(server_ms(r))
        ok = "ok" if pct(server, 0.95) < 150 else "SLOW"
        print(
            f"  {name:<34} {pct(server, 0.5):8.1f} ms {pct(server, 0.95):6.1f} ms {pct(wall, 0.5):13.1f} ms "
            f"{pct(wall, 0.95):6.1f} ms {len(r.content):9,}  {ok}"
        )


async def concurrent(base: str, pages: dict[str, str], clients: int, seconds: float) -> None:
    paths = [p for name, p in pages.items() if not name.startswith("live")]
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as client:

        async def one(k: int) -> None:
            nonlocal errors
            i = k
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                r = await client.get(paths[i % len(paths)])
                latencies.append((time.perf_counter() - t0) * 1000)
                errors += r.status_code != 200
                i += 1

        started = time.perf_counter()
        await asyncio.gather(*(one(k) for k in range(clients)))
        elapsed = time.perf_counter() - started
    print(f"\n{clients} concurrent clients, {seconds:.0f} s, pages in rotation ({len(paths)} kinds):")
    print(
        f"  {len(latencies) / elapsed:,.0f} requests/s, round trip p50 {pct(latencies, 0.5):.0f} ms, "
        f"p95 {pct(latencies, 0.95):.0f} ms, {errors} errors, {len(latencies):,} requests"
    )


async def explain(url: str, targets: dict[str, str]) -> None:
    """Run each page's queries through the dashboard code and EXPLAIN ANALYZE every statement."""
    from app.dashboard import queries

    database = Database(url)
    captured: list[tuple[str, object]] = []

    @event.listens_for(database.engine.sync_engine, "before_cursor_execute")
    def grab(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("SELECT"):
            captured.append((statement, parameters))

    class P(dict):
        def get(self, k, d=None):
            return super().get(k, d)

    async def run(label, coro_fn):
        captured.clear()
        async with database.sessionmaker() as s:
            await coro_fn(s)
        return label, list(captured)

    plans = [
        await run("overview", lambda s: _overview(queries, s)),
        await run(
            "list page 1", lambda s: queries.terminal_page(s, queries.TerminalFilters.from_params(P()))
        ),
        await run(
            "list filtered",
            lambda s: queries.terminal_page(
                s, queries.TerminalFilters.from_params(P(status="down", region="North"))
            ),
        ),
        await run(
            "list page 500",
            lambda s: queries.terminal_page(s, queries.TerminalFilters.from_params(P(page="500"))),
        ),
        await run(
            "list search serial",
            lambda s: queries.terminal_page(s, queries.TerminalFilters.from_params(P(q=targets["serial"]))),
        ),
        await run("store page", lambda s: _store(queries, s, targets["store"])),
        await run("terminal detail", lambda s: queries.terminal_detail(s, targets["down"])),
    ]
    print(
        "\nEXPLAIN ANALYZE of every query a page runs"
        " (time, and any sequential scan of a table that grows with the fleet):"
    )
    raw = await database.engine.raw_connection()
    try:
        conn = raw.driver_connection
        for label, statements in plans:
            total, notes = 0.0, []
            for sql, params in statements:
                pg_sql, args = _asyncpg(sql, params)
                rows = await conn.fetch("EXPLAIN (ANALYZE, FORMAT TEXT) " + pg_sql, *args)
                plan = "\n".join(r[0] for r in rows)
                ms = float(re.search(r"Execution Time: ([\d.]+)", plan).group(1))
                total += ms
                seq = sorted({t for t in re.findall(r"Seq Scan on (\w+)", plan) if t in BIG_TABLES})
                head = " ".join(sql.split())[:70]
                if seq or ms > 20:
                    notes.append(f"      {ms:7.2f} ms  seq scan on {', '.join(seq) or '-'}: {head}…")
            print(f"  {label:<22} {len(statements):2d} queries, {total:7.2f} ms in the database")
            for n in notes:
                print(n)
    finally:
        raw.close()
    await database.dispose()


def _asyncpg(sql: str, params) -> tuple[str, list]:
    """SQLAlchemy's asyncpg dialect already renders $n placeholders; params is a tuple."""
    return sql, list(params or ())


async def _overview(queries, s):
    await queries.fleet_summary(s)
    await queries.store_page(s, page=1, per_page=50)


async def _store(queries, s, code):
    store = await queries.store_by_code(s, code)
    await queries.store_rows(s, [store.id])
    await queries.store_terminals(s, store.id)
    await queries.store_network_monitors(s, store.id)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stores", type=int, default=5000)
    ap.add_argument("--per-store", type=int, default=10)
    ap.add_argument("--requests", type=int, default=60)
    ap.add_argument("--concurrency", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--reuse", action="store_true", help="keep a database already filled to this size")
    ap.add_argument("--keep", action="store_true", help="leave the database after the run")
    args = ap.parse_args()
    url = os.environ.get("TERMPULSE_BENCH_DATABASE_URL", DEFAULT_URL)

    print(f"machine: {describe()}")
    await prepare(url, args.stores, args.per_store, args.reuse)
    n = await sizes(url)
    print("fleet: " + ", ".join(f"{k} {v:,}" for k, v in n.items()))
    targets = await sample_targets(url)
    pages = {
        "overview /": "/",
        "overview, region filter": "/?region=North",
        "list page 1": "/terminals",
        "list filtered (down, North)": "/terminals?status=down&region=North",
        "list filtered (adyen, ws down)": "/terminals?provider=adyen&ws=disconnected&sort=poiid",
        "list page 500": "/terminals?page=500",
        "list search (serial)": f"/terminals?q={targets['serial']}",
        "store page": f"/stores/{targets['store']}",
        "terminal detail": f"/terminals/{targets['down']}",
        "live poll, list (50 rows)": f"/terminals/live?known={targets['known']}",
        "live poll, overview": "/live/overview?known=1:x",
    }
    proc, base = start_server(url, args.workers)
    try:
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            await sequential(client, pages, args.requests)
        await concurrent(base, pages, args.concurrency, args.seconds)
    finally:
        proc.terminate()
        proc.wait(10)
    await explain(url, targets)
    if not args.keep and not args.reuse:
        await server_execute(url, f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')


if __name__ == "__main__":
    asyncio.run(main())
