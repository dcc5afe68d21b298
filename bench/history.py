"""Uptime history at fleet scale: 5,000 stores x 10 terminals, 30 days of state changes and
rollups, PostgreSQL.

    .venv/bin/python bench/history.py [--stores 5000] [--per-store 10] [--days 30] [--reuse] [--keep]

* Database: its own (`termpulse_bench_history` on the server of TERMPULSE_BENCH_DATABASE_URL,
  default postgresql+asyncpg://postgres@127.0.0.1:5432/...), migrated, filled with COPY
  (asyncpg copy_records_to_table) from rows generated here, ANALYZEd. --reuse keeps a database
  already filled with the same fleet size; --keep leaves it after the run.
* Fleet: stores in five timezones (one with a half-hour offset), each terminal with a TCP and/or
  cloud monitor, each store with 2-4 network monitors. Over days+5 days every monitor has a few
  outages (5-120 min) and unknown spells; one store in 50 has a network outage (every terminal
  down). Rollups: daily for every monitor and day, hourly for the first and last two days, with
  the seconds computed from the same intervals as the state changes (so they agree).
* Figures: a fleet report over the last `days` whole local days (totals, per day, per region:
  what /history shows), the same totals from the rollups (`rollup_totals`), and the full
  exports written to temporary files: the CSV summary (one row per terminal), the per-day CSV
  (one row per terminal and day) and the XLSX (both, with number formats).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

import app.models  # noqa: E402,F401
from app.db import Database, server_execute  # noqa: E402
from app.migrate import migrate  # noqa: E402
from bench.machine import describe  # noqa: E402

# The columns the benches COPY monitors and state changes with (bench/daily.py uses them too).
MONITOR_COLUMNS = [
    "id",
    "key",
    "store_id",
    "terminal_id",
    "kind",
    "target",
    "params",
    "interval_s",
    "timeout_s",
    "fail_threshold",
    "success_threshold",
    "enabled",
    "phase_ms",
    "next_due_at",
    "state",
    "state_since",
    "consecutive_failures",
    "consecutive_successes",
]
CHANGE_COLUMNS = ["monitor_id", "store_id", "terminal_id", "at", "from_state", "to_state", "diagnosis"]

DEFAULT_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/termpulse_bench_history"
ZONES = ("Europe/London", "Europe/Paris", "America/New_York", "Asia/Kolkata", "UTC")
REGIONS = ("North", "South", "East", "West", "Central", "Coast", "Alps", "Islands")
BATCH = 4000  # monitors generated and copied at a time


def outages_for(rng: random.Random, begin: float, end: float, n: int) -> list[tuple[float, float, str]]:
    """Non-overlapping (start, end, state) spells of down/unknown within [begin, end)."""
    spells = []
    for _ in range(n):
        s = rng.uniform(begin, end - 7300)
        spells.append((s, s + rng.uniform(300, 7200), "down" if rng.random() < 0.8 else "unknown"))
    spells.sort()
    out, last = [], begin
    for s, e, st in spells:
        if s > last:
            out.append((s, e, st))
            last = e
    return out


def bucket_seconds(spells, step: int, lo: float, hi: float) -> dict[float, list[float]]:
    """{bucket start: [down, unknown]} for buckets of `step` seconds in [lo, hi)."""
    out: dict[float, list[float]] = {}
    for s, e, st in spells:
        s, e = max(s, lo), min(e, hi)
        b = s // step * step
        while b < e:
            part = min(e, b + step) - max(s, b)
            if part > 0:
                out.setdefault(b, [0.0, 0.0])[0 if st == "down" else 1] += part
            b += step
    return out


async def fill(url: str, stores: int, per_store: int, days: int, now: datetime) -> None:
    name = make_url(url).database
    await server_execute(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await server_execute(url, f'CREATE DATABASE "{name}"')
    database = Database(url)
    await migrate(database.engine)
    rng = random.Random(7)
    t_end = now.timestamp()
    t_begin = (now - timedelta(days=days + 5)).timestamp()
    long_ago = now - timedelta(days=400)
    day0 = (t_end // 86400 - days - 2) * 86400  # daily rollups from here
    first_day = (t_end - days * 86400) // 86400 * 86400  # the day the rolling window starts in
    hour_lo, hour_hi = [
        (first_day - 86400, first_day + 86400),
        (t_end // 86400 * 86400 - 86400, t_end // 3600 * 3600),
    ]

    started = time.perf_counter()
    async with database.engine.begin() as conn:
        raw = (await conn.get_raw_connection()).driver_connection
        store_rows = [
            (
                i,
                f"S-{i:05d}",
                f"Store #{i}",
                REGIONS[i % len(REGIONS)],
                ZONES[i % len(ZONES)],
                "",
                "up",
                long_ago,
                long_ago,
                long_ago,
            )
            for i in range(1, stores + 1)
        ]
        await raw.copy_records_to_table(
            "stores",
            records=store_rows,
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
        term_rows = []
        for i in range(1, stores * per_store + 1):
            sid = 1 + (i - 1) // per_store
            term_rows.append(
                (
                    i,
                    sid,
                    f"P400-{100000000 + i}",
                    "P400",
                    str(100000000 + i),
                    f"Till {1 + (i - 1) % per_store}",
                    "adyen",
                    ("cloud", "local", "both")[i % 3],
                    i % 3 != 1,
                    "up",
                    long_ago,
                    "connected",
                    long_ago,
                    long_ago,
                )
            )
        await raw.copy_records_to_table(
            "terminals",
            records=term_rows,
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
        # monitors: (id, store_id, terminal_id, kind)
        monitors = []
        for t in term_rows:
            tid, sid, integration = t[0], t[1], t[7]
            if integration in ("local", "both"):
                monitors.append((len(monitors) + 1, sid, tid, "tcp"))
            if integration in ("cloud", "both"):
                monitors.append((len(monitors) + 1, sid, tid, "cloud"))
        for sid in range(1, stores + 1):
            for k in range(2 + sid % 3):
                monitors.append((len(monitors) + 1, sid, None, ("dns", "tcp")[k % 2]))
        counts = {
            "stores": stores,
            "terminals": len(term_rows),
            "monitors": len(monitors),
            "state_changes": 0,
            "rollups": 0,
        }
        # the store-wide network outages: one store in 50
        store_outage = {
            sid: outages_for(rng, t_begin, t_end, 1) for sid in range(1, stores + 1) if sid % 50 == 0
        }
        for i in range(0, len(monitors), BATCH):
            batch = monitors[i : i + BATCH]
            mon_rows, changes, rollups = [], [], []
            for mid, sid, tid, kind in batch:
                if tid is None and sid in store_outage:
                    spells = store_outage[sid]
                else:
                    spells = outages_for(rng, t_begin, t_end, rng.choice((1, 2, 3, 4, 6)))
                state, at = "up", t_begin
                changes.append((mid, sid, tid, datetime.fromtimestamp(t_begin, UTC), "unknown", "up", None))
                for s, e, st in spells:
                    changes.append(
                        (
                            mid,
                            sid,
                            tid,
                            datetime.fromtimestamp(s, UTC),
                            "up",
                            st,
                            "tcp_timeout" if st == "down" else "provider_unavailable",
                        )
                    )
                    if e < t_end:
                        changes.append((mid, sid, tid, datetime.fromtimestamp(e, UTC), st, "up", None))
                        state, at = "up", e
                    else:
                        state, at = st, s
                mon_rows.append(
                    (
                        mid,
                        f"b{mid}",
                        sid,
                        tid,
                        kind,
                        "127.0.0.1:1",
                        "{}",
                        60,
                        5.0,
                        2,
                        1,
                        True,
                        mid % 60000,
                        now,
                        state,
                        datetime.fromtimestamp(at, UTC),
                        0,
                        0,
                    )
                )
                for step, period, lo, hi in (
                    (86400, "day", day0, t_end // 86400 * 86400),
                    (3600, "hour", *hour_lo),
                    (3600, "hour", *hour_hi),
                ):
                    secs = bucket_seconds(spells, step, lo, hi)
                    b = lo
                    while b < hi:
                        d, u = secs.get(b, (0.0, 0.0))
                        n = step // 60
                        rollups.append(
                            (
                                mid,
                                period,
                                datetime.fromtimestamp(b, UTC),
                                n,
                                n - int(d // 60),
                                8.0 * n,
                                3.0,
                                90.0,
                                round(d, 3),
                                round(u, 3),
                            )
                        )
                        b += step
            await raw.copy_records_to_table(
                "monitors",
                records=mon_rows,
                columns=MONITOR_COLUMNS,
            )
            await raw.copy_records_to_table(
                "state_changes",
                records=changes,
                columns=CHANGE_COLUMNS,
            )
            await raw.copy_records_to_table(
                "rollups",
                records=rollups,
                columns=[
                    "monitor_id",
                    "period",
                    "bucket_start",
                    "count",
                    "ok_count",
                    "latency_sum_ms",
                    "latency_min_ms",
                    "latency_max_ms",
                    "seconds_down",
                    "seconds_unknown",
                ],
            )
            counts["state_changes"] += len(changes)
            counts["rollups"] += len(rollups)
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


async def run(args) -> None:
    from app.history.export import write_csv, write_xlsx
    from app.history.uptime import Period, report, rollup_totals, terminal_chunks

    url = os.environ.get("TERMPULSE_BENCH_DATABASE_URL", DEFAULT_URL)
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    reuse = False
    if args.reuse:
        try:
            db = Database(url)
            async with db.engine.connect() as conn:
                reuse = (
                    await conn.scalar(text("SELECT count(*) FROM terminals")) == args.stores * args.per_store
                )
            await db.dispose()
        except Exception:
            reuse = False
    if reuse:
        print("  reusing the filled database")
    else:
        await fill(url, args.stores, args.per_store, args.days, now)

    database = Database(url)
    try:
        async with database.engine.connect() as conn:
            sizes = {
                t: await conn.scalar(text(f"SELECT count(*) FROM {t}"))
                for t in ("stores", "terminals", "monitors", "state_changes", "rollups")
            }
        print("fleet: " + ", ".join(f"{k} {v:,}" for k, v in sizes.items()))
        print(f"machine: {describe()}")
        today = now.date()
        period = Period.dates(today - timedelta(days=args.days), today - timedelta(days=1))

        t0 = time.perf_counter()
        async with database.sessionmaker() as s:
            rep = await report(s, "fleet", None, period, title="Fleet")
        t_report = time.perf_counter() - t0
        f = rep.total
        print(
            f"fleet report, {args.days} local days ({period.label()}), exact from state changes, "
            f"with per day and per region: {t_report:.2f} s — {f.terminals:,} terminals, "
            f"uptime {f.uptime_pct} %, {f.outages:,} outages, unknown {f.unknown / 3600:,.0f} h"
        )

        start, end = now - timedelta(days=args.days), now
        t0 = time.perf_counter()
        total_up = total_down = 0.0
        fell_back = n = 0
        async with database.sessionmaker() as s:
            async for chunk in terminal_chunks(s, "fleet"):
                figures, fb = await rollup_totals(s, chunk, start, end, now=now)
                fell_back += fb
                n += len(chunk)
                total_up += sum(x.up for x in figures.values())
                total_down += sum(x.down for x in figures.values())
        t_rollups = time.perf_counter() - t0
        print(
            f"fleet totals, last {args.days} x 24 h, rollups + edges: {t_rollups:.2f} s — uptime "
            f"{100 * total_up / (total_up + total_down):.3f} %, {fell_back:,} of {n:,} terminals needed "
            "their state changes (faults of several monitors in one day)"
        )

        t0 = time.perf_counter()
        async with database.sessionmaker() as s:
            from app.history.uptime import uptime_for_terminals

            exact_up = exact_down = 0.0
            async for chunk in terminal_chunks(s, "fleet"):
                for u in await uptime_for_terminals(
                    s, chunk, Period.rolling(start, end), per_day=False, now=now
                ):
                    exact_up += u.total.up
                    exact_down += u.total.down
        t_exact = time.perf_counter() - t0
        print(
            f"fleet totals, last {args.days} x 24 h, exact from state changes: {t_exact:.2f} s — uptime "
            f"{100 * exact_up / (exact_up + exact_down):.3f} % (rollups agree: "
            f"{abs(exact_up - total_up) < 1 and abs(exact_down - total_down) < 1})"
        )

        for table in ("summary", "days"):
            with tempfile.NamedTemporaryFile("w", suffix=".csv", encoding="utf-8", newline="") as out:
                t0 = time.perf_counter()
                async with database.sessionmaker() as s:
                    await write_csv(s, out, "fleet", None, period, by="terminal", table=table)
                out.flush()
                t_csv = time.perf_counter() - t0
                # Measured already: blocking file calls are fine from here on.
                size = os.path.getsize(out.name)  # noqa: ASYNC240
                with open(out.name, encoding="utf-8") as f_in:  # noqa: ASYNC230
                    lines = sum(1 for _ in f_in)
            what = "one row per terminal" if table == "summary" else "one row per terminal and day"
            print(
                f"CSV export ({table}), fleet by terminal, {args.days} days: {t_csv:.2f} s — {lines:,} lines "
                f"({what}), {size / 2**20:.1f} MiB"
            )
        with tempfile.NamedTemporaryFile(suffix=".xlsx") as xlsx:
            t0 = time.perf_counter()
            async with database.sessionmaker() as s:
                await write_xlsx(s, xlsx.name, "fleet", None, period, by="terminal")
            t_xlsx = time.perf_counter() - t0
            size = os.path.getsize(xlsx.name)  # noqa: ASYNC240
        print(
            f"XLSX export (summary and per-day sheets, number formats), fleet by terminal, {args.days} days: "
            f"{t_xlsx:.2f} s — {size / 2**20:.1f} MiB"
        )
    finally:
        await database.dispose()
        if not args.keep:
            await server_execute(url, f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stores", type=int, default=5000)
    p.add_argument("--per-store", type=int, default=10)
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--reuse", action="store_true")
    p.add_argument("--keep", action="store_true")
    asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    main()
