"""Our own outages: results kept through a database that cannot be reached, and silences
recorded as unknown for their real length (back-dated), never as up."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import select

from app.checks.result import ProbeResult
from app.db import Database, utcnow
from app.monitoring.maintenance import mark_stale
from app.monitoring.models import CheckResult, StateChange
from app.monitoring.writer import STALE, CheckOutcome, ResultWriter, write_outcomes
from app.vocabulary import Outcome
from tests.monitoring.helpers import add_monitors, add_store, closed_port, wait_for

pytestmark = pytest.mark.usefixtures("keep_plain_results")  # they look at each scheduled run's row


def _now_true(check):
    async def predicate():
        return check()

    return predicate


def _ok(monitor_id, at, due=None):
    return CheckOutcome.of(monitor_id, ProbeResult(Outcome.OK, 1.0, [], None, None), at, due_at=due)


async def _changes(db, monitor_id):
    async with db.sessionmaker() as s:
        rows = await s.execute(
            select(StateChange.at, StateChange.from_state, StateChange.to_state, StateChange.diagnosis)
            .where(StateChange.monitor_id == monitor_id)
            .order_by(StateChange.at, StateChange.id)
        )
        return [tuple(r) for r in rows]


async def test_a_silence_is_unknown_from_when_a_result_was_missed(db):
    """Results stopped for 5 minutes (our outage) and came back before the stale job looked:
    the gap is unknown from last result + one interval to the next result, not up."""
    store = await add_store(db)
    [mid] = await add_monitors(db, [{"store_id": store, "kind": "dns", "target": "a.example"}], interval_s=60)
    t0 = utcnow() - timedelta(minutes=10)
    await write_outcomes(db, [_ok(mid, t0)])
    await write_outcomes(db, [_ok(mid, t0 + timedelta(seconds=61))])  # on time: no gap
    back = t0 + timedelta(seconds=61 + 300)
    await write_outcomes(db, [_ok(mid, back)])
    changes = await _changes(db, mid)
    assert [(f, t) for _, f, t, _ in changes] == [("unknown", "up"), ("up", "unknown"), ("unknown", "up")]
    _, _, _, why = changes[1]
    assert why == STALE
    assert abs((changes[1][0] - (t0 + timedelta(seconds=121))).total_seconds()) < 0.01  # when it was due
    assert abs((changes[2][0] - back).total_seconds()) < 0.01


async def test_the_stale_job_back_dates_the_unknown(db):
    store = await add_store(db)
    last = utcnow() - timedelta(seconds=400)
    [mid] = await add_monitors(
        db,
        [{"store_id": store, "kind": "dns", "target": "b.example", "state": "up", "last_checked_at": last}],
        interval_s=60,
        state_since=last - timedelta(hours=1),
    )
    async with db.sessionmaker() as s:
        assert await mark_stale(s) == 1
        await s.commit()
    [(at, before, after, why)] = await _changes(db, mid)
    assert (before, after, why) == ("up", "unknown", STALE)
    assert abs((at - (last + timedelta(seconds=60))).total_seconds()) < 0.01  # not "now"


async def test_results_wait_through_a_database_outage_then_are_written_once(db, tmp_path):
    """The writer's database cannot be reached (a refused port, a missing directory), then is
    back: every result is written once, in order, with its own time."""
    store = await add_store(db)
    ids = await add_monitors(
        db, [{"store_id": store, "kind": "dns", "target": f"{i}.example"} for i in range(5)]
    )
    if db.url.startswith("postgresql"):
        host, port = closed_port()
        down = Database(f"postgresql+asyncpg://postgres@{host}:{port}/nowhere")
    else:
        down = Database(f"sqlite+aiosqlite:///{tmp_path / 'missing-dir' / 'x.db'}")
    writer = ResultWriter(down, "outage-test", max_delay_s=0.01)
    writer.start()
    made = utcnow() - timedelta(seconds=30)
    for i, mid in enumerate(ids):
        writer.submit(_ok(mid, made + timedelta(seconds=i)))
    await wait_for(
        _now_true(lambda: writer.outage_since is not None and writer.backlog == len(ids)), within=30
    )
    assert writer.written == 0 and writer.lost == 0
    writer.database = db  # the database answers again
    await wait_for(_now_true(lambda: writer.written == len(ids)), within=30)
    await writer.close()
    assert writer.outage_since is None and writer.lost == 0
    async with db.sessionmaker() as s:
        rows = (await s.execute(select(CheckResult.monitor_id, CheckResult.checked_at))).all()
    assert sorted(rows) == sorted((mid, made + timedelta(seconds=i)) for i, mid in enumerate(ids))
    await down.dispose()


async def test_past_its_bound_the_queue_drops_the_oldest_and_counts_them(db, tmp_path):
    down = Database(f"sqlite+aiosqlite:///{tmp_path / 'missing-dir' / 'x.db'}")
    writer = ResultWriter(down, "bound-test", max_delay_s=0.01, max_queued=3, close_timeout_s=0)
    made = utcnow()
    for i in range(5):
        writer.submit(_ok(i + 1, made + timedelta(seconds=i)))
    assert writer.backlog == 3 and writer.lost == 2
    assert [o.checked_at for o in writer._pending] == [made + timedelta(seconds=i) for i in (2, 3, 4)]
    writer.start()
    await writer.close()  # the database never came back: what waited is given up, and counted
    assert writer.lost == 5 and writer.backlog == 0
    await down.dispose()


async def test_the_api_answers_503_with_a_reason_while_the_database_is_down(settings):
    import httpx

    from app.main import create_app

    dead = Database("postgresql+asyncpg://postgres@127.0.0.1:1/none")
    app = create_app(settings, database=dead, run_worker=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        for path in ("/api/v1/terminals", "/api/v1/stores"):
            r = await http.get(path)
            assert r.status_code == 503, (path, r.text)
            assert "database cannot be reached" in r.json()["detail"] and r.headers["Retry-After"]
    await dead.dispose()


async def test_a_live_worker_renews_the_lease_of_a_check_longer_than_the_lease(db, settings, ctx):
    """Leases are short (a dead worker's monitors run again soon) yet a live worker keeps the
    lease of a check that runs longer than it: nobody else claims that run, it is stored once."""
    from app.inventory.models import Monitor
    from app.monitoring.scheduler import claim_due
    from app.monitoring.worker import Worker
    from tests.monitoring.helpers import results_by_due

    async def silent(reader, writer):  # accepts, never says a word: a TLS handshake stalls
        await asyncio.sleep(30)
        writer.close()

    tarpit = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = tarpit.sockets[0].getsockname()[1]
    store = await add_store(db)
    [mid] = await add_monitors(
        db,
        [
            {
                "store_id": store,
                "kind": "tls",
                "target": f"127.0.0.1:{port}",
                "params": {"server_name": "t.example"},
            }
        ],
        timeout_s=4.0,
    )
    s = settings.model_copy(update={"lease_s": 1, "claim_batch": 50, "worker_concurrency": 50})
    worker = Worker(s, db, probe_context=ctx, sweep_interval_s=0.25, write_delay_s=0.05, maintenance=False)
    await worker.start()
    try:

        async def claimed_by_worker():
            async with db.sessionmaker() as session:
                return (await session.get(Monitor, mid)).lease_owner == worker.worker_id

        await wait_for(claimed_by_worker, within=30)
        # Well past the 1 s lease, while the check still hangs: the lease is still the worker's.
        await asyncio.sleep(2.5)
        assert await claimed_by_worker()
        assert await claim_due(db, "another-worker", 10, 1, 1.5) == []

        async def stored():
            return sum((await results_by_due(db)).values()) >= 1

        await wait_for(stored, within=30)
    finally:
        await worker.stop()
        tarpit.close()
    counts = await results_by_due(db)
    assert list(counts.values()) == [1]


async def test_a_worker_claims_only_what_it_can_start(db, settings, ctx, servers):
    """30 checks that hang until their timeout, due first, and 20 healthy ones, on two
    workers of 30 slots each (PostgreSQL): the first claim takes only as many as it can start
    (the hung ones), so the other worker runs the healthy ones at once, instead of their
    waiting behind the first worker's hung checks for the timeout."""
    if db.dialect != "postgresql":
        pytest.skip("several workers share a fleet on PostgreSQL only")
    from app.monitoring.worker import Worker

    async def silent(reader, writer):
        await asyncio.sleep(60)
        writer.close()

    tarpit = await asyncio.start_server(silent, "127.0.0.1", 0)
    hung_port = tarpit.sockets[0].getsockname()[1]
    h, p = await servers.listen()
    store = await add_store(db)
    now = utcnow()
    hung = await add_monitors(
        db,
        [
            {
                "store_id": store,
                "kind": "tls",
                "target": f"127.0.0.1:{hung_port}",
                "params": {"server_name": "x"},
            }
            for _ in range(30)
        ],
        timeout_s=20.0,
        due=now - timedelta(seconds=2),
    )
    healthy = await add_monitors(
        db,
        [
            {"store_id": store, "kind": "tcp", "target": f"{h}:{p}", "params": {"settle_ms": 0}}
            for _ in range(20)
        ],
        due=now - timedelta(seconds=1),
    )
    s = settings.model_copy(update={"lease_s": 30, "claim_batch": 100, "worker_concurrency": 30})
    workers = [
        Worker(
            s,
            db,
            probe_context=ctx,
            sweep_interval_s=0.25,
            write_delay_s=0.05,
            maintenance=False,
            cloud=False,
        )
        for _ in range(2)
    ]

    async def stored(ids):
        async with db.sessionmaker() as session:
            rows = await session.scalars(
                select(CheckResult.monitor_id).where(CheckResult.monitor_id.in_(ids))
            )
            return set(rows)

    for w in workers:
        await w.start()
    try:

        async def all_healthy_stored():
            return await stored(healthy) == set(healthy)

        await wait_for(all_healthy_stored, within=15)  # well inside the hung checks' 20 s
        assert await stored(hung) == set()  # they still hang: the healthy ones did not wait for them
    finally:
        for w in workers:
            await w.stop()
        tarpit.close()


async def test_the_status_page_shows_each_worker_and_its_figures(db, settings, ctx, client):
    """Workers write a heartbeat; the admin's status page lists them (running, then stopped)."""
    from app.monitoring.worker import Worker
    from tests.html import dom, text

    worker = Worker(settings, db, probe_context=ctx, sweep_interval_s=0.25, maintenance=False, cloud=False)
    await worker.start()
    try:

        async def beating():
            return worker.worker_id in (await client.get("/status")).text

        await wait_for(beating, within=30)
        page = text(dom(await client.get("/status")))
        assert "1 worker running" in page and "No monitor is overdue" in page
        assert worker.figures()["concurrency"] == settings.worker_concurrency
        metrics = (await client.get("/metrics")).text
        assert "termpulse_workers_running 1.0" in metrics
    finally:
        await worker.stop()
    page = text(dom(await client.get("/status")))
    assert "No worker is running" in page and "stopped" in page


async def test_a_workers_figures_carry_its_recent_lag(db, settings, ctx, servers):
    from app.monitoring.worker import Worker

    h, p = await servers.listen()
    store = await add_store(db)
    await add_monitors(
        db, [{"store_id": store, "kind": "tcp", "target": f"{h}:{p}", "params": {"settle_ms": 0}}]
    )
    worker = Worker(settings, db, probe_context=ctx, sweep_interval_s=0.25, maintenance=False, cloud=False)
    await worker.start()
    try:

        async def ran():
            return worker.dispatcher.stats.finished >= 1

        await wait_for(ran, within=30)
        figures = worker.figures()
        assert figures["lag_p99_ms"] is not None and figures["running"] == 0 and figures["lost"] == 0
    finally:
        await worker.stop()


def test_a_server_shutting_down_is_unreachable_not_a_failure_of_the_work():
    """'the database system is shutting down' (SQLSTATE 57P01) during a restart used to fail
    the batch (its results given up) instead of keeping it until the server is back."""
    from sqlalchemy.exc import DBAPIError

    from app.db import is_transient, is_unreachable

    def error(sqlstate):
        orig = Exception("x")
        orig.sqlstate = sqlstate
        return DBAPIError("SELECT 1", {}, orig)

    assert (
        is_unreachable(error("57P01")) and is_unreachable(error("57P03")) and is_unreachable(error("08006"))
    )
    assert not is_unreachable(error("23505")) and not is_unreachable(error("22P02"))
    assert is_transient(error("40P01")) and not is_transient(error("57P01"))


async def test_a_stop_with_checks_in_flight_writes_every_one_of_them(db, settings, ctx):
    """SIGTERM (what `termpulse worker` does on it: Worker.stop) while 20 checks are running:
    the stop waits for them and every result is written, none lost."""
    from app.monitoring.worker import Worker

    async def silent(reader, writer):  # the TLS handshake stalls until the check's 2 s timeout
        await asyncio.sleep(30)
        writer.close()

    tarpit = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = tarpit.sockets[0].getsockname()[1]
    store = await add_store(db)
    ids = await add_monitors(
        db,
        [
            {"store_id": store, "kind": "tls", "target": f"127.0.0.1:{port}", "params": {"server_name": "x"}}
            for _ in range(20)
        ],
        timeout_s=2.0,
    )
    worker = Worker(settings, db, probe_context=ctx, sweep_interval_s=0.25, maintenance=False, cloud=False)
    await worker.start()
    try:

        async def all_running():
            return worker.dispatcher.running == len(ids)

        await wait_for(all_running, within=30)
    finally:
        await worker.stop()  # while all 20 are in flight
        tarpit.close()
    assert worker.writer.lost == 0 and worker.writer.failed_batches == 0
    async with db.sessionmaker() as session:
        stored = set((await session.scalars(select(CheckResult.monitor_id))).all())
    assert stored == set(ids)


async def test_after_an_outage_claims_catch_up_at_a_pace(db, ctx, servers):
    """300 monitors overdue when the database comes back: the worker catches up at its
    catch-up pace (here 50/s), not all at once, so terminals and the database get no burst;
    a worker starting fresh (no outage) takes a backlog at full speed."""
    import time

    from app.monitoring.scheduler import Dispatcher

    h, p = await servers.listen()
    store = await add_store(db)
    spec = {"store_id": store, "kind": "tcp", "target": f"{h}:{p}", "params": {"settle_ms": 0}}
    await add_monitors(db, [dict(spec) for _ in range(300)], due=utcnow() - timedelta(seconds=30))
    writer = ResultWriter(db, "pace-test", max_delay_s=0.01)
    writer.start()
    dispatcher = Dispatcher(
        db, "pace-test", writer, ctx, concurrency=1000, claim_batch=1000, catchup_min_per_s=50
    )
    try:
        writer.outage_since = time.monotonic()  # the database was down: claims are held back
        assert await dispatcher.sweep() == 0
        writer.outage_since = None  # it answers again
        began = time.monotonic()
        first = await dispatcher.sweep()
        # One second's worth at the catch-up pace, plus what the pace adds while that claim
        # runs (a loaded machine's claim can take a while), never the whole backlog.
        assert 50 <= first <= 50 + 50 * (time.monotonic() - began) + 1 and first < 300

        async def all_claimed():
            await dispatcher.sweep()
            return dispatcher.stats.claimed == 300

        await wait_for(all_claimed, within=60)
    finally:
        await dispatcher.stop()
        await writer.close()

    h2, p2 = await servers.listen()
    other = {**spec, "target": f"{h2}:{p2}"}
    await add_monitors(db, [dict(other) for _ in range(200)], due=utcnow() - timedelta(seconds=30))
    fresh_writer = ResultWriter(db, "fresh", max_delay_s=0.01)
    fresh_writer.start()
    fresh = Dispatcher(
        db, "fresh", fresh_writer, ctx, concurrency=1000, claim_batch=1000, catchup_min_per_s=50
    )
    try:
        assert await fresh.sweep() == 200
    finally:
        await fresh.stop()
        await fresh_writer.close()
