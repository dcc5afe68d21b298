"""Test data for the dashboard: the sample fleet, then states and history written the way the
state machine writes them (terminal/monitor states, state changes, check results, events)."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import select, update

import app.models  # noqa: F401
from app.db import Database, utcnow
from app.inventory.csvimport import import_fleet
from app.inventory.models import Monitor, Store, Terminal, TerminalEvent
from app.monitoring.models import CheckResult, StateChange
from app.monitoring.status import refresh_status

FLEET = Path(__file__).resolve().parents[2] / "app" / "inventory" / "fleet"


async def import_sample(database: Database) -> None:
    files = [(p.name, p.read_bytes()) for p in (FLEET / "stores.csv", FLEET / "terminals.csv")]
    async with database.sessionmaker() as session:
        await import_fleet(session, files)


async def set_terminal_state(
    database: Database,
    poiid: str,
    status: str,
    *,
    cloud_state: str | None = None,
    at: datetime | None = None,
    diagnosis: str | None = None,
) -> None:
    """What the state machine does on a transition: monitor state, change row, terminal row."""
    at = at or utcnow()
    async with database.sessionmaker() as session:
        t = await session.scalar(select(Terminal).where(Terminal.poiid == poiid))
        monitors = list(await session.scalars(select(Monitor).where(Monitor.terminal_id == t.id)))
        for m in monitors:
            if m.state != status:
                session.add(
                    StateChange(
                        monitor_id=m.id,
                        store_id=t.store_id,
                        terminal_id=t.id,
                        at=at,
                        from_state=m.state,
                        to_state=status,
                        diagnosis=diagnosis,
                    )
                )
                m.state, m.state_since = status, at
                m.last_diagnosis = diagnosis
        values = {"status": status, "status_since": at, "updated_at": at}
        if status == "up":
            values["last_seen_at"] = at
        if cloud_state:
            values["cloud_state"] = cloud_state
        await session.execute(update(Terminal).where(Terminal.id == t.id).values(**values))
        # The store's status by the rule of app.monitoring.status (can it take cards?).
        await refresh_status(session, at, store_ids=[t.store_id])
        await session.commit()


async def seed_states(
    database: Database, *, down: int = 6, unknown: int = 4, now: datetime | None = None
) -> dict:
    """Everything up for a day with some history; then a few terminals down and unknown."""
    now = now or utcnow()
    day_ago = now - timedelta(hours=26)
    async with database.sessionmaker() as session:
        terminals = list(await session.scalars(select(Terminal).order_by(Terminal.id)))
        monitors = list(await session.scalars(select(Monitor)))
        await session.execute(
            update(Monitor).values(state="up", state_since=day_ago, last_checked_at=now, last_latency_ms=12.0)
        )
        await session.execute(update(Store).values(status="up", status_since=day_ago))
        watched = {m.terminal_id for m in monitors}
        for t in terminals:
            t.created_at = now - timedelta(days=30)
            # A terminal with nothing to check is not monitored (app.monitoring.status).
            status = "up" if t.id in watched else "none"
            t.status, t.status_since, t.last_seen_at = status, day_ago, now - timedelta(seconds=30)
            t.cloud_state = "connected" if t.cloud_enabled else "not_enabled"
        # A few hours of results for the latency chart, for every monitor of the first terminals.
        first = {t.id for t in terminals[:3]}
        rows = []
        for m in monitors:
            if m.terminal_id in first:
                for i in range(0, 24 * 60, 10):
                    at = now - timedelta(minutes=i)
                    rows.append(
                        {
                            "monitor_id": m.id,
                            "checked_at": at,
                            "due_at": at,
                            "outcome": "ok",
                            "latency_ms": 10.0 + (i % 70) / 3,
                            "steps": [],
                            "manual": False,
                        }
                    )
        if rows:
            await session.execute(CheckResult.__table__.insert(), rows)
        await session.flush()
        stores = list(await session.scalars(select(Store.id)))
        await refresh_status(session, day_ago, store_ids=stores)
        t0 = terminals[0]
        session.add(
            TerminalEvent(
                terminal_id=t0.id,
                at=now - timedelta(days=2),
                kind="address_changed",
                detail={"old": "127.1.1.9:2000", "new": f"{t0.lan_host}:{t0.lan_port}"},
                source="lan scan",
            )
        )
        await session.commit()
    down_poiids = [t.poiid for t in terminals[5 : 5 + down]]
    unknown_poiids = [t.poiid for t in terminals[40 : 40 + unknown]]
    for i, poiid in enumerate(down_poiids):
        await set_terminal_state(
            database,
            poiid,
            "down",
            cloud_state=None,
            at=now - timedelta(minutes=5 + 7 * i),
            diagnosis="tcp_timeout",
        )
    for poiid in unknown_poiids:
        await set_terminal_state(
            database, poiid, "unknown", at=now - timedelta(minutes=3), diagnosis="provider_unavailable"
        )
    return {"down": down_poiids, "unknown": unknown_poiids, "all": [t.poiid for t in terminals]}
