"""Incidents, routing, reminders, acknowledgement, escalation and retries, against real
receivers on loopback (the stores' state is set directly; tests/alerts/test_worker.py runs
the real checks)."""

from __future__ import annotations

import asyncio

from sqlalchemy import select

from app.alerts.engine import acknowledge
from app.alerts.models import DeliveryAttempt, Incident, IncidentEvent, Notification
from app.alerts.runner import AlertRunner
from app.db import in_transaction, utcnow
from tests.alerts.conftest import add_channel, add_rule, failing_store, heal_store, incidents, run_until


async def test_ten_terminals_of_one_store_send_one_message(db, asettings, webhook):
    channel = await add_channel(db, asettings, "Ops webhook", webhook.url())
    await add_rule(db, "everything", channel)
    await failing_store(db, "S-0010", terminals=10)
    runner = AlertRunner(asettings, db)
    await run_until(runner, lambda: webhook.delivered)
    # Several more passes: still one message, one incident.
    for _ in range(5):
        await runner.evaluate()
        await runner.deliver()
    assert len(webhook.delivered) == 1
    message = webhook.delivered[0]
    assert "S-0010 Shop S-0010" in message["title"] and "all 10 terminals down" in message["title"]
    assert "Terminals down: 10 of 10" in message["message"]
    assert "Connection refused" in message["message"]  # the diagnosis ...
    assert "Fix: " in message["message"]  # ... and its fix
    assert "http://termpulse.test/stores/S-0010" in message["message"]
    found = await incidents(db)
    assert [(i.kind, i.state, i.terminals_down) for i in found] == [("store", "open", 10)]


async def test_unknown_opens_nothing(db, asettings, webhook):
    channel = await add_channel(db, asettings, "Ops webhook", webhook.url())
    await add_rule(db, "everything", channel)
    sid = await failing_store(db, "S-0011", terminals=2)
    from sqlalchemy import update

    from app.inventory.models import Monitor, Store

    async with db.sessionmaker() as s:
        await s.execute(update(Monitor).where(Monitor.store_id == sid).values(state="unknown"))
        await s.execute(update(Store).where(Store.id == sid).values(status="unknown"))
        await s.commit()
    runner = AlertRunner(asettings, db)
    for _ in range(3):
        await runner.evaluate()
        await runner.deliver()
    assert await incidents(db) == [] and webhook.requests == []


async def test_resolution_goes_to_the_same_channels_after_the_quiet_period(db, asettings, webhook, smtp):
    hook = await add_channel(db, asettings, "Ops webhook", webhook.url())
    mail = await add_channel(db, asettings, "Ops mail", smtp.url())
    await add_rule(db, "hook", hook)
    await add_rule(db, "mail", mail)
    sid = await failing_store(db, "S-0012", terminals=3, down=1)
    runner = AlertRunner(asettings, db)
    await run_until(runner, lambda: webhook.delivered and smtp.messages)
    assert "1 of 3 terminals down" in smtp.messages[0]["Subject"]
    assert "Connection refused" in smtp.messages[0].get_content()
    await heal_store(db, sid)
    await run_until(runner, lambda: len(webhook.delivered) == 2 and len(smtp.messages) == 2)
    assert webhook.delivered[1]["title"].startswith("[TermPulse] Resolved: S-0012")
    assert smtp.messages[1]["Subject"].startswith("[TermPulse] Resolved: S-0012")
    [incident] = await incidents(db)
    assert incident.state == "resolved" and incident.resolved_at is not None


async def test_flapping_within_the_quiet_period_stays_one_incident(db, webhook):
    from tests.alerts.conftest import alert_settings

    settings = alert_settings(db, alert_quiet_period_s=3600)
    channel = await add_channel(db, settings, "Ops webhook", webhook.url())
    await add_rule(db, "everything", channel)
    sid = await failing_store(db, "S-0013", terminals=1)
    runner = AlertRunner(settings, db)
    await run_until(runner, lambda: webhook.delivered)
    for _ in range(3):
        await heal_store(db, sid)
        await runner.evaluate()
        await db_fail_again(db, sid)
        await runner.evaluate()
        await runner.deliver()
    found = await incidents(db)
    assert len(found) == 1 and found[0].state == "open"
    assert len(webhook.delivered) == 1


