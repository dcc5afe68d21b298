"""Hand-made fleets for the history tests: stores, terminals, monitors and state changes
written straight into the database, with the times the test names."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from app.db import Database
from app.inventory.models import Monitor, Store, Terminal
from app.monitoring.models import StateChange

T0 = datetime(2025, 3, 4, 0, 0, tzinfo=UTC)  # a Tuesday, well in the past
LONG_AGO = T0 - timedelta(days=400)
_seq = itertools.count(1)


def at(hours: float = 0, minutes: float = 0, seconds: float = 0) -> datetime:
    return T0 + timedelta(hours=hours, minutes=minutes, seconds=seconds)


async def store(
    db: Database,
    code: str | None = None,
    *,
    tz: str = "UTC",
    region: str = "North",
    created: datetime = LONG_AGO,
) -> int:
    code = code or f"H-{next(_seq):04d}"
    async with db.sessionmaker() as s:
        row = Store(
            code=code,
            name=f"Shop {code}",
            region=region,
            timezone=tz,
            status="unknown",
            created_at=created,
            updated_at=created,
        )
        s.add(row)
        await s.commit()
        return row.id


async def terminal(
    db: Database, store_id: int, poiid: str | None = None, *, created: datetime = LONG_AGO
) -> int:
    poiid = poiid or f"P400-{next(_seq):09d}"
    async with db.sessionmaker() as s:
        row = Terminal(
            store_id=store_id,
            poiid=poiid,
            model="P400",
            serial=poiid[-9:],
            label="Till",
            integration="local",
            status="unknown",
            cloud_state="unknown",
            created_at=created,
            updated_at=created,
        )
        s.add(row)
        await s.commit()
        return row.id


async def monitor(
    db: Database,
    store_id: int,
    terminal_id: int | None,
    changes=(),
    *,
    kind: str = "tcp",
    initial: str = "unknown",
    since: datetime = LONG_AGO,
) -> int:
    """A monitor and its state changes [(at, to_state), ...]: from_state chained from `initial`;
    the monitor's current state and state_since follow the last change."""
    n = next(_seq)
    state, state_since = initial, since
    rows = []
    for when, to_state in changes:
        rows.append({"at": when, "from_state": state, "to_state": to_state})
        state, state_since = to_state, when
    async with db.sessionmaker() as s:
        m = Monitor(
            key=f"hist:{n}",
            store_id=store_id,
            terminal_id=terminal_id,
            kind=kind,
            target=f"127.0.0.1:{n}",
            params={},
            interval_s=60,
            timeout_s=1.0,
            enabled=True,
            phase_ms=0,
            state=state,
            state_since=state_since,
        )
        s.add(m)
        await s.flush()
        for r in rows:
            s.add(
                StateChange(monitor_id=m.id, store_id=store_id, terminal_id=terminal_id, diagnosis=None, **r)
            )
        await s.commit()
        return m.id


async def terminal_info(db: Database, terminal_id: int):
    from app.history.uptime import _TERMINAL_COLS, TerminalInfo

    async with db.sessionmaker() as s:
        row = (
            await s.execute(
                select(*_TERMINAL_COLS)
                .join(Store, Store.id == Terminal.store_id)
                .where(Terminal.id == terminal_id)
            )
        ).one()
    return TerminalInfo(*row)
