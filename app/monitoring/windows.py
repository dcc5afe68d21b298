"""Maintenance windows (and trading hours) in the state machine: a periodic worker job.

`maintenance` is a state set by people, not by results (app.monitoring.state): while it
holds, results are stored and streaks kept, the state stays. This job is how people's
windows set it:

* a store in an active maintenance window (app.windows) has its monitors put into
  ``maintenance`` (state change diagnosis ``maintenance_window``), from the window's start
  when nothing happened to the monitor since (else from now);
* with ``trading_hours`` on, a store closed by its trading hours likewise
  (``outside_trading_hours``): the time counts as maintenance in history, not as down;
* a monitor in maintenance whose store is no longer quiet returns to ``unknown``
  (``maintenance_ended``) until its next result says what it is: we did not watch it.

Paused monitors stay paused. The job is stateless: it compares what should be with what is,
so a window created, ended or deleted at any time, or a worker that was down, is caught up
at its next run. Changes are never dated before the current hour (rolled-up hours stay
as they were rolled up).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import select_where_in, table_of, utcnow
from app.inventory.models import Monitor
from app.monitoring.writer import Transition, lock_monitors, record_transitions
from app.vocabulary import MANUAL_STATES, State
from app.windows.service import Active, stores_in_maintenance, stores_outside_trading_hours

IN_WINDOW = "maintenance_window"
OUTSIDE_HOURS = "outside_trading_hours"
ENDED = "maintenance_ended"


@dataclass
class WindowsReport:
    entered: int = 0  # monitors put into maintenance
    left: int = 0  # monitors returned to unknown


async def apply_windows(
    session: AsyncSession, now: datetime | None = None, *, trading_hours: bool = True
) -> WindowsReport:
    """Put the monitors of quiet stores into maintenance, and the others out of it.
    Call inside a transaction; the caller commits."""
    now = now or utcnow()
    report = WindowsReport()
    in_window: dict[int, Active] = await stores_in_maintenance(session, now)
    closed = (await stores_outside_trading_hours(session, now)) - set(in_window) if trading_hours else set()
    quiet = set(in_window) | closed

    entering = await select_where_in(
        session,
        select(Monitor.id).where(Monitor.state.not_in(list(MANUAL_STATES))),
        Monitor.store_id,
        sorted(quiet),
        scalars=True,
    )
    in_maintenance = (
        await session.execute(select(Monitor.id, Monitor.store_id).where(Monitor.state == State.MAINTENANCE))
    ).all()
    leaving = [r.id for r in in_maintenance if r.store_id not in quiet]
    if not entering and not leaving:
        return report

    floor = now.replace(minute=0, second=0, microsecond=0)  # the current hour: never rolled up yet
    locked = await lock_monitors(session, [*entering, *leaving])  # id order, as the writer locks
    transitions: list[Transition] = []
    updates: list[dict[str, object]] = []
    for mid, m in locked.items():
        if m.store_id in quiet and m.state not in MANUAL_STATES:
            window = in_window.get(m.store_id)
            at = now
            if window is not None and (m.state_since is None or m.state_since <= window.starts_at):
                at = min(max(window.starts_at, floor), now)  # nothing happened since it started
            diagnosis = IN_WINDOW if window is not None else OUTSIDE_HOURS
            transitions.append(
                Transition(mid, m.store_id, m.terminal_id, m.kind, at, m.state, State.MAINTENANCE, diagnosis)
            )
            updates.append({"b_id": mid, "state": State.MAINTENANCE, "since": at})
            report.entered += 1
        elif m.store_id not in quiet and m.state == State.MAINTENANCE:
            transitions.append(
                Transition(mid, m.store_id, m.terminal_id, m.kind, now, m.state, State.UNKNOWN, ENDED)
            )
            updates.append({"b_id": mid, "state": State.UNKNOWN, "since": now})
            report.left += 1
    if updates:
        table = table_of(Monitor)
        await session.execute(
            update(table)
            .where(table.c.id == bindparam("b_id"))
            .values(state=bindparam("state"), state_since=bindparam("since"))
            .execution_options(synchronize_session=False),
            updates,
        )
        await record_transitions(session, transitions, now)
    return report
