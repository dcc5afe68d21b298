"""Alerts run by the real worker: a blocked port 7003 found by the checks opens one incident
and sends one message naming the diagnosis; three workers send each notification exactly
once; a worker killed mid-delivery is covered by another once its lease expires."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap

import pytest
from sqlalchemy import select

from app.alerts.models import AlertCursor, DeliveryAttempt, Notification
from app.alerts.runner import AlertRunner
from app.checks.diagnoses import explain
from app.inventory.models import Store, Terminal
from app.monitoring.worker import Worker
from app.simulator.terminals import TerminalSimulator, TerminalSpec
from tests import loopback
from tests.alerts.conftest import add_channel, add_rule, alert_settings, failing_store, incidents
from tests.monitoring.helpers import add_monitors, wait_for

pytestmark = pytest.mark.slow


async def evaluations(db) -> int:
    async with db.sessionmaker() as s:
        cursor = await s.get(AlertCursor, "state_changes")
        return 0 if cursor is None else int(cursor.evaluated_at.timestamp() * 1000)


async def test_blocked_port_7003_opens_one_incident_and_sends_one_message(db, probe_ctx, webhook, smtp):
    settings = alert_settings(db)
    hook = await add_channel(db, settings, "Ops webhook", webhook.url())
    mail = await add_channel(db, settings, "Ops mail", smtp.url())
    await add_rule(db, "hook", hook)
    await add_rule(db, "mail", mail)
    host = f"127.{loopback.ALERTS}.0.1"
    tills = [f"127.{loopback.ALERTS}.0.{i + 2}" for i in range(2)]
    sim = await TerminalSimulator().start(
        [TerminalSpec("processor:7003", host, 7003, "tcp", behaviour="filtered")]
        + [TerminalSpec(f"till-{i}", till, 2000, "tcp") for i, till in enumerate(tills)]
    )
    async with db.sessionmaker() as s:
        store = Store(
            code="S-7003", name="Harbour Street", region="North", timezone="Europe/London", status="unknown"
        )
        s.add(store)
        await s.flush()
        terminals = [
            Terminal(store_id=store.id, poiid=f"P400-7003{i}", integration="local", status="unknown")
            for i in range(2)
        ]
        s.add_all(terminals)
        await s.commit()
        store_id = store.id
    specs = [{"store_id": store_id, "kind": "tcp", "target": f"{host}:7003"}] + [
        {"store_id": store_id, "terminal_id": t.id, "kind": "tcp", "target": f"{till}:2000"}
        for t, till in zip(terminals, tills, strict=True)
    ]
    await add_monitors(db, specs, interval_s=1, timeout_s=0.3)
    worker = Worker(
        settings,
        db,
        probe_context=probe_ctx,
        sweep_interval_s=0.2,
        cloud=False,
        maintenance=False,
        jobs=AlertRunner(settings, db).jobs(),
    )
    await worker.start()
    try:
        await wait_for(lambda: _true(webhook.delivered and smtp.messages), within=60)
        # More evaluations pass while the port stays blocked: still one message each.
        seen = await evaluations(db)
        for _ in range(5):
            await wait_for(lambda seen=seen: _later(db, seen), within=30)
            seen = await evaluations(db)
        assert len(webhook.delivered) == 1 and len(smtp.messages) == 1
        message = webhook.delivered[0]
        title = "[TermPulse] S-7003 Harbour Street: cannot take cards (all 2 terminals down)"
        assert message["title"] == title
        body = message["message"]
        named = explain("tcp_timeout", host=host, port=7003)  # the catalogue's words
        assert f"Diagnosis: {named.title}. {named.cause}" in body
        assert f"Fix: {named.fix}" in body
        assert "(Europe/London)" in body and "http://termpulse.test/stores/S-7003" in body
        assert "Port 7003" in smtp.messages[0].get_content()
        [incident] = await incidents(db)
        assert incident.kind == "store" and incident.cause == "tcp_timeout"
        # The port opens again: one resolution, to both channels.
        await sim.set_behaviour("processor:7003", "healthy")
        await wait_for(lambda: _true(len(webhook.delivered) == 2 and len(smtp.messages) == 2), within=60)
        assert webhook.delivered[1]["title"].startswith("[TermPulse] Resolved: S-7003 Harbour Street")
    finally:
        await worker.stop()
        await sim.stop()


async def _true(value) -> bool:
    return bool(value)


async def _later(db, seen: int) -> bool:
    return await evaluations(db) > seen


async def test_three_workers_send_each_notification_exactly_once(pg_db, webhook):
    settings = alert_settings(pg_db, alert_fleet_stores=1000, alert_fleet_cause_stores=1000)
    channel = await add_channel(pg_db, settings, "Ops webhook", webhook.url())
    await add_rule(pg_db, "everything", channel)
    for i in range(40):
        await failing_store(pg_db, f"S-{i:03d}")
    workers = [
        Worker(settings, pg_db, sweep_interval_s=0.5, cloud=False, maintenance=False,
               jobs=AlertRunner(settings, pg_db, owner=f"alerts-{n}").jobs())
        for n in range(3)
    ]  # fmt: skip
    for w in workers:
        await w.start()
    try:
        await wait_for(lambda: _true(len(webhook.delivered) >= 40), within=90)
        async with pg_db.sessionmaker() as s:
            await wait_for(lambda: _all_sent(pg_db), within=30)
            attempts = (await s.execute(select(DeliveryAttempt))).scalars().all()
    finally:
        for w in workers:
            await w.stop()
    titles = [m["title"] for m in webhook.requests]
    assert len(titles) == 40 and len(set(titles)) == 40, sorted(titles)
    assert len(attempts) == 40 and all(a.ok for a in attempts)
    assert len({a.worker for a in attempts}) >= 1
    assert len(await incidents(pg_db)) == 40  # one evaluator at a time: no incident twice


async def _all_sent(db) -> bool:
    async with db.sessionmaker() as s:
        states = (await s.execute(select(Notification.state))).scalars().all()
    return bool(states) and all(st == "sent" for st in states)


DOOMED = textwrap.dedent(
    """
    import asyncio, sys
    from app.alerts.outbox import Deliverer
    from app.config import Settings
    from app.db import Database

    async def main():
        settings = Settings(database_url=sys.argv[1], secret_key="test-secret-key", alert_lease_s=2,
                            alert_send_timeout_s=600)
        db = Database(sys.argv[1])
        await Deliverer(settings, db, "doomed").tick()

    asyncio.run(main())
    """
)


async def test_a_worker_killed_mid_delivery_is_covered_by_another(db, webhook):
    settings = alert_settings(db, alert_lease_s=2)
    channel = await add_channel(db, settings, "Ops webhook", webhook.url())
    await add_rule(db, "everything", channel)
    await failing_store(db, "S-KILL")
    runner = AlertRunner(settings, db, owner="survivor")
    await wait_for(lambda: _queued(runner, db), within=30)
    webhook.hold_first = True  # the doomed worker's request reaches the channel, no answer comes
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", DOOMED, db.url, cwd=os.getcwd())
    try:
        await wait_for(lambda: _true(webhook.requests), within=60)
        async with db.sessionmaker() as s:
            note = (await s.execute(select(Notification))).scalars().one()
        assert note.lease_owner == "doomed" and note.state == "pending"
        os.kill(proc.pid, signal.SIGKILL)  # killed mid-delivery
        await asyncio.wait_for(proc.wait(), 10)
    finally:
        if proc.returncode is None:
            proc.kill()
    # Another worker delivers it once the lease has expired (never while it holds).
    await wait_for(lambda: _delivered_by(runner, webhook), within=60)
    async with db.sessionmaker() as s:
        note = (await s.execute(select(Notification))).scalars().one()
        attempts = (await s.execute(select(DeliveryAttempt))).scalars().all()
    assert note.state == "sent" and note.attempts == 2
    assert [(a.worker, a.ok) for a in attempts] == [(runner.deliverer.owner, True)]
    assert len(webhook.delivered) == 1


async def _queued(runner, db) -> bool:
    await runner.evaluate()
    async with db.sessionmaker() as s:
        return bool((await s.execute(select(Notification.id))).first())


async def _delivered_by(runner, webhook) -> bool:
    await runner.deliver()
    return bool(webhook.delivered)
