"""Maintenance windows and trading hours (app.windows.quiet_stores) silence notifications:
the incident is kept, with the reason, and nothing is sent; after the window it notifies."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update

from app.alerts.models import Incident
from app.alerts.runner import AlertRunner
from app.db import utcnow
from app.windows.models import MaintenanceWindow, TradingHours
from tests.alerts.conftest import add_channel, add_rule, failing_store, incidents, run_until


async def test_a_maintenance_window_silences(db, asettings, webhook):
    channel = await add_channel(db, asettings, "Ops webhook", webhook.url())
    await add_rule(db, "everything", channel)
    sid = await failing_store(db, "S-0200")
    async with db.sessionmaker() as s:
        window = MaintenanceWindow(
            scope="store",
            store_id=sid,
            title="Refit",
            starts_at=utcnow() - timedelta(hours=1),
            ends_at=utcnow() + timedelta(hours=1),
        )
        s.add(window)
        await s.commit()
        window_id = window.id
    runner = AlertRunner(asettings, db)
    await run_until(runner, lambda: _silenced(db))
    for _ in range(3):
        await runner.evaluate()
        await runner.deliver()
    assert webhook.requests == []
    [incident] = await incidents(db)
    assert "Refit" in incident.silenced
    # The window ends: the incident is notified now.
    async with db.sessionmaker() as s:
        await s.execute(
            update(MaintenanceWindow).where(MaintenanceWindow.id == window_id).values(ends_at=utcnow())
        )
        await s.commit()
    await run_until(runner, lambda: webhook.delivered)
    assert webhook.delivered[0]["title"].startswith("[TermPulse] S-0200")


async def test_outside_trading_hours_nothing_is_notified(db, asettings, webhook):
    channel = await add_channel(db, asettings, "Ops webhook", webhook.url())
    await add_rule(db, "everything", channel)
    sid = await failing_store(db, "S-0201")
    async with db.sessionmaker() as s:
        for day in range(7):  # closed every day
            s.add(TradingHours(store_id=sid, weekday=day, opens_min=None, closes_min=None))
        await s.commit()
    runner = AlertRunner(asettings, db)
    await run_until(runner, lambda: _silenced(db))
    for _ in range(3):
        await runner.evaluate()
        await runner.deliver()
    assert webhook.requests == []
    [incident] = await incidents(db)
    assert "trading hours" in incident.silenced


async def _silenced(db) -> bool:
    async with db.sessionmaker() as s:
        return bool(
            (await s.execute(select(Incident.silenced).where(Incident.silenced.is_not(None)))).first()
        )