async def db_fail_again(db, sid):
    from sqlalchemy import update

    from app.inventory.models import Monitor, Store, Terminal

    async with db.sessionmaker() as s:
        await s.execute(update(Monitor).where(Monitor.store_id == sid).values(state="down"))
        await s.execute(update(Terminal).where(Terminal.store_id == sid).values(status="down"))
        await s.execute(update(Store).where(Store.id == sid).values(status="cannot_pay"))
        await s.commit()


async def test_minimum_duration_holds_a_blip_back(db, asettings, webhook):
    channel = await add_channel(db, asettings, "Ops webhook", webhook.url())
    await add_rule(db, "not for blips", channel, min_duration_s=3600)
    await failing_store(db, "S-0014", ago_s=5)
    runner = AlertRunner(asettings, db)
    for _ in range(3):
        await runner.evaluate()
        await runner.deliver()
    assert len(await incidents(db)) == 1 and webhook.requests == []


async def test_routing_by_region_and_tag(db, asettings, webhook, webhook2):
    north = await add_channel(db, asettings, "North ops", webhook.url())
    kiosks = await add_channel(db, asettings, "Kiosk team", webhook2.url())
    await add_rule(db, "north", north, match="region", value="North")
    await add_rule(db, "kiosks", kiosks, match="tag", value="kiosk")
    await failing_store(db, "S-N1", region="North")
    await failing_store(db, "S-K1", region="South", tags="kiosk;mall")
    await failing_store(db, "S-X1", region="South")
    runner = AlertRunner(asettings, db)
    await run_until(runner, lambda: webhook.delivered and webhook2.delivered)
    for _ in range(3):
        await runner.evaluate()
        await runner.deliver()
    assert [m["title"].split(":")[0] for m in webhook.delivered] == ["[TermPulse] S-N1 Shop S-N1"]
    assert [m["title"].split(":")[0] for m in webhook2.delivered] == ["[TermPulse] S-K1 Shop S-K1"]


async def test_a_failing_channel_is_retried_and_every_attempt_recorded(db, asettings, webhook):
    webhook.fail_first = 2
    channel = await add_channel(db, asettings, "Flaky webhook", webhook.url())
    await add_rule(db, "everything", channel)
    await failing_store(db, "S-0020")
    runner = AlertRunner(asettings, db)
    await run_until(runner, lambda: webhook.delivered)
    assert [status for status, _ in webhook.answered] == [500, 500, 200]
    async with db.sessionmaker() as s:
        [note] = (await s.execute(select(Notification))).scalars().all()
        attempts = (await s.execute(select(DeliveryAttempt).order_by(DeliveryAttempt.id))).scalars().all()
        events = (
            await s.execute(select(IncidentEvent.kind, IncidentEvent.text).order_by(IncidentEvent.id))
        ).all()
    assert note.state == "sent" and note.attempts == 3
    assert [a.ok for a in attempts] == [False, False, True]
    assert all("500" in a.detail for a in attempts[:2]), [a.detail for a in attempts]
    kinds = [k for k, _ in events]
    assert kinds.count("delivery_failed") == 2 and kinds.count("sent") == 1
    assert any("Attempt 1 to Flaky webhook failed" in t for _, t in events)


async def test_acknowledging_stops_reminders(db, asettings, webhook):
    channel = await add_channel(db, asettings, "Ops webhook", webhook.url())
    await add_rule(db, "remind", channel, remind_every_s=1)
    await failing_store(db, "S-0030")
    runner = AlertRunner(asettings, db)
    await run_until(runner, lambda: len(webhook.delivered) >= 2, within=30)
    assert webhook.delivered[1]["title"].startswith("[TermPulse] Reminder, not acknowledged: S-0030")
    [incident] = await incidents(db)
    await in_transaction(db, lambda s: acknowledge(s, incident.id, "alice", utcnow()))
    await runner.evaluate()
    await runner.deliver()  # a reminder queued before the acknowledgement still goes
    count = len(webhook.delivered)
    acked_at = utcnow()
    # Passes spread over three reminder intervals after the acknowledgement: no reminder.
    while (utcnow() - acked_at).total_seconds() < 3:
        await runner.evaluate()
        await runner.deliver()
        await asyncio.sleep(0.2)
    assert len(webhook.delivered) == count
    [incident] = await incidents(db)
    assert incident.acked_by == "alice" and incident.acked_at is not None


