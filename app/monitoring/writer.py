"""Applying check outcomes: results, the state machine, state changes and derived status.

`apply_outcomes` is the one way results enter the database, used by

* the scheduler's writer (scheduled runs, fenced by the worker's lease),
* `check_terminal_now` (manual runs from the CLI and the dashboard's Check connection),
* the provider poller (cloud monitors, a store's terminals at a time).

Everything is batched: one SELECT ... FOR UPDATE of the monitors (in id order), one
executemany UPDATE of the monitors by primary key, one INSERT of the results, one of the
state changes, then the derived status of only the terminals and stores touched.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ARRAY, Integer, bindparam, func, select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import Database, select_where_in, utcnow
from app.inventory.models import Monitor, Terminal
from app.inventory.monitors import next_due_at
from app.monitoring.models import CheckResult, StateChange
from app.monitoring.state import MonitorState, step
from app.monitoring.status import refresh_status

log = logging.getLogger(__name__)

_CHUNK = 5000


@dataclass
class Outcome:
    """One run of one monitor, as the probes (or the provider poller) saw it.

    outcome: "ok"; "fail" (the target's fault: counts towards down); "error" (ours:
    guard refused, internal error, provider API trouble: the monitor becomes unknown).
    due_at: the due time a scheduled run was for (None for manual and cloud runs).
    """

    monitor_id: int
    outcome: str
    checked_at: datetime
    latency_ms: float | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)
    diagnosis: str | None = None
    detail: str | None = None
    due_at: datetime | None = None
    manual: bool = False


@dataclass
class Transition:
    monitor_id: int
    store_id: int
    terminal_id: int | None
    kind: str
    at: datetime
    from_state: str
    to_state: str
    diagnosis: str | None


@dataclass
class ApplyReport:
    written: int = 0  # results stored
    dropped: int = 0  # scheduled results whose lease was lost (another worker owns the run)
    missing: int = 0  # results for monitors that no longer exist
    transitions: list[Transition] = field(default_factory=list)
    states: dict[int, str] = field(default_factory=dict)  # monitor id -> state after the batch


_MONITOR_COLS = (
    Monitor.id,
    Monitor.store_id,
    Monitor.terminal_id,
    Monitor.kind,
    Monitor.state,
    Monitor.state_since,
    Monitor.consecutive_failures,
    Monitor.consecutive_successes,
    Monitor.fail_threshold,
    Monitor.success_threshold,
    Monitor.interval_s,
    Monitor.phase_ms,
    Monitor.next_due_at,
    Monitor.lease_owner,
    Monitor.lease_expires_at,
)

_mt = Monitor.__table__
_UPDATE_MONITOR = (
    update(_mt)
    .where(_mt.c.id == bindparam("b_id"))
    .values(
        state=bindparam("state"),
        state_since=bindparam("state_since"),
        consecutive_failures=bindparam("failures"),
        consecutive_successes=bindparam("successes"),
        last_checked_at=bindparam("checked_at"),
        last_latency_ms=bindparam("latency_ms"),
        last_diagnosis=bindparam("diagnosis"),
        last_detail=bindparam("detail"),
        next_due_at=bindparam("next_due"),
        lease_owner=bindparam("owner"),
        lease_expires_at=bindparam("lease_expires"),
    )
)
_INSERT_RESULT = CheckResult.__table__.insert()
_INSERT_CHANGE = StateChange.__table__.insert()


def _chunks(ids: list[int]):
    for i in range(0, len(ids), _CHUNK):
        yield ids[i : i + _CHUNK]


def _is_pg(session: AsyncSession) -> bool:
    return session.bind.dialect.name == "postgresql"


async def lock_monitors(session: AsyncSession, ids: list[int]) -> dict[int, Any]:
    """Read (and on PostgreSQL lock, in id order) the monitors' scheduling and state columns."""
    query = select(*_MONITOR_COLS).order_by(Monitor.id).with_for_update()
    return {row.id: row for row in await select_where_in(session, query, Monitor.id, sorted(set(ids)))}


