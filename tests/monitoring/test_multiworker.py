"""Three workers on PostgreSQL share 2,000 monitors: each due time runs exactly once, and
the monitors of a worker killed mid-batch are run by the others once its leases expire."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from datetime import timedelta

import pytest
from sqlalchemy import select

from app.config import Settings
from app.db import Database, utcnow
from app.inventory.models import Monitor
from app.inventory.monitors import first_due_at
from app.monitoring.models import CheckResult
from app.monitoring.worker import Worker
from tests.monitoring.helpers import add_monitors, add_store, add_terminals

pytestmark = pytest.mark.slow

N = 2000
INTERVAL = 4
LEASE = 3


async def fleet(db, servers) -> list[int]:
    targets = [await servers.listen() for _ in range(8)]
    store = await add_store(db)
    terminals = await add_terminals(db, store, N)
    rng = random.Random(7)
    now = utcnow()
    specs = []
    for i, t in enumerate(terminals):
        phase = rng.randrange(INTERVAL * 1000)
        h, p = targets[i % len(targets)]
        specs.append(
            {
                "store_id": store,
                "terminal_id": t,
                "kind": "tcp",
                "target": f"{h}:{p}",
                "params": {"settle_ms": 0},
                "phase_ms": phase,
                # all due at once at the start (a fleet just imported, or a restart) ...
                "next_due_at": now - timedelta(milliseconds=rng.randrange(500))
                if i % 2
                else first_due_at(now, INTERVAL, phase),
            }
        )  # ... or on their phase
    return await add_monitors(db, specs, interval_s=INTERVAL, timeout_s=2.0)


def workers(pg_db, ctx, n=3) -> list[Worker]:
    s = Settings(
        database_url=pg_db.url,
        allowed_networks=["127.0.0.0/8"],
        lease_s=LEASE,
        claim_batch=250,
        worker_concurrency=300,
    )
    # Separate Database objects: separate engines and connection pools, as separate hosts have.
    return [
        Worker(
            s,
            Database(pg_db.url),
            probe_context=ctx,
            sweep_interval_s=0.5,
            write_delay_s=0.1,
            maintenance=False,
            worker_id=f"w{i}",
        )
        for i in range(n)
    ]


async def check_exactly_once(pg_db, ids) -> dict[int, list]:
    async with pg_db.sessionmaker() as s:
        rows = (
            await s.execute(select(CheckResult.monitor_id, CheckResult.due_at, CheckResult.checked_at))
        ).all()
        nexts = dict((await s.execute(select(Monitor.id, Monitor.next_due_at))).all())
    by_monitor: dict[int, list] = defaultdict(list)
    for r in rows:
        by_monitor[r.monitor_id].append(r)
    assert set(by_monitor) == set(ids), f"{len(set(ids) - set(by_monitor))} monitors never ran"
    doubles = sum(len(v) - len({r.due_at for r in v}) for v in by_monitor.values())
    assert doubles == 0, f"{doubles} due times ran twice"
    for mid, runs in by_monitor.items():
        dues = sorted(r.due_at for r in runs)
        # No miss: each run's next due time is the one that ran next, and the last one's is pending.
        for a, b in zip(dues, dues[1:]):
            assert b - a == timedelta(seconds=INTERVAL) or (
                b > a + timedelta(seconds=INTERVAL) and a == dues[0]
            ), f"monitor {mid}: gap between {a} and {b}"
        assert nexts[mid] > dues[-1]
    return by_monitor


async def test_three_workers_run_every_due_time_exactly_once(pg_db, servers, ctx):
    ids = await fleet(pg_db, servers)
    ws = workers(pg_db, ctx)
    for w in ws:
        await w.start()
    try:
        await asyncio.sleep(2.5 * INTERVAL)
    finally:
        for w in ws:
            await w.stop()
            await w.database.dispose()
    by_monitor = await check_exactly_once(pg_db, ids)
    assert sum(len(v) for v in by_monitor.values()) >= 2 * N
    shares = [w.writer.written for w in ws]
    assert all(s > N / 10 for s in shares), f"the fleet is not shared: {shares}"
    assert sum(w.writer.dropped for w in ws) == 0


def crash(worker: Worker) -> None:
    """Kill a worker as a SIGKILL would: nothing written, nothing released."""
    worker.scheduler.shutdown(wait=False)
    for handle in worker.dispatcher._handles.values():
        handle.cancel()
    for task in list(worker.dispatcher._tasks):
        task.cancel()
    worker.writer._task.cancel()
    worker.running = False


async def test_a_worker_killed_mid_batch_loses_nothing(pg_db, servers, ctx):
    ids = await fleet(pg_db, servers)
    ws = workers(pg_db, ctx)
    victim, others = ws[0], ws[1:]
    for w in others:
        await w.start()
    await victim.start()
    # Kill it right after a sweep claimed a batch, before it wrote it.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while victim.dispatcher.inflight == 0 or (victim.writer.written > 0 and victim.dispatcher.inflight < 50):
        assert loop.time() < deadline
        await asyncio.sleep(0.005)
    killed_at = utcnow()
    async with pg_db.sessionmaker() as s:
        held = dict(
            (
                await s.execute(
                    select(Monitor.id, Monitor.next_due_at).where(Monitor.lease_owner == victim.worker_id)
                )
            ).all()
        )
    crash(victim)
    assert held, "the victim held no lease when it was killed"
    try:
        await asyncio.sleep(LEASE + 2 * INTERVAL)
    finally:
        for w in others:
            await w.stop()
        for w in ws:
            await w.database.dispose()
    by_monitor = await check_exactly_once(pg_db, ids)
    # The due times the victim had claimed ran once, by the others, within the lease time.
    late = []
    for mid, due in held.items():
        [run] = [r for r in by_monitor[mid] if r.due_at == due]
        delay = (run.checked_at - max(due, killed_at)).total_seconds()
        if delay > LEASE + 1.0:
            late.append((mid, delay))
    assert not late, f"{len(late)} of the killed worker's monitors ran late: {late[:5]}"