async def test_escalation_fires_after_its_delay(db, asettings, webhook, webhook2):
    first = await add_channel(db, asettings, "First line", webhook.url())
    second = await add_channel(db, asettings, "Second line", webhook2.url())
    await add_rule(db, "escalating", first, escalate_channel_id=second, escalate_after_s=1)
    sid = await failing_store(db, "S-0040")
    runner = AlertRunner(asettings, db)
    await run_until(runner, lambda: webhook.delivered)
    assert webhook2.delivered == []  # not before its delay ...
    await run_until(runner, lambda: webhook2.delivered)  # ... then to the second channel
    assert webhook2.delivered[0]["title"].startswith("[TermPulse] Escalated: S-0040")
    assert len(webhook.delivered) == 1
    await heal_store(db, sid)
    # The resolution goes to both: the channel notified and the one escalated to.
    await run_until(runner, lambda: len(webhook.delivered) == 2 and len(webhook2.delivered) == 2)
    assert webhook2.delivered[1]["title"].startswith("[TermPulse] Resolved")


async def test_acknowledged_before_the_delay_never_escalates(db, asettings, webhook, webhook2):
    first = await add_channel(db, asettings, "First line", webhook.url())
    second = await add_channel(db, asettings, "Second line", webhook2.url())
    await add_rule(db, "escalating", first, escalate_channel_id=second, escalate_after_s=2)
    await failing_store(db, "S-0041")
    runner = AlertRunner(asettings, db)
    await run_until(runner, lambda: webhook.delivered)
    [incident] = await incidents(db)
    await in_transaction(db, lambda s: acknowledge(s, incident.id, "bob", utcnow()))
    started = utcnow()
    while (utcnow() - started).total_seconds() < 3:
        await runner.evaluate()
        await runner.deliver()
        await asyncio.sleep(0.2)
    assert webhook2.requests == []
    async with db.sessionmaker() as s:
        kinds = list((await s.execute(select(IncidentEvent.kind).order_by(IncidentEvent.id))).scalars())
    assert "acknowledged" in kinds and "opened" in kinds


async def test_thirty_stores_failing_together_send_one_fleet_message(db, webhook):
    from tests.alerts.conftest import alert_settings

    settings = alert_settings(db, alert_fleet_stores=10, alert_fleet_cause_stores=1000)
    channel = await add_channel(db, settings, "Ops webhook", webhook.url())
    await add_rule(db, "everything", channel)
    for i in range(30):
        await failing_store(db, f"S-{100 + i}", terminals=2)
    runner = AlertRunner(settings, db)
    await run_until(runner, lambda: webhook.delivered)
    for _ in range(5):
        await runner.evaluate()
        await runner.deliver()
    assert len(webhook.delivered) == 1
    message = webhook.delivered[0]
    assert message["title"].startswith("[TermPulse] Fleet incident: 30 stores failing, 60 terminals down")
    assert "S-100 Shop S-100" in message["message"] and "S-129 Shop S-129" in message["message"]
    found = await incidents(db)
    [fleet] = [i for i in found if i.kind == "fleet"]
    assert fleet.stores_count == 30
    assert sorted({i.parent_id for i in found if i.kind == "store"}) == [fleet.id]


async def test_same_cause_at_many_stores_is_one_fleet_incident(db, webhook):
    from tests.alerts.conftest import alert_settings

    settings = alert_settings(db, alert_fleet_stores=1000, alert_fleet_cause_stores=5)
    channel = await add_channel(db, settings, "Ops webhook", webhook.url())
    await add_rule(db, "everything", channel)
    for i in range(6):
        await failing_store(db, f"S-C{i}", diagnosis="cloud_disconnected")
    await failing_store(db, "S-OTHER", diagnosis="tcp_refused")
    runner = AlertRunner(settings, db)
    await run_until(runner, lambda: len(webhook.delivered) >= 2)
    for _ in range(3):
        await runner.evaluate()
        await runner.deliver()
    titles = sorted(m["title"] for m in webhook.delivered)
    assert len(titles) == 2, titles
    assert titles[0].startswith("[TermPulse] Fleet incident: 6 stores failing")
    assert titles[1].startswith("[TermPulse] S-OTHER")