# PostgreSQL: a batch is one UPDATE and one INSERT, whatever its size, from array parameters.
_PG_UPDATE_MONITORS = text("""
UPDATE monitors AS m SET
    state = v.state, state_since = v.state_since, consecutive_failures = v.failures,
    consecutive_successes = v.successes, last_checked_at = v.checked_at, last_latency_ms = v.latency_ms,
    last_diagnosis = v.diagnosis, last_detail = v.detail, next_due_at = v.next_due,
    lease_owner = v.owner, lease_expires_at = v.lease_expires
FROM unnest(
    CAST(:b_id AS INTEGER[]), CAST(:state AS VARCHAR[]), CAST(:state_since AS TIMESTAMPTZ[]),
    CAST(:failures AS INTEGER[]), CAST(:successes AS INTEGER[]), CAST(:checked_at AS TIMESTAMPTZ[]),
    CAST(:latency_ms AS FLOAT8[]), CAST(:diagnosis AS VARCHAR[]), CAST(:detail AS TEXT[]),
    CAST(:next_due AS TIMESTAMPTZ[]), CAST(:owner AS VARCHAR[]), CAST(:lease_expires AS TIMESTAMPTZ[])
) AS v(id, state, state_since, failures, successes, checked_at, latency_ms, diagnosis, detail,
       next_due, owner, lease_expires)
WHERE m.id = v.id
""")
_PG_INSERT_RESULTS = text("""
INSERT INTO check_results (monitor_id, due_at, checked_at, outcome, latency_ms, steps, diagnosis, detail, manual)
SELECT monitor_id, due_at, checked_at, outcome, latency_ms, CAST(steps AS JSONB), diagnosis, detail, manual
FROM unnest(
    CAST(:monitor_id AS INTEGER[]), CAST(:due_at AS TIMESTAMPTZ[]), CAST(:checked_at AS TIMESTAMPTZ[]),
    CAST(:outcome AS VARCHAR[]), CAST(:latency_ms AS FLOAT8[]), CAST(:steps AS TEXT[]),
    CAST(:diagnosis AS VARCHAR[]), CAST(:detail AS TEXT[]), CAST(:manual AS BOOLEAN[])
) AS v(monitor_id, due_at, checked_at, outcome, latency_ms, steps, diagnosis, detail, manual)
""")


_PG_INSERT_CHANGES = text("""
INSERT INTO state_changes (monitor_id, store_id, terminal_id, at, from_state, to_state, diagnosis)
SELECT * FROM unnest(
    CAST(:monitor_id AS INTEGER[]), CAST(:store_id AS INTEGER[]), CAST(:terminal_id AS INTEGER[]),
    CAST(:at AS TIMESTAMPTZ[]), CAST(:from_state AS VARCHAR[]), CAST(:to_state AS VARCHAR[]),
    CAST(:diagnosis AS VARCHAR[])
)
""")


def _columns(rows: list[dict]) -> dict[str, list]:
    return {k: [r[k] for r in rows] for k in rows[0]}


async def record_transitions(session: AsyncSession, transitions: list[Transition], now: datetime) -> None:
    """State change rows, then the derived status of the terminals and stores they touch."""
    if not transitions:
        return
    rows = [
        {
            "monitor_id": t.monitor_id,
            "store_id": t.store_id,
            "terminal_id": t.terminal_id,
            "at": t.at,
            "from_state": t.from_state,
            "to_state": t.to_state,
            "diagnosis": t.diagnosis,
        }
        for t in transitions
    ]
    if _is_pg(session):
        await session.execute(_PG_INSERT_CHANGES, _columns(rows))
    else:
        await session.execute(_INSERT_CHANGE, rows)
    await refresh_status(
        session,
        now,
        terminal_ids={t.terminal_id for t in transitions if t.terminal_id is not None},
        network_changed_store_ids={t.store_id for t in transitions if t.terminal_id is None},
    )


