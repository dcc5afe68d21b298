"""Benchmark: a provider outage disconnects 50,000 terminals at 5,000 stores within a minute.

    .venv/bin/python bench/alerts.py [--stores 5000] [--terminals-per-store 10] [--spread 60]

* PostgreSQL: its own database (`termpulse_bench_alerts` on the server of
  TERMPULSE_TEST_DATABASE_URL, default the local one), migrated, dropped at the end.
* The fleet: one cloud monitor per terminal, all up. The outage: every monitor's failing
  result (cloud_disconnected) written through the one writer (app.monitoring.writer
  write_outcomes: results, the state machine, state changes, derived status), store by store
  in random order, spread over `--spread` seconds, in one batch per second.
* Alerting as a worker runs it: app.monitoring.worker.Worker with the alert jobs
  (app.alerts.runner: evaluate every 2 s, deliver every 1 s; default settings: group wait
  10 s, fleet incident above 10 stores within 5 minutes or 5 stores of one cause), one
  routing rule for every incident to a JSON webhook receiver on loopback (Apprise json://).

Figures: incidents opened (store, fleet), messages the receiver got (target: one fleet
message, not thousands), time from the first state change to the fleet message, and from the
last state change to the last message leaving and to every store being in the fleet
incident (target under 30 s); the evaluator's pass times; CPU of this process.

Measured (2 cores AMD EPYC shared with other sessions, PostgreSQL on the same machine):
5,000 stores / 50,000 terminals over 60 s -> 5,000 store incidents grouped into 1 fleet
incident, 1 message (2.2 s after the first state change, listing the 168 stores failing by
then); every store in the fleet incident 2.0 s after the last state change; evaluator passes
median 1.3 s, max 3.4 s.
Not measured here: the checks' throughput with alerting on (bench/checks.py runs without
the alert jobs).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url

from app.db import server_execute
from bench.machine import describe

BENCH_DB = "termpulse_bench_alerts"


class Receiver:
    """A JSON webhook on loopback: when each message arrived (monotonic), and its title."""

    def __init__(self) -> None:
        self.got: list[tuple[float, str]] = []
        self.port = 0

    async def start(self) -> None:
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        import json

        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                (
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ),
                0,
            )
            body = json.loads(await reader.readexactly(length) or b"{}")
            self.got.append((time.monotonic(), str(body.get("title", ""))))
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
        finally:
            writer.close()


async def build_fleet(db, stores: int, per_store: int) -> list[list[int]]:
    """Stores, terminals and their cloud monitors (up); the monitor ids per store."""
    from app.db import bulk_insert, table_of, utcnow
    from app.inventory.models import Monitor, Store, Terminal

    now = utcnow()
    async with db.sessionmaker() as s:
        await bulk_insert(
            s,
            table_of(Store),
            [
                {
                    "code": f"B-{i:05d}",
                    "name": f"Bench store {i}",
                    "region": f"R{i % 8}",
                    "timezone": "Europe/London",
                    "tags": "",
                    "status": "up",
                    "status_since": now,
                    "created_at": now,
                    "updated_at": now,
                }
                for i in range(stores)
            ],
        )
        await s.commit()
        ids = [r[0] for r in (await s.execute(select(Store.id).order_by(Store.id))).all()]
        await bulk_insert(
            s,
            table_of(Terminal),
            [
                {
                    "store_id": sid,
                    "poiid": f"BENCH-{sid}-{t}",
                    "model": "S1F2",
                    "serial": f"{sid}{t}",
                    "label": "",
                    "provider": "adyen",
                    "integration": "cloud",
                    "cloud_enabled": True,
                    "status": "up",
                    "status_since": now,
                    "cloud_state": "connected",
                    "created_at": now,
                    "updated_at": now,
                }
                for sid in ids
                for t in range(per_store)
            ],
        )
        await s.commit()
        terminals = (await s.execute(select(Terminal.id, Terminal.store_id, Terminal.poiid))).all()
        await bulk_insert(
            s,
            table_of(Monitor),
            [
                {
                    "key": f"cloud:{poiid}",
                    "store_id": sid,
                    "terminal_id": tid,
                    "kind": "cloud",
                    "target": poiid,
                    "params": {},
                    "interval_s": 60,
                    "timeout_s": 5.0,
                    "fail_threshold": 1,
                    "success_threshold": 1,
                    "enabled": True,
                    "phase_ms": 0,
                    "next_due_at": None,  # the outage below writes their results
                    "state": "up",
                    "state_since": now,
                    "consecutive_failures": 0,
                    "consecutive_successes": 1,
                    "last_checked_at": now,
                }
                for tid, sid, poiid in terminals
            ],
        )
        await s.commit()
        by_store: dict[int, list[int]] = {}
        for mid, sid in (await s.execute(select(Monitor.id, Monitor.store_id))).all():
            by_store.setdefault(sid, []).append(mid)
    return [by_store[sid] for sid in ids]


async def main(args) -> int:
    from app.alerts import service
    from app.alerts.models import Incident, Notification
    from app.alerts.runner import AlertRunner
    from app.config import Settings
    from app.db import Database, utcnow
    from app.migrate import migrate
    from app.monitoring.worker import Worker
    from app.monitoring.writer import CheckOutcome, write_outcomes

    base = make_url(
        os.environ.get("TERMPULSE_TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/x")
    )
    await server_execute(base, f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
    await server_execute(base, f'CREATE DATABASE "{BENCH_DB}"')
    url = base.set(database=BENCH_DB).render_as_string(hide_password=False)
    db = Database(url, pool_size=5, max_overflow=5)
    worker = None
    try:
        await migrate(db.engine)
        receiver = Receiver()
        await receiver.start()
        settings = Settings(database_url=url, secret_key="bench-secret-key-0123456789abcdef-xyz")
        hook = f"json://127.0.0.1:{receiver.port}/hook"
        async with db.sessionmaker() as s:
            channel = await service.create_channel(s, settings.secret_key, "Ops webhook", hook)
            await service.create_rule(
                s, {"name": "everything", "match": "all", "channel_id": str(channel.id)}
            )
            await s.commit()
        t0 = time.monotonic()
        monitors = await build_fleet(db, args.stores, args.terminals_per_store)
        total = sum(len(m) for m in monitors)
        print(
            f"fleet: {args.stores:,} stores, {total:,} terminals (cloud monitors), "
            f"built in {time.monotonic() - t0:.1f} s"
        )

        runner = AlertRunner(settings, db, owner="bench")
        passes: list[float] = []
        detail: list[str] = []
        evaluate = runner.evaluate

        async def timed_evaluate():
            started = time.monotonic()
            report = await evaluate()
            passes.append(time.monotonic() - started)
            detail.append(f"{passes[-1]:.2f}s/{report.changes}ch/{report.opened}op")
            return report

        runner.evaluate = timed_evaluate  # type: ignore[method-assign]
        worker = Worker(settings, db, cloud=False, maintenance=False, jobs=runner.jobs())
        await worker.start()
        await asyncio.sleep(3)  # the first pass sets the cursor

        order = list(range(len(monitors)))
        random.Random(7).shuffle(order)
        batches = max(1, int(args.spread))
        per_batch = -(-len(order) // batches)
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        first_change = last_change = None
        outage_start = time.monotonic()
        for b in range(batches):
            chunk = order[b * per_batch : (b + 1) * per_batch]
            if not chunk:
                break
            now = utcnow()
            outcomes = [
                CheckOutcome(mid, "fail", now, diagnosis="cloud_disconnected", detail="bench outage")
                for i in chunk
                for mid in monitors[i]
            ]
            await write_outcomes(db, outcomes)
            last_change = time.monotonic()
            first_change = first_change or last_change
            await asyncio.sleep(max(0.0, outage_start + (b + 1) * args.spread / batches - time.monotonic()))
        print(f"outage written: {total:,} state changes over {last_change - first_change:.1f} s")

        async def settled() -> tuple[int, int]:
            async with db.sessionmaker() as s:
                in_fleet = await s.scalar(
                    select(func.count()).where(Incident.kind == "store", Incident.parent_id.is_not(None))
                )
                pending = await s.scalar(select(func.count()).where(Notification.state == "pending"))
            return int(in_fleet or 0), int(pending or 0)

        all_in_fleet_at = None
        deadline = time.monotonic() + args.wait
        while time.monotonic() < deadline:
            in_fleet, pending = await settled()
            if in_fleet >= args.stores and all_in_fleet_at is None:
                all_in_fleet_at = time.monotonic()
            if all_in_fleet_at is not None and pending == 0 and time.monotonic() - all_in_fleet_at > 10:
                break
            await asyncio.sleep(0.5)
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        async with db.sessionmaker() as s:
            kinds = dict((await s.execute(select(Incident.kind, func.count()).group_by(Incident.kind))).all())
            notes = (await s.execute(select(func.count()).select_from(Notification))).scalar()
            changes = (await s.execute(text("SELECT count(*) FROM state_changes"))).scalar()
        fleet_msgs = [t for t, title in receiver.got if "Fleet incident" in title]
        print()
        print(f"machine: {describe()}")
        print(f"fleet: {args.stores:,} stores / {total:,} terminals disconnecting within {args.spread:g} s")
        print(f"state changes: {changes:,}")
        print(
            f"incidents opened: {kinds.get('store', 0):,} store, {kinds.get('fleet', 0)} fleet, "
            f"{kinds.get('cannot_check', 0)} cannot-check"
        )
        print(
            f"notifications queued: {notes}; messages received: {len(receiver.got)} "
            f"(fleet: {len(fleet_msgs)})"
        )
        for t, title in receiver.got[:5]:
            print(f"  +{t - first_change:6.1f} s after the first change: {title}")
        if fleet_msgs:
            print(f"first state change -> fleet message received: {fleet_msgs[0] - first_change:.1f} s")
        if receiver.got:
            print(
                f"last state change -> last message received: {receiver.got[-1][0] - last_change:+.1f} s "
                "(negative: the fleet message left before the outage was over)"
            )
        if all_in_fleet_at is not None:
            print(
                "last state change -> every store in the fleet incident: "
                f"{all_in_fleet_at - last_change:.1f} s"
            )
        else:
            print(f"not every store joined the fleet incident within {args.wait} s")
        if passes:
            ps = sorted(passes)
            print(
                f"evaluator passes: {len(ps)}, median {ps[len(ps) // 2]:.2f} s, max {ps[-1]:.2f} s "
                f"(every {settings.alert_evaluate_every_s:g} s; a longer pass delays the next)"
            )
            if args.verbose:
                print("passes (time/state changes read/incidents opened):", " ".join(detail))
        cpu = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
        print(f"CPU of this process (writer, evaluator, delivery, receiver): {cpu:.1f} s")
        return 0
    finally:
        if worker is not None:
            await worker.stop()
        await db.dispose()
        if not args.keep:
            await server_execute(base, f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--stores", type=int, default=5000)
    parser.add_argument("--terminals-per-store", type=int, default=10)
    parser.add_argument(
        "--spread", type=float, default=60.0, help="seconds over which the terminals disconnect"
    )
    parser.add_argument("--wait", type=float, default=300.0, help="seconds to wait for alerting to settle")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument("--verbose", action="store_true", help="print every evaluator pass")
    sys.exit(asyncio.run(main(parser.parse_args())))
