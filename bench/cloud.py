"""Cloud liveness at scale: 5,000 stores x 10 terminals behind the Adyen simulator, on PostgreSQL.

    .venv/bin/python bench/cloud.py [--stores 5000] [--per-store 10] [--drops 5]

Prints:
* one full cloud sweep (every store due at once, budget unthrottled): wall time and the
  provider calls made (== number of stores, never terminals);
* steady state at the default interval (60 s, budget 100 requests/s): calls in one
  interval, and the end-to-end delay from terminals dropping their cloud connection in the
  simulator to their monitor being `down` in the database (fail threshold 2: between one
  and two intervals by design).

The simulator runs in its own process (so its CPU is not the poller's), on 127.0.0.1 only.
The database is a fresh one on the local PostgreSQL server (TERMPULSE_BENCH_DATABASE_URL,
default postgresql+asyncpg://postgres@127.0.0.1:5432/termpulse_bench_cloud), dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
from sqlalchemy import func, insert, select, text, update
from sqlalchemy.engine import make_url

from app.db import server_execute
from bench.machine import describe

DEFAULT_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/termpulse_bench_cloud"


def _sim_process(stores: int, per_store: int, port_queue) -> None:
    from app.simulator.providers import AdyenSim, SimTerminal

    async def main() -> None:
        terminals = [
            SimTerminal(
                poiid=f"V400m-{s:05d}{t:02d}", store_ref=f"ST{s:05d}", model="V400m", serial=f"{s:05d}{t:02d}"
            )
            for s in range(stores)
            for t in range(per_store)
        ]
        sim = await AdyenSim(terminals).start()
        port_queue.put(sim.url)
        await asyncio.Event().wait()

    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())


async def _load(db, stores: int, per_store: int) -> None:
    """The fleet, inserted in bulk (the CSV import path is benchmarked elsewhere)."""
    from app.config import get_settings
    from app.db import utcnow
    from app.inventory.models import Monitor, Store, Terminal
    from app.schedule import first_due_at, phase_ms

    now, interval = utcnow(), get_settings().check_interval_s
    async with db.sessionmaker() as session:
        await session.execute(
            insert(Store),
            [
                {
                    "code": f"S-{s:05d}",
                    "name": f"Store {s}",
                    "region": "",
                    "timezone": "UTC",
                    "adyen_store_id": f"ST{s:05d}",
                    "tags": "",
                    "status": "unknown",
                }
                for s in range(stores)
            ],
        )
        ids = dict((await session.execute(select(Store.code, Store.id))).all())
        rows = [
            {
                "store_id": ids[f"S-{s:05d}"],
                "poiid": f"V400m-{s:05d}{t:02d}",
                "model": "V400m",
                "serial": f"{s:05d}{t:02d}",
                "label": f"Till {t + 1}",
                "provider": "adyen",
                "integration": "cloud",
                "cloud_enabled": True,
                "status": "unknown",
                "cloud_state": "unknown",
            }
            for s in range(stores)
            for t in range(per_store)
        ]
        for i in range(0, len(rows), 10000):
            await session.execute(insert(Terminal), rows[i : i + 10000])
        terminals = (await session.execute(select(Terminal.id, Terminal.store_id, Terminal.poiid))).all()
        monitors = []
        for tid, sid, poiid in terminals:
            key = f"t{tid}:cloud"
            phase = phase_ms(key, interval)
            monitors.append(
                {
                    "key": key,
                    "store_id": sid,
                    "terminal_id": tid,
                    "kind": "cloud",
                    "target": poiid,
                    "params": {"provider": "adyen"},
                    "interval_s": interval,
                    "timeout_s": 5.0,
                    "phase_ms": phase,
                    "next_due_at": first_due_at(now, interval, phase),
                    "state": "unknown",
                    "state_since": now,
                }
            )
        for i in range(0, len(monitors), 10000):
            await session.execute(insert(Monitor), monitors[i : i + 10000])
        await session.commit()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--stores", type=int, default=5000)
    parser.add_argument("--per-store", type=int, default=10)
    parser.add_argument("--drops", type=int, default=5, help="terminals dropped for the end-to-end delay")
    parser.add_argument("--budget", type=float, default=100.0, help="steady-state requests/s of the account")
    args = parser.parse_args()

    base = make_url(os.environ.get("TERMPULSE_BENCH_DATABASE_URL", DEFAULT_URL))
    name = f"{base.database}_{os.getpid()}"
    url = base.set(database=name)
    await server_execute(base, f'CREATE DATABASE "{name}"')
    os.environ["TERMPULSE_SECRET_KEY"] = "bench-secret-key-0123456789abcdefghij"
    queue = multiprocessing.get_context("spawn").Queue()
    sim_proc = multiprocessing.get_context("spawn").Process(
        target=_sim_process, args=(args.stores, args.per_store, queue), daemon=True
    )
    sim_proc.start()

    from app.config import Settings
    from app.db import Database, utcnow
    from app.inventory.models import Monitor
    from app.migrate import migrate
    from app.monitoring.cloud import CloudPoller
    from app.providers.hosts import ProviderHosts
    from app.providers.models import ProviderAccount
    from app.providers.schemas import AccountIn
    from app.providers.service import create_account

    database = Database(url.render_as_string(hide_password=False), pool_size=20, max_overflow=10)
    try:
        await migrate(database.engine)
        t0 = time.perf_counter()
        await _load(database, args.stores, args.per_store)
        load_s = time.perf_counter() - t0
        sim_url = await asyncio.to_thread(queue.get, True, 120)
        # The simulator on loopback, listed as an admin would (no official provider host).
        settings = Settings(
            database_url=database.url, secret_key="bench-secret", provider_hosts=["127.0.0.1"]
        )
        from app.simulator.providers import ADYEN_TEST_KEY, MERCHANT_ACCOUNT

        async with database.sessionmaker() as session:
            await create_account(
                session,
                settings.secret_key,
                AccountIn(
                    name="Adyen bench",
                    kind="adyen",
                    merchant_account=MERCHANT_ACCOUNT,
                    api_base_url=f"{sim_url}/v1",
                    api_key=ADYEN_TEST_KEY,
                    requests_per_second=1000,
                    poll_interval_s=60,
                ),
                hosts=ProviderHosts.from_settings(settings),
            )
        control = httpx.AsyncClient(base_url=sim_url)
        terminals = args.stores * args.per_store

        # ---- 1. one full sweep: every store due now -----------------------------------------
        async with database.sessionmaker() as session:
            await session.execute(update(Monitor).values(next_due_at=utcnow()))
            await session.execute(update(ProviderAccount).values(requests_per_second=100000))
            await session.commit()
        poller = CloudPoller(database, settings, concurrency=100)
        before = (await control.get("/_sim/calls")).json().get("connectedDevices", 0)
        t0 = time.perf_counter()
        polled = await poller.sweep()
        sweep_s = time.perf_counter() - t0
        sweep_calls = (await control.get("/_sim/calls")).json().get("connectedDevices", 0) - before
        async with database.sessionmaker() as session:
            up = await session.scalar(select(func.count()).select_from(Monitor).where(Monitor.state == "up"))
        await poller.close()

        # ---- 2. steady state at the default interval ----------------------------------------
        async with database.sessionmaker() as session:
            await session.execute(update(ProviderAccount).values(requests_per_second=args.budget))
            await session.commit()
        poller = CloudPoller(database, settings, concurrency=100)
        stop = asyncio.Event()

        async def ticking() -> None:  # what the worker's APScheduler job does, every second
            while not stop.is_set():
                await poller.tick()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)

        runner = asyncio.create_task(ticking())
        # After the forced sweep each store moves onto its own phase (next poll 30-90 s later);
        # measure once every store is there, i.e. in the steady state.
        await asyncio.sleep(95)
        rng = random.Random(7)
        dropped = [
            f"V400m-{rng.randrange(args.stores):05d}{rng.randrange(args.per_store):02d}"
            for _ in range(args.drops)
        ]
        calls_before = (await control.get("/_sim/calls")).json().get("connectedDevices", 0)
        window_start = time.perf_counter()
        await control.post("/_sim/set_connected", json={"poiids": dropped, "connected": False})
        dropped_at = time.perf_counter()
        delays: dict[str, float] = {}
        interval_calls = None
        while len(delays) < len(dropped) and time.perf_counter() - dropped_at < 200:
            await asyncio.sleep(0.25)
            async with database.sessionmaker() as session:
                down = (
                    (
                        await session.execute(
                            select(Monitor.target).where(Monitor.target.in_(dropped), Monitor.state == "down")
                        )
                    )
                    .scalars()
                    .all()
                )
            for poiid in down:
                delays.setdefault(poiid, time.perf_counter() - dropped_at)
            if interval_calls is None and time.perf_counter() - window_start >= 60:
                interval_calls = (await control.get("/_sim/calls")).json()["connectedDevices"] - calls_before
        if interval_calls is None:
            await asyncio.sleep(max(0.0, 60 - (time.perf_counter() - window_start)))
            interval_calls = (await control.get("/_sim/calls")).json()["connectedDevices"] - calls_before
        stop.set()
        await runner
        await poller.close()
        await control.aclose()

        async with database.engine.connect() as conn:
            pg = (await conn.execute(text("SHOW server_version"))).scalar()
        print(
            f"fleet: {args.stores} stores x {args.per_store} terminals = {terminals} cloud terminals "
            f"(one Adyen account, simulator in its own process on 127.0.0.1)"
        )
        print(f"machine: {describe()}, PostgreSQL {pg}")
        print(f"load: {load_s:.1f} s")
        print(
            f"full sweep (all stores due at once, budget unthrottled, 100 concurrent): {sweep_s:.1f} s, "
            f"{sweep_calls} provider calls for {polled} stores, {up}/{terminals} monitors up, "
            f"{sweep_calls / sweep_s:.0f} stores/s"
        )
        print(
            f"steady state (interval 60 s, budget {args.budget:g} req/s): {interval_calls} provider calls "
            f"in one 60 s interval (stores: {args.stores})"
        )
        if delays:
            values = sorted(delays.values())
            print(
                f"drop -> down in the database ({len(values)}/{len(dropped)} terminals, fail threshold 2): "
                f"min {values[0]:.1f} s, median {statistics.median(values):.1f} s, max {values[-1]:.1f} s"
            )
        missing = set(dropped) - set(delays)
        if missing:
            print(f"not down after 200 s: {sorted(missing)}")
    finally:
        sim_proc.terminate()
        await database.dispose()
        await server_execute(base, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    asyncio.run(main())