async def apply_outcomes(
    session: AsyncSession,
    outcomes: Sequence[Outcome],
    *,
    lease_owner: str | None = None,
    now: datetime | None = None,
) -> ApplyReport:
    """Store these outcomes and run them through the state machine, in one batch.

    Call inside the caller's transaction; the caller commits. Several outcomes for the
    same monitor are applied in `checked_at` order.

    With `lease_owner` (the scheduler), outcomes that carry a `due_at` are scheduled runs:
    each is kept only if this worker still holds the monitor's lease for that due time
    (otherwise the lease expired and another worker owns the run: the result is dropped,
    so no due time is ever stored twice); the monitor's next due time is set from its due
    time and its lease released. Without it (manual checks, the cloud poller) the
    schedule and leases are left alone.
    """
    report = ApplyReport()
    if not outcomes:
        return report
    now = now or utcnow()
    monitors = await lock_monitors(session, [o.monitor_id for o in outcomes])

    by_monitor: dict[int, list[Outcome]] = defaultdict(list)
    for o in outcomes:
        by_monitor[o.monitor_id].append(o)

    results: list[dict] = []
    monitor_rows: list[dict] = []
    seen_ok_terminals: dict[int, datetime] = {}
    for mid in sorted(by_monitor):
        m = monitors.get(mid)
        if m is None:
            report.missing += len(by_monitor[mid])
            continue
        sm = MonitorState(
            m.state, m.consecutive_failures, m.consecutive_successes, m.fail_threshold, m.success_threshold
        )
        state_since = m.state_since
        next_due, owner, lease_expires = m.next_due_at, m.lease_owner, m.lease_expires_at
        last: Outcome | None = None
        for o in sorted(by_monitor[mid], key=lambda o: o.checked_at):
            if lease_owner is not None and o.due_at is not None and not o.manual:
                if owner != lease_owner or next_due != o.due_at:
                    report.dropped += 1
                    continue
                next_due = next_due_at(o.due_at, m.interval_s, m.phase_ms, now)
                owner = lease_expires = None
            before = sm.state
            changed = step(sm, o.outcome)
            if changed:
                state_since = o.checked_at
                report.transitions.append(
                    Transition(
                        mid, m.store_id, m.terminal_id, m.kind, o.checked_at, before, changed, o.diagnosis
                    )
                )
            results.append(
                {
                    "monitor_id": mid,
                    "due_at": o.due_at,
                    "checked_at": o.checked_at,
                    "outcome": o.outcome,
                    "latency_ms": o.latency_ms,
                    "steps": o.steps,
                    "diagnosis": o.diagnosis,
                    "detail": o.detail,
                    "manual": o.manual,
                }
            )
            if o.outcome == "ok" and m.terminal_id is not None:
                seen = seen_ok_terminals.get(m.terminal_id)
                if seen is None or seen < o.checked_at:
                    seen_ok_terminals[m.terminal_id] = o.checked_at
            last = o
        if last is None:
            continue
        report.states[mid] = sm.state
        monitor_rows.append(
            {
                "b_id": mid,
                "state": sm.state,
                "state_since": state_since,
                "failures": sm.consecutive_failures,
                "successes": sm.consecutive_successes,
                "checked_at": last.checked_at,
                "latency_ms": last.latency_ms,
                "diagnosis": last.diagnosis,
                "detail": last.detail,
                "next_due": next_due,
                "owner": owner,
                "lease_expires": lease_expires,
            }
        )

    if _is_pg(session):
        if monitor_rows:
            await session.execute(_PG_UPDATE_MONITORS, _columns(monitor_rows))
        if results:
            for r in results:
                r["steps"] = json.dumps(r["steps"])
            await session.execute(_PG_INSERT_RESULTS, _columns(results))
    else:
        if monitor_rows:
            await session.execute(_UPDATE_MONITOR.execution_options(synchronize_session=False), monitor_rows)
        if results:
            await session.execute(_INSERT_RESULT, results)
    report.written = len(results)
    await record_transitions(session, report.transitions, now)
    if seen_ok_terminals:
        await _touch_last_seen(session, seen_ok_terminals)
    return report


LAST_SEEN_GRANULARITY = timedelta(seconds=15)


