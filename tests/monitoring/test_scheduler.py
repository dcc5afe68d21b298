"""The scheduler on one worker: on time, no drift, stable phases, leases, stale, SQLite."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from app.db import Database, utcnow
from app.inventory.models import Monitor
from app.monitoring import scheduler
from app.monitoring.maintenance import STALE_DIAGNOSIS, mark_stale
from app.monitoring.models import CheckResult, StateChange
from app.monitoring.scheduler import claim_due
from app.monitoring.worker import SecondWorkerRefused, Worker
from app.schedule import first_due_at, next_due_at
from tests.cli import termpulse_async
from tests.monitoring.helpers import (
    Ledger,
    LoopLateness,
    add_monitors,
    add_store,
    add_terminals,
    assert_due_chain,
    closed_port,
    results_by_due,
    state_changes,
    wait_for,
)

pytestmark = pytest.mark.usefixtures("keep_plain_results")  # they look at each scheduled run's row

DEADLINE = 120  # s to wait for runs that take a few seconds on an idle machine
TAKEOVER_BOUND = 30  # s after an expired lease
CLOCK_SKEW = timedelta(seconds=0.2)


def make_worker(db: Database, settings, ctx, **kw) -> Worker:
    s = settings.model_copy(
        update={"lease_s": kw.pop("lease_s", 3), "claim_batch": 200, "worker_concurrency": 200}
    )
    kw.setdefault("sweep_interval_s", 0.25)
    kw.setdefault("write_delay_s", 0.05)
    kw.setdefault("maintenance", False)
    return Worker(s, db, probe_context=ctx, **kw)


def test_next_due_from_the_due_time_and_skip_forward_on_phase():
    due = datetime(2030, 1, 1, 12, 0, 0, 250000, tzinfo=UTC)
    # A late run does not move the schedule: next = due + interval.
    assert next_due_at(due, 10, 250, due + timedelta(seconds=3)) == due + timedelta(seconds=10)
    # Far behind (35 s): the first slot on the phase after now, not 3 catch-up runs.
    now = due + timedelta(seconds=35)
    nxt = next_due_at(due, 10, 250, now)
    assert nxt == due + timedelta(seconds=40)
    assert nxt > now and (nxt - due).total_seconds() % 10 == 0
    # Phases spread a fleet over the interval.
    t = datetime(2030, 1, 1, tzinfo=UTC)
    assert first_due_at(t, 60, 30_500) == t + timedelta(seconds=30.5)


async def test_runs_each_due_time_once_on_time_without_drift(db, settings, servers, ctx, monkeypatch):
    store = await add_store(db)
    terminals = await add_terminals(db, store, 3)
    targets = [await servers.listen() for _ in terminals]
    start = first_due_at(utcnow() + timedelta(seconds=0.5), 1, 0)
    ids = await add_monitors(
        db,
        [
            {
                "store_id": store,
                "terminal_id": t,
                "kind": "tcp",
                "target": f"{h}:{p}",
                "params": {"settle_ms": 0},
                "phase_ms": phase,
                "next_due_at": start + timedelta(milliseconds=phase),
            }
            for t, (h, p), phase in zip(terminals, targets, (0, 330, 770), strict=True)
        ],
        interval_s=1,
    )
    worker = make_worker(db, settings, ctx, keep_lag=True)
    ledger = Ledger()
    ledger.watch(worker)
    # When each run was claimed (the sweep's claim_due, recorded as it returns).
    claimed_at: dict[tuple[int, datetime], datetime] = {}

    async def claim_and_record(*args, **kwargs):
        got = await claim_due(*args, **kwargs)
        now = utcnow()
        for c in got:
            claimed_at.setdefault((c.id, c.due_at), now)
        return got

    monkeypatch.setattr(scheduler, "claim_due", claim_and_record)
    async with LoopLateness() as lateness:
        await worker.start()
        try:

            async def three_each():
                runs = Counter(mid for mid, _ in await results_by_due(db))
                return all(runs[mid] >= 3 for mid in ids)

            await wait_for(three_each, DEADLINE)
        finally:
            await worker.stop()

    counts = await results_by_due(db)
    assert set(counts.values()) == {1}, "a due time ran twice"
    async with db.sessionmaker() as s:
        rows = (
            await s.execute(
                select(
                    CheckResult.monitor_id, CheckResult.due_at, CheckResult.checked_at, CheckResult.outcome
                )
            )
        ).all()
        nexts = dict((await s.execute(select(Monitor.id, Monitor.next_due_at))).all())
        leases = (await s.execute(select(Monitor.lease_owner).where(Monitor.lease_owner.is_not(None)))).all()
    assert not leases, "a stopped worker keeps no lease"
    written_at = ledger.written_at({(r.monitor_id, r.due_at, r.checked_at) for r in rows})
    for mid, phase in zip(ids, (0, 330, 770), strict=True):
        dues = sorted(r.due_at for r in rows if r.monitor_id == mid)
        assert len(dues) >= 3
        # No drift and no gap: first, first+1s, first+2s, ... and the next one after them (a
        # skip onto the phase only after a run written over a second late: a loaded machine).
        assert dues[0] == start + timedelta(milliseconds=phase)
        assert_due_chain(mid, dues, nexts[mid], 1, phase, written_at)
    # On time: never before the due time; at it when the sweep claimed the run ahead (its
    # horizon), at once when the claim came later (a loaded machine: a slow write of the run
    # before, a slow claim), give or take what the machine held the event loop back. How late
    # runs start on a given machine is bench/checks.py's figure (lag p50/p99/max).
    bound = 0.5 + lateness.max
    for r in rows:
        lag = (r.checked_at - r.due_at).total_seconds()
        ready = max(r.due_at, claimed_at[(r.monitor_id, r.due_at)])
        delay = (r.checked_at - ready).total_seconds()
        assert lag >= 0, f"started {-lag:.3f} s before its due time"
        assert delay < bound, f"started {delay:.3f} s after it was due and claimed (bound {bound:.3f} s)"
        assert r.outcome == "ok"
    lags = worker.dispatcher.stats.lag_s
    assert lags and min(lags) >= 0


async def test_a_monitor_far_behind_runs_once_then_keeps_its_phase(db, settings, servers, ctx):
    store = await add_store(db)
    h, p = await servers.listen()
    due = first_due_at(utcnow(), 1, 400) - timedelta(seconds=10)
    [mid] = await add_monitors(
        db,
        [
            {
                "store_id": store,
                "kind": "tcp",
                "target": f"{h}:{p}",
                "params": {"settle_ms": 0},
                "phase_ms": 400,
                "next_due_at": due,
            }
        ],
        interval_s=1,
    )
    worker = make_worker(db, settings, ctx)
    await worker.start()
    try:

        async def twice():
            return len(await results_by_due(db)) >= 2

        await wait_for(twice, DEADLINE)
    finally:
        await worker.stop()
    async with db.sessionmaker() as s:
        dues = sorted(
            (await s.execute(select(CheckResult.due_at).where(CheckResult.monitor_id == mid))).scalars()
        )
    assert dues[0] == due  # the missed due time ran once ...
    # ... with no burst of the ten it missed (due + 1 s ... due + 9 s never ran): then on its
    # phase, from after that run on
    assert len(dues) >= 2
    for d in dues[1:]:
        assert d.microsecond == 400_000 and d > due + timedelta(seconds=9)


async def test_our_failures_make_unknown_never_down(db, settings, ctx):
    from app.checks.guard import TargetGuard
    from app.checks.probes import ProbeContext

    store = await add_store(db)
    t_ours, t_theirs = await add_terminals(db, store, 2)
    host, port = closed_port()
    # The guard allows 127.79.0.0/16 only: 127.80.0.1 is refused before any packet is sent.
    guarded = ProbeContext(ctx.resolver, TargetGuard(["127.79.0.0/16"]))
    ours, theirs = await add_monitors(
        db,
        [
            {
                "store_id": store,
                "terminal_id": t_ours,
                "kind": "tcp",
                "target": "127.80.0.1:9",
                "state": "up",
            },
            {
                "store_id": store,
                "terminal_id": t_theirs,
                "kind": "tcp",
                "target": f"{host}:{port}",
                "state": "up",
            },
        ],
        interval_s=1,
    )
    worker = make_worker(db, settings, guarded)
    await worker.start()
    try:

        async def enough():
            async with db.sessionmaker() as s:
                rows = (await s.execute(select(CheckResult.monitor_id))).scalars().all()
            return rows.count(ours) >= 3 and rows.count(theirs) >= 3

        await wait_for(enough, DEADLINE)
    finally:
        await worker.stop()
    assert await state_changes(db, ours) == [("up", "unknown")]
    assert await state_changes(db, theirs) == [("up", "down")]
    async with db.sessionmaker() as s:
        diag = dict((await s.execute(select(Monitor.id, Monitor.last_diagnosis))).all())
        outcomes = set(
            (await s.execute(select(CheckResult.outcome).where(CheckResult.monitor_id == ours))).scalars()
        )
    assert diag[ours] == "target_refused" and outcomes == {"error"}
    assert diag[theirs] == "tcp_refused"


async def test_stale_results_make_unknown(db):
    store = await add_store(db)
    [t] = await add_terminals(db, store, 1)
    now = utcnow()
    stale, fresh, down_stale = await add_monitors(
        db,
        [
            {
                "store_id": store,
                "terminal_id": t,
                "kind": "tcp",
                "target": "127.79.0.1:1",
                "state": "up",
                "last_checked_at": now - timedelta(seconds=181),
            },
            {
                "store_id": store,
                "kind": "tcp",
                "target": "127.79.0.2:1",
                "state": "up",
                "last_checked_at": now - timedelta(seconds=100),
            },
            {
                "store_id": store,
                "kind": "dns",
                "target": "x.example",
                "state": "down",
                "interval_s": 10,
                "last_checked_at": now - timedelta(seconds=31),
            },
        ],
        interval_s=60,
    )
    async with db.sessionmaker() as s:
        assert await mark_stale(s, now) == 2
        await s.commit()
    assert await state_changes(db, stale) == [("up", "unknown")]
    assert await state_changes(db, down_stale) == [("down", "unknown")]
    assert await state_changes(db, fresh) == []
    async with db.sessionmaker() as s:
        reasons = set((await s.execute(select(StateChange.diagnosis))).scalars())
        assert reasons == {STALE_DIAGNOSIS}
        assert await mark_stale(s, now) == 0  # idempotent


async def test_expired_lease_of_a_dead_worker_is_run_by_another(db, settings, servers, ctx):
    store = await add_store(db)
    h, p = await servers.listen()
    due = utcnow() - timedelta(seconds=0.5)
    ids = await add_monitors(
        db,
        [
            {
                "store_id": store,
                "kind": "tcp",
                "target": f"{h}:{p}",
                "params": {"settle_ms": 0},
                "next_due_at": due,
            }
            for _ in range(20)
        ],
        interval_s=60,
    )
    # A worker claims them and dies before writing anything.
    claimed = await claim_due(db, "dead-worker", 100, lease_s=1.5, horizon_s=0)
    assert {c.id for c in claimed} == set(ids)
    async with db.sessionmaker() as s:
        expires = set((await s.execute(select(Monitor.lease_expires_at))).scalars())
    [lease_expired] = expires  # one claim, one lease time for all
    worker = make_worker(db, settings, ctx)
    await worker.start()
    try:

        async def all_ran():
            counts = await results_by_due(db)
            return len(counts) == len(ids)

        await wait_for(all_ran, DEADLINE)
    finally:
        await worker.stop()
    counts = await results_by_due(db)
    assert counts == {(m, due): 1 for m in ids}  # for the due time the dead worker had, once
    async with db.sessionmaker() as s:
        first = await s.scalar(select(CheckResult.checked_at).order_by(CheckResult.checked_at))
    # Not before the lease expired (PostgreSQL's clock for leases, ours for runs: same machine)
    # ... and soon after it: a bound for a loaded machine (about a sweep, 0.25 s, on an idle one).
    assert first >= lease_expired - CLOCK_SKEW
    assert (first - lease_expired).total_seconds() < TAKEOVER_BOUND


async def test_a_late_writer_cannot_store_a_run_another_worker_owns(db):
    from app.monitoring.writer import CheckOutcome, apply_outcomes

    store = await add_store(db)
    due = utcnow() - timedelta(seconds=1)
    [mid] = await add_monitors(
        db, [{"store_id": store, "kind": "tcp", "target": "127.79.0.1:1", "next_due_at": due}], interval_s=60
    )
    await claim_due(db, "slow", 10, lease_s=0.01, horizon_s=0)
    await asyncio.sleep(0.05)
    await claim_due(db, "fast", 10, lease_s=30, horizon_s=0)  # the lease expired: taken over
    for owner in ("fast", "slow"):
        async with db.sessionmaker() as s:
            report = await apply_outcomes(
                s, [CheckOutcome(mid, "ok", utcnow(), 1.0, due_at=due)], lease_owner=owner
            )
            await s.commit()
        assert report.dropped == (1 if owner == "slow" else 0)
    assert await results_by_due(db) == {(mid, due): 1}


async def test_cloud_monitors_are_left_to_the_provider_poller(db):
    store = await add_store(db)
    [t] = await add_terminals(db, store, 1, integration="cloud", cloud_enabled=True)
    await add_monitors(
        db,
        [{"store_id": store, "terminal_id": t, "kind": "cloud", "target": "P400-1"}],
        due=utcnow() - timedelta(seconds=5),
    )
    assert await claim_due(db, "w", 100, lease_s=10, horizon_s=1) == []


@pytest.fixture
async def sqlite_db(sqlite_database):
    from tests.conftest import empty_all_tables

    await empty_all_tables(sqlite_database)
    return sqlite_database


async def test_sqlite_refuses_a_second_worker(sqlite_db, ctx):
    from app.config import Settings

    settings = Settings(database_url=sqlite_db.url, allowed_networks=["127.0.0.0/8"])
    first = make_worker(sqlite_db, settings, ctx)
    await first.start()
    try:
        other_db = Database(sqlite_db.url)
        with pytest.raises(SecondWorkerRefused, match="SQLite supports one worker only"):
            await make_worker(other_db, settings, ctx).start()
        # `termpulse worker` is refused too, with a clear message and exit status 1 (run in
        # process: the flock belongs to an open file, so a second open here is what another
        # process would be; were it not refused, it would fail on its signal handlers in a thread).
        env = {
            "TERMPULSE_DATABASE_URL": sqlite_db.url,
            "TERMPULSE_LOG_FORMAT": "text",
            "TERMPULSE_SECRET_KEY": "scheduler-test-secret-key-0123456789",
        }
        proc = await termpulse_async("worker", env=env)
        assert proc.returncode == 1, proc.stderr
        assert "SQLite supports one worker only" in proc.stderr + proc.stdout
        await other_db.dispose()
    finally:
        await first.stop()
    # Once the first has stopped, a new one starts.
    again = make_worker(sqlite_db, settings, ctx)
    await again.start()
    await again.stop()
