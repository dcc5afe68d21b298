"""Yearly fleet export from the stored daily uptime: 5,000 stores x 10 terminals, a year of
state changes and of stored days, PostgreSQL.

    .venv/bin/python bench/daily.py [--stores 5000] [--per-store 10] [--days 365] [--reuse] [--keep]
                                    [--no-exact]

* Database: its own (`termpulse_bench_daily` on the server of TERMPULSE_BENCH_DATABASE_URL),
  migrated, filled with COPY. Stores in five time zones (one with a half-hour offset, three with
  daylight saving); each terminal has one TCP monitor with 6-18 down or unknown spells a year
  (5 min to 2 h, whole seconds) and one terminal in 100 a two-day outage.
* The stored days are generated here from the same spells and bulk inserted (COPY), not made
  by the job: the job computes them with the exact computation, and a year of it for the fleet
  costs about what one exact yearly export costs (the `exact` figure below). The exports are
  compared: the stored path's CSV must be byte-identical to the exact one's.
* Each export runs in a fresh process (so its peak RSS is its own): the yearly CSV summary
  (one row per terminal; and one row per store) over the last `days` local days up to today,
  today itself computed exactly; then the History page's 30-day fleet report (per day and per
  region). Figures: wall time, CPU time of the export's process and of its PostgreSQL backend
  (read from /proc: the server must be on this machine), peak RSS, rows, and the load average.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

import app.models  # noqa: E402,F401
from app.db import Database, server_execute  # noqa: E402
from app.migrate import migrate  # noqa: E402
from bench.history import CHANGE_COLUMNS, MONITOR_COLUMNS  # noqa: E402
from bench.machine import describe  # noqa: E402

DEFAULT_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/termpulse_bench_daily"
ZONES = ("Europe/London", "Europe/Paris", "America/New_York", "Asia/Kolkata", "UTC")
REGIONS = ("North", "South", "East", "West", "Central", "Coast", "Alps", "Islands")
BATCH = 2000  # terminals generated and copied at a time
DAY_COLUMNS = [
    "terminal_id",
    "day",
    "store_id",
    "up_s",
    "down_s",
    "unknown_s",
    "paused_s",
    "not_monitored_s",
    "span_s",
    "outages",
    "longest_outage_s",
    "downs",
    "run_up_s",
    "run_down_s",
    "run_unknown_s",
    "run_paused_s",
    "run_days",
]


def spells_for(rng: random.Random, begin: int, end: int, long_outage: bool) -> list[tuple[int, int, str]]:
    """Non-overlapping, separated (start, end, state) down/unknown spells in whole seconds."""
    raw = []
    for _ in range(rng.choice((6, 12, 18))):
        s = rng.randint(begin, end - 7300)
        raw.append((s, s + rng.randint(300, 7200), "down" if rng.random() < 0.8 else "unknown"))
    if long_outage:
        s = rng.randint(begin, end - 3 * 86400)
        raw.append((s, s + 2 * 86400, "down"))
    out: list[tuple[int, int, str]] = []
    for s, e, st in sorted(raw):
        if not out or s > out[-1][1]:
            out.append((s, e, st))
    return out


def local_days(tz: str, first: date, last: date) -> tuple[list[date], list[float], list[float]]:
    from app.history.daily import day_start

    days, starts, ends = [], [], []
    d = first
    while d <= last:
        days.append(d)
        starts.append(day_start(d, tz).timestamp())
        ends.append(day_start(d + timedelta(days=1), tz).timestamp())
        d += timedelta(days=1)
    return days, starts, ends


def day_rows(tid: int, sid: int, calendar, spells) -> list[tuple]:
    """The stored days of one terminal, as the exact computation makes them for one monitor
    that is up outside its spells."""
    days, starts, ends = calendar
    figures: dict[int, list] = {}  # day index -> [down, unknown, outages, longest, downs]
    for s, e, st in spells:
        i = max(0, bisect.bisect_right(starts, s) - 1)
        while i < len(days) and starts[i] < e:
            lo, hi = max(s, starts[i]), min(e, ends[i])
            if hi > lo:
                f = figures.setdefault(i, [0.0, 0.0, 0, 0.0, []])
                if st == "down":
                    f[0] += hi - lo
                    f[2] += 1
                    f[3] = max(f[3], hi - lo)
                    f[4].append([lo, hi])
                else:
                    f[1] += hi - lo
            i += 1
    rows = []
    run = [0.0, 0.0, 0.0]  # running totals: up, down, unknown
    for i, d in enumerate(days):
        span = ends[i] - starts[i]
        down, unknown, outages, longest, downs = figures.get(i, (0.0, 0.0, 0, 0.0, ()))
        run = [run[0] + span - down - unknown, run[1] + down, run[2] + unknown]
        rows.append(
            (
                tid,
                d,
                sid,
                span - down - unknown,
                down,
                unknown,
                0.0,
                0.0,
                span,
                outages,
                longest,
                json.dumps(downs) if downs else "[]",
                *run,
                0.0,
                i + 1,
            )
        )
    return rows


async def fill(url: str, stores: int, per_store: int, days: int, now: datetime) -> dict[str, int]:
    from app.history.daily import last_closed_day, local_date

    name = make_url(url).database
    await server_execute(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await server_execute(url, f'CREATE DATABASE "{name}"')
    database = Database(url)
    await migrate(database.engine)
    rng = random.Random(11)
    long_ago = now - timedelta(days=days + 400)
    t_end = int(now.timestamp()) - 3600
    t_begin = int((now - timedelta(days=days + 3)).timestamp())
    calendars = {
        tz: local_days(tz, local_date(now, tz) - timedelta(days=days + 1), last_closed_day(tz, now))
        for tz in ZONES
    }
    counts = {"stores": stores, "terminals": stores * per_store, "state_changes": 0, "daily_uptime": 0}
    started = time.perf_counter()
    async with database.engine.begin() as conn:
        raw = (await conn.get_raw_connection()).driver_connection
        await raw.copy_records_to_table(
            "stores",
            records=[
                (
                    i,
                    f"S-{i:05d}",
                    f"Store #{i}",
                    REGIONS[i % 8],
                    ZONES[i % 5],
                    "",
                    "up",
                    long_ago,
                    long_ago,
                    long_ago,
                )
                for i in range(1, stores + 1)
            ],
            columns=[
                "id",
                "code",
                "name",
                "region",
                "timezone",
                "tags",
                "status",
                "status_since",
                "created_at",
                "updated_at",
            ],
        )
        for lo in range(1, stores * per_store + 1, BATCH):
            terms, mons, changes, fills, rows = [], [], [], [], []
            for tid in range(lo, min(lo + BATCH, stores * per_store + 1)):
                sid = 1 + (tid - 1) // per_store
                tz = ZONES[sid % 5]
                terms.append(
                    (
                        tid,
                        sid,
                        f"P400-{100000000 + tid}",
                        "P400",
                        str(100000000 + tid),
                        "Till",
                        "adyen",
                        "local",
                        False,
                        "up",
                        long_ago,
                        "not_enabled",
                        long_ago,
                        long_ago,
                    )
                )
                spells = spells_for(rng, t_begin + 86400, t_end, tid % 100 == 0)
                changes.append((tid, sid, tid, datetime.fromtimestamp(t_begin, UTC), "unknown", "up", None))
                for s, e, st in spells:
                    changes.append((tid, sid, tid, datetime.fromtimestamp(s, UTC), "up", st, None))
                    changes.append((tid, sid, tid, datetime.fromtimestamp(e, UTC), st, "up", None))
                mons.append(
                    (
                        tid,
                        f"b{tid}",
                        sid,
                        tid,
                        "tcp",
                        "127.0.0.1:1",
                        "{}",
                        60,
                        5.0,
                        2,
                        1,
                        True,
                        tid % 60000,
                        now,
                        "up",
                        datetime.fromtimestamp(changes[-1][3].timestamp(), UTC),
                        0,
                        0,
                    )
                )
                calendar = calendars[tz]
                mine = day_rows(tid, sid, calendar, spells)
                rows += mine
                fills.append((tid, sid, tz, f"{tid}|", calendar[0][0], calendar[0][-1], *mine[-1][12:]))
            await raw.copy_records_to_table(
                "terminals",
                records=terms,
                columns=[
                    "id",
                    "store_id",
                    "poiid",
                    "model",
                    "serial",
                    "label",
                    "provider",
                    "integration",
                    "cloud_enabled",
                    "status",
                    "status_since",
                    "cloud_state",
                    "created_at",
                    "updated_at",
                ],
            )
            await raw.copy_records_to_table(
                "monitors",
                records=mons,
                columns=MONITOR_COLUMNS,
            )
            await raw.copy_records_to_table(
                "state_changes",
                records=changes,
                columns=CHANGE_COLUMNS,
            )
            await raw.copy_records_to_table("daily_uptime", records=rows, columns=DAY_COLUMNS)
            await raw.copy_records_to_table(
                "daily_uptime_fill",
                records=fills,
                columns=[
                    "terminal_id",
                    "store_id",
                    "tz",
                    "monitors",
                    "filled_from",
                    "filled_until",
                    *DAY_COLUMNS[12:],
                ],
            )
            counts["state_changes"] += len(changes)
            counts["daily_uptime"] += len(rows)
        for table in ("stores", "terminals", "monitors"):
            await conn.execute(
                text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")
            )
    async with database.engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text("VACUUM ANALYZE"))
    print(
        f"  filled by COPY and analysed in {time.perf_counter() - started:.0f} s: "
        + ", ".join(f"{k} {v:,}" for k, v in counts.items())
    )
    await database.dispose()
    return counts


async def measure(url: str, path: str, by: str, days: int, now: datetime) -> dict[str, object]:
    """One yearly CSV export (this process does nothing else): time, peak RSS, rows, digest."""
    from app.history.daily import stored_uptime
    from app.history.export import write_csv
    from app.history.uptime import Period, report, uptime_for_terminals

    compute = stored_uptime if path == "stored" else uptime_for_terminals
    today = now.date()
    period = Period.dates(today - timedelta(days=days - 1), today)
    database = Database(url)
    if by == "report":  # the History page's fleet report: totals, per day, per region
        t0, cpu0 = time.perf_counter(), time.process_time()
        async with database.sessionmaker() as s:
            backend = await s.scalar(text("SELECT pg_backend_pid()"))
            db0 = backend_cpu_s(backend)
            rep = await report(s, "fleet", None, period, now=now, compute=compute)
            db_cpu = backend_cpu_s(backend) - db0
        seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        await database.dispose()
        rss_mb = peak_rss_mb()
        text_ = json.dumps(rep.as_dict(), sort_keys=True, default=str)
        return {
            "seconds": seconds,
            "cpu_s": cpu,
            "db_cpu_s": db_cpu,
            "rss_mb": rss_mb,
            "lines": len(rep.days),
            "sha256": _digest(text_),
        }
    digest = hashlib.sha256()
    with tempfile.NamedTemporaryFile("w+", suffix=".csv", encoding="utf-8", newline="") as out:
        t0, cpu0 = time.perf_counter(), time.process_time()
        async with database.sessionmaker() as s:
            backend = await s.scalar(text("SELECT pg_backend_pid()"))
            db0 = backend_cpu_s(backend)
            await write_csv(s, out, "fleet", None, period, by=by, table="summary", now=now, compute=compute)
            db_cpu = backend_cpu_s(backend) - db0
        out.flush()
        seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        out.seek(0)
        lines = 0
        for line in out:
            digest.update(line.encode())
            lines += 1
    await database.dispose()
    rss_mb = peak_rss_mb()
    return {
        "seconds": seconds,
        "cpu_s": cpu,
        "db_cpu_s": db_cpu,
        "rss_mb": rss_mb,
        "lines": lines,
        "sha256": digest.hexdigest(),
    }


def backend_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of a PostgreSQL backend on this machine, from /proc (the
    machine is shared: CPU time says more than wall time under load)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:  # a server elsewhere
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb() -> float:
    """This process's peak RSS since it started (VmHWM: ru_maxrss would carry the parent's
    peak over fork and exec)."""
    with open("/proc/self/status") as f:
        kib = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    return kib / 1024


def _digest(text_: str) -> str:
    return hashlib.sha256(text_.encode()).hexdigest()


def load() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def run_measure(url: str, path: str, by: str, days: int, now: datetime) -> dict[str, object]:
    cmd = [
        sys.executable,
        __file__,
        "--measure",
        path,
        "--by",
        by,
        "--days",
        str(days),
        "--now",
        now.isoformat(),
    ]
    out = subprocess.run(
        cmd,
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "TERMPULSE_BENCH_DATABASE_URL": url},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stores", type=int, default=5000)
    p.add_argument("--per-store", type=int, default=10)
    p.add_argument("--days", type=int, default=365)
    p.add_argument("--reuse", action="store_true")
    p.add_argument("--keep", action="store_true")
    p.add_argument(
        "--no-exact", action="store_true", help="skip the exact path (minutes at 50,000 terminals)"
    )
    p.add_argument("--measure", choices=("stored", "exact"), help=argparse.SUPPRESS)
    p.add_argument("--by", default="terminal", help=argparse.SUPPRESS)
    p.add_argument("--now", help=argparse.SUPPRESS)
    args = p.parse_args()
    url = os.environ.get("TERMPULSE_BENCH_DATABASE_URL", DEFAULT_URL)
    if args.measure:
        now = datetime.fromisoformat(args.now)
        print(json.dumps(asyncio.run(measure(url, args.measure, args.by, args.days, now))))
        return
    now = datetime.now(UTC).replace(microsecond=0)
    reuse = False
    if args.reuse:
        reuse = asyncio.run(_filled(url)) == args.stores * args.per_store
    if reuse:
        print("  reusing the filled database")
    else:
        asyncio.run(fill(url, args.stores, args.per_store, args.days, now))
    print(f"machine: {describe()}")
    try:
        results = {}
        for path, by in (
            ("stored", "terminal"),
            ("stored", "store"),
            *(() if args.no_exact else (("exact", "terminal"),)),
        ):
            before = load()
            r = results[(path, by)] = run_measure(url, path, by, args.days, now)
            print(
                f"yearly CSV export ({args.days} local days to today), {args.stores * args.per_store:,} "
                f"terminals, rows per {by}, {path} path: {r['seconds']:.2f} s (CPU {r['cpu_s']:.2f} s, "
                f"its PostgreSQL backend {r['db_cpu_s']:.2f} s), peak RSS "
                f"{r['rss_mb']:.0f} MB, {r['lines']:,} lines (load average before {before}, after {load()})"
            )
        if ("exact", "terminal") in results:
            same = results[("exact", "terminal")]["sha256"] == results[("stored", "terminal")]["sha256"]
            print(f"stored and exact CSV byte-identical: {same}")
        reports = {}
        for path in ("stored", *(() if args.no_exact else ("exact",))):
            before = load()
            r = reports[path] = run_measure(url, path, "report", 30, now)
            print(
                f"fleet report, 30 local days to today (totals, per day, per region), {path} path: "
                f"{r['seconds']:.2f} s (CPU {r['cpu_s']:.2f} s, its PostgreSQL backend "
                f"{r['db_cpu_s']:.2f} s), peak RSS {r['rss_mb']:.0f} MB "
                f"(load average before {before}, after {load()})"
            )
        if len(reports) == 2:
            same = reports["stored"]["sha256"] == reports["exact"]["sha256"]
            print(f"stored and exact reports identical: {same}")
    finally:
        if not args.keep:
            asyncio.run(
                server_execute(url, f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')
            )


async def _filled(url: str) -> int:
    try:
        db = Database(url)
        async with db.engine.connect() as conn:
            n = await conn.scalar(text("SELECT count(*) FROM daily_uptime_fill"))
        await db.dispose()
        return int(n or 0)
    except Exception:
        return 0


if __name__ == "__main__":
    main()