async def test_incident_timeline(db, asettings, webhook):
    channel = await add_channel(db, asettings, "Ops webhook", webhook.url())
    await add_rule(db, "everything", channel)
    await failing_store(db, "S-0050")
    runner = AlertRunner(asettings, db)
    await run_until(runner, lambda: webhook.delivered)
    async with db.sessionmaker() as s:
        assert len((await s.execute(select(Incident))).scalars().all()) == 1
        texts = list((await s.execute(select(IncidentEvent.text).order_by(IncidentEvent.id))).scalars())
    assert texts[0].startswith("S-0050 Shop S-0050: 1 of 1 terminals down")
    assert any(t.startswith("Notification to Ops webhook queued") for t in texts)
    assert any(t.startswith("Sent to Ops webhook") for t in texts)


async def test_termpulse_cannot_check_a_stalled_checker_or_an_offline_agent(db, webhook):
    from datetime import timedelta

    from sqlalchemy import update

    from app.inventory.models import Agent, Monitor, Store
    from tests.alerts.conftest import alert_settings

    settings = alert_settings(db, alert_stalled_after_s=0)
    channel = await add_channel(db, settings, "Ops webhook", webhook.url())
    await add_rule(db, "fleet and us", channel, match="fleet")
    sid = await failing_store(db, "S-0060")
    async with db.sessionmaker() as s:
        await s.execute(update(Monitor).values(state="unknown", next_due_at=utcnow() - timedelta(minutes=10)))
        await s.execute(update(Store).where(Store.id == sid).values(status="unknown"))
        agent = Agent(name="pi-s0060", token_hash="0" * 64, token_hint="tp_0000", state="offline")
        s.add(agent)
        await s.flush()
        await s.execute(update(Store).where(Store.id == sid).values(agent_id=agent.id))
        await s.commit()
    runner = AlertRunner(settings, db)
    await run_until(runner, lambda: len(webhook.delivered) == 2)
    titles = sorted(m["title"] for m in webhook.delivered)
    assert titles == [
        "[TermPulse] TermPulse cannot check: 1 checks are overdue (is a worker running?)",
        "[TermPulse] TermPulse cannot check: store agent pi-s0060 is offline (stores S-0060)",
    ]
    assert [i.kind for i in await incidents(db)] == ["cannot_check", "cannot_check"]  # unknown: no store one
    async with db.sessionmaker() as s:
        await s.execute(update(Monitor).values(next_due_at=utcnow() + timedelta(minutes=1)))
        await s.execute(update(Agent).values(state="online"))
        await s.commit()
    await run_until(runner, lambda: len(webhook.delivered) == 4)
    assert all(
        m["title"].startswith("[TermPulse] Resolved: TermPulse cannot check") for m in webhook.delivered[2:]
    )


async def test_a_fleet_incident_resolves_once_every_store_has(db, webhook):
    from tests.alerts.conftest import alert_settings

    settings = alert_settings(db, alert_fleet_stores=10, alert_fleet_cause_stores=1000)
    channel = await add_channel(db, settings, "Ops webhook", webhook.url())
    await add_rule(db, "everything", channel)
    stores = [await failing_store(db, f"S-{300 + i}") for i in range(12)]
    runner = AlertRunner(settings, db)
    await run_until(runner, lambda: webhook.delivered)
    for sid in stores[:-1]:
        await heal_store(db, sid)
    for _ in range(3):
        await runner.evaluate()
        await runner.deliver()
    assert len(webhook.delivered) == 1  # one store still down: the fleet incident stays open
    await heal_store(db, stores[-1])
    await run_until(runner, lambda: len(webhook.delivered) == 2)
    assert webhook.delivered[1]["title"].startswith("[TermPulse] Resolved: Fleet incident: 12 stores failing")
    for _ in range(3):
        await runner.evaluate()
        await runner.deliver()
    assert len(webhook.delivered) == 2  # no resolution per store
    assert {i.state for i in await incidents(db)} == {"resolved"}
