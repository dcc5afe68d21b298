"""The result writer keeps several batches in flight on PostgreSQL (one on SQLite) without ever
splitting one monitor's outcomes across batches in flight: each monitor's outcomes are
applied in order, and every one is stored once."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import select

import app.monitoring.writer as writer_module
from app.db import utcnow
from app.inventory.models import Monitor
from app.monitoring.models import CheckResult
from app.monitoring.writer import CheckOutcome, ResultWriter
from app.vocabulary import Outcome, State
from tests.monitoring.helpers import add_monitors, add_store


async def test_batches_in_flight_never_share_a_monitor_and_keep_its_order(
    db, monkeypatch, keep_plain_results
):
    store = await add_store(db)
    ids = await add_monitors(
        db, [{"store_id": store, "kind": "dns", "target": f"{i}.example"} for i in range(6)]
    )
    real = writer_module.write_outcomes
    flying: list[set[int]] = []  # the monitors of each batch in flight
    peak = 0

    async def slow_write(database, outcomes, **kw):
        nonlocal peak
        if kw.get("lease_owner") != "pipeline-test":  # another writer of this process (a live server's)
            return await real(database, outcomes, **kw)
        mine = {o.monitor_id for o in outcomes}
        assert all(not (mine & other) for other in flying), "a monitor in two batches in flight"
        flying.append(mine)
        peak = max(peak, len(flying))
        try:
            await asyncio.sleep(0.05)  # a slow database: the next batch goes meanwhile
            return await real(database, outcomes, **kw)
        finally:
            flying.remove(mine)

    monkeypatch.setattr(writer_module, "write_outcomes", slow_write)
    writer = ResultWriter(db, "pipeline-test", max_batch=4, max_delay_s=0.001)
    writer.start()
    start = utcnow() - timedelta(minutes=10)
    # Each monitor: 5 failures then 5 successes (down after 3, up after 2): the final state is
    # up only if its outcomes were applied in order.
    for n in range(10):
        for mid in ids:
            outcome = Outcome.FAIL if n < 5 else Outcome.OK
            writer.submit(CheckOutcome(mid, outcome, start + timedelta(seconds=n)))
        await asyncio.sleep(0)
    await writer.flush()
    await writer.close()

    assert writer.written == 60 and writer.lost == 0
    assert peak == (2 if db.dialect == "postgresql" else 1)
    async with db.sessionmaker() as s:
        monitors = (await s.execute(select(Monitor.id, Monitor.state, Monitor.last_checked_at))).all()
        stored = (await s.execute(select(CheckResult.monitor_id, CheckResult.checked_at))).all()
    assert len(stored) == len(set(stored)) == 60
    for mid, state, last in monitors:
        assert state == State.UP, mid
        assert last == start + timedelta(seconds=9)