async def _touch_last_seen(session: AsyncSession, seen: dict[int, datetime]) -> None:
    """Terminal.last_seen_at, to within LAST_SEEN_GRANULARITY: a terminal checked every few
    seconds is not rewritten at every check (one row write per terminal per 15 s at most)."""
    at = max(seen.values())  # one timestamp per batch (its newest): a batch spans under a second
    cut = at - LAST_SEEN_GRANULARITY
    table = Terminal.__table__
    stale = (table.c.last_seen_at.is_(None)) | (table.c.last_seen_at < cut)
    values = {"last_seen_at": at, "updated_at": table.c.updated_at}
    if _is_pg(session):
        await session.execute(
            update(table)
            .where(table.c.id == func.any(bindparam("ids", type_=ARRAY(Integer))), stale)
            .values(**values)
            .execution_options(synchronize_session=False),
            {"ids": sorted(seen)},
        )
        return
    for chunk in _chunks(sorted(seen)):
        await session.execute(
            update(table)
            .where(table.c.id.in_(chunk), stale)
            .values(**values)
            .execution_options(synchronize_session=False)
        )


def _retryable(exc: BaseException) -> bool:
    orig = getattr(exc, "orig", None)
    code = getattr(orig, "sqlstate", None) or getattr(getattr(orig, "__cause__", None), "sqlstate", None)
    if code in ("40P01", "40001"):  # deadlock, serialization failure
        return True
    return "database is locked" in str(exc)


class ResultWriter:
    """Collects outcomes from running checks and writes them in batches.

    A batch is written when it reaches `max_batch` outcomes or `max_delay_s` after its
    first outcome, whichever comes first, one batch at a time. A batch that cannot be
    written (database down) is retried a few times and then given up: the leases of its
    monitors expire and they are run again, so nothing is lost.
    """

    def __init__(
        self,
        database: Database,
        lease_owner: str,
        *,
        max_batch: int = 500,
        max_delay_s: float = 0.25,
        on_written: Callable[[list[Outcome], ApplyReport], None] | None = None,
    ):
        self.database = database
        self.lease_owner = lease_owner
        self.max_batch = max_batch
        self.max_delay_s = max_delay_s
        self.on_written = on_written
        self._pending: list[Outcome] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._closing = False
        self.written = 0
        self.dropped = 0
        self.failed_batches = 0
        self.batches = 0
        self.write_s = 0.0  # time spent in write transactions

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="termpulse-result-writer")

    def submit(self, outcome: Outcome) -> None:
        self._pending.append(outcome)
        if len(self._pending) == 1 or len(self._pending) >= self.max_batch:
            self._wake.set()

    @property
    def backlog(self) -> int:
        return len(self._pending)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                if self._closing:
                    return
                await self._wake.wait()
                self._wake.clear()
                continue
            # Let the batch fill up a little: fewer, bigger transactions.
            deadline = loop.time() + self.max_delay_s
            while len(self._pending) < self.max_batch and not self._closing:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    await asyncio.wait_for(self._wake.wait(), remaining)
                except TimeoutError:
                    break
                self._wake.clear()
            batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
            await self._write(batch)

    async def _write(self, batch: list[Outcome]) -> None:
        t0 = time.perf_counter()
        try:
            await self._write_batch(batch)
        finally:
            self.batches += 1
            self.write_s += time.perf_counter() - t0

    async def _write_batch(self, batch: list[Outcome]) -> None:
        for attempt in range(5):
            try:
                async with self.database.sessionmaker() as session:
                    report = await apply_outcomes(session, batch, lease_owner=self.lease_owner)
                    await session.commit()
            except DBAPIError as exc:
                if attempt < 4 and (_retryable(exc) or exc.connection_invalidated):
                    await asyncio.sleep(0.05 * 2**attempt)
                    continue
                self.failed_batches += 1
                log.error(
                    "could not write %d check results (their monitors run again when the lease expires): %s",
                    len(batch),
                    exc,
                )
                return
            except Exception:
                self.failed_batches += 1
                log.exception("could not write %d check results", len(batch))
                return
            self.written += report.written
            self.dropped += report.dropped
            if report.dropped:
                log.warning(
                    "%d results dropped: their lease had expired and another worker owns the run",
                    report.dropped,
                )
            if self.on_written is not None:
                self.on_written(batch, report)
            return

    async def close(self) -> None:
        """Write everything still pending, then stop."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None
