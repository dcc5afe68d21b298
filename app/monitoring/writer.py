"""The one way check results enter the database: `CheckOutcome`s -> `apply_outcomes`.

Every way a check runs produces `CheckOutcome`s:

* scheduled runs (app.monitoring.scheduler), fenced by the worker's lease and due time,
* cloud polls (app.monitoring.cloud), one provider call for a store's terminals, fenced
  the same way and carrying the store's next due time,
* manual runs (app.monitoring.manual: `termpulse check` and Check connection), unfenced.

The workers hand theirs to a `ResultWriter`, which batches them; a manual run writes its
few with `write_outcomes`. Both end in `apply_outcomes`, under the one retry rule
(`app.db.in_transaction`).

A batch is set-based: one SELECT ... FOR NO KEY UPDATE of the monitors (in id order), one UPDATE
of the monitors, one INSERT of the results, one of the state changes, then the derived
status of only the terminals and stores touched.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import secrets
import socket
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import ARRAY, Integer, Row, Select, bindparam, func, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.checks.result import ProbeResult, Step
from app.db import (
    Database,
    dialect_of,
    driver_of,
    in_transaction,
    is_unreachable,
    select_where_in,
    table_of,
    utcnow,
)
from app.inventory.identity import learn_identities
from app.inventory.models import Monitor, Terminal
from app.monitoring.compact import store_folded
from app.monitoring.models import CheckResult, RollupRedo, StateChange, UptimeRedo, dump_steps
from app.monitoring.state import MonitorState, step
from app.monitoring.status import refresh_status
from app.schedule import next_due_at
from app.vocabulary import Outcome, State

log = logging.getLogger(__name__)

_CHUNK = 5000
AGENT_OFFLINE = "agent_offline"  # the diagnosis of a monitor whose store agent went silent
# Unknown spells we assumed rather than saw: a store agent's buffer may replace them.
STALE = "result_stale"  # no result for a while: the state is unknown, not up
_ASSUMED = frozenset({AGENT_OFFLINE, STALE})


@dataclass(slots=True)
class CheckOutcome:
    """One run of one monitor, as a probe or a provider call saw it.

    outcome: ok; fail (the target's fault: counts towards down); error (ours: guard refused,
    internal error, provider API trouble: the monitor becomes unknown).
    due_at: the due time a scheduled run or a cloud poll was for (None for manual runs);
    with the writer's lease owner it fences the run (see `apply_outcomes`).
    next_due_at: when the monitor is due again, where the runner decides (a cloud poll puts
    a store's monitors on the store's phase); else due_at + interval.
    seen_at: when the provider last saw the terminal (Stripe tells), kept as its last_seen_at.
    """

    monitor_id: int
    outcome: Outcome
    checked_at: datetime
    latency_ms: float | None = None
    steps: list[Step] = field(default_factory=list)
    diagnosis: str | None = None
    detail: str | None = None
    due_at: datetime | None = None
    manual: bool = False
    next_due_at: datetime | None = None
    seen_at: datetime | None = None

    def __post_init__(self) -> None:
        self.outcome = Outcome(self.outcome)

    @classmethod
    def of(
        cls,
        monitor_id: int,
        result: ProbeResult,
        checked_at: datetime,
        *,
        due_at: datetime | None = None,
        manual: bool = False,
    ) -> CheckOutcome:
        return cls(
            monitor_id,
            result.outcome,
            checked_at,
            result.latency_ms,
            result.steps,
            result.diagnosis,
            result.detail,
            due_at=due_at,
            manual=manual,
        )


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
    states: dict[int, State] = field(default_factory=dict)  # monitor id -> state after the batch
    retracted: list[Any] = field(default_factory=list)  # monitors whose agent_offline spell went


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
    Monitor.last_diagnosis,
    Monitor.last_checked_at,
)

_mt = table_of(Monitor)
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
_INSERT_RESULT = table_of(CheckResult).insert()
_INSERT_CHANGE = table_of(StateChange).insert()


def _chunks(ids: list[int]) -> Iterator[list[int]]:
    for i in range(0, len(ids), _CHUNK):
        yield ids[i : i + _CHUNK]


def _is_pg(session: AsyncSession) -> bool:
    return dialect_of(session) == "postgresql"


class LockedMonitor(NamedTuple):
    """A monitor's scheduling and state columns as `lock_monitors` reads them (PostgreSQL)."""

    id: int
    store_id: int
    terminal_id: int | None
    kind: str
    state: str
    state_since: datetime | None
    consecutive_failures: int
    consecutive_successes: int
    fail_threshold: int
    success_threshold: int
    interval_s: int
    phase_ms: int
    next_due_at: datetime | None
    lease_owner: str | None
    lease_expires_at: datetime | None
    last_diagnosis: str | None
    last_checked_at: datetime | None


# PostgreSQL: read through asyncpg (app.db.Driver), records as they come: the writer reads a
# batch's monitors at every batch, and SQLAlchemy's work per row (a result processor per
# timestamp) was a good part of its CPU.
_PG_LOCK_MONITORS = (
    f"SELECT {', '.join(LockedMonitor._fields)} FROM monitors"
    " WHERE id = ANY($1::integer[]) ORDER BY id FOR NO KEY UPDATE"
)


async def lock_monitors(session: AsyncSession, ids: list[int]) -> dict[int, Any]:
    """Read (and on PostgreSQL lock, in id order) the monitors' scheduling and state columns
    (rows with the columns of `LockedMonitor` as attributes), by id. FOR NO KEY UPDATE, as the
    UPDATE itself: a row that points at a monitor (a rollup, a state change, written by another
    transaction) holds its KEY SHARE lock until it commits, and must not hold up a batch."""
    if _is_pg(session):
        driver = await driver_of(session)
        make = LockedMonitor._make
        return {row[0]: make(row) for row in await driver.fetch(_PG_LOCK_MONITORS, sorted(set(ids)))}
    query: Select[*tuple[Any, ...]] = (
        select(*_MONITOR_COLS).order_by(Monitor.id).with_for_update(key_share=True)
    )
    rows = await select_where_in(session, query, Monitor.id, sorted(set(ids)))
    return {row.id: row for row in rows}


# PostgreSQL: a batch is one UPDATE and one INSERT, whatever its size, from array parameters.
_PG_UPDATE_MONITORS = """
UPDATE monitors AS m SET
    state = v.state, state_since = v.state_since, consecutive_failures = v.failures,
    consecutive_successes = v.successes, last_checked_at = v.checked_at, last_latency_ms = v.latency_ms,
    last_diagnosis = v.diagnosis, last_detail = v.detail, next_due_at = v.next_due,
    lease_owner = v.owner, lease_expires_at = v.lease_expires
FROM unnest(
    $1::integer[], $2::varchar[], $3::timestamptz[], $4::integer[], $5::integer[], $6::timestamptz[],
    $7::float8[], $8::varchar[], $9::text[], $10::timestamptz[], $11::varchar[], $12::timestamptz[]
) AS v(id, state, state_since, failures, successes, checked_at, latency_ms, diagnosis, detail,
       next_due, owner, lease_expires)
WHERE m.id = v.id
"""
_PG_UPDATE_MONITORS_RELEASED = """
UPDATE monitors AS m SET
    state = v.state, state_since = v.state_since, consecutive_failures = v.failures,
    consecutive_successes = v.successes, last_checked_at = v.checked_at, last_latency_ms = v.latency_ms,
    last_diagnosis = v.diagnosis, last_detail = v.detail, next_due_at = v.next_due,
    lease_owner = NULL, lease_expires_at = NULL
FROM unnest(
    $1::integer[], $2::varchar[], $3::timestamptz[], $4::integer[], $5::integer[], $6::timestamptz[],
    $7::float8[], $8::varchar[], $9::text[], $10::timestamptz[]
) AS v(id, state, state_since, failures, successes, checked_at, latency_ms, diagnosis, detail, next_due)
WHERE m.id = v.id
"""
_MONITOR_ROW_KEYS = (
    "b_id",
    "state",
    "state_since",
    "failures",
    "successes",
    "checked_at",
    "latency_ms",
    "diagnosis",
    "detail",
    "next_due",
    "owner",
    "lease_expires",
)
_PG_INSERT_RESULTS = """
INSERT INTO check_results
    (monitor_id, due_at, checked_at, outcome, latency_ms, steps, diagnosis, detail, manual)
SELECT * FROM unnest(
    $1::integer[], $2::timestamptz[], $3::timestamptz[], $4::varchar[], $5::float8[], $6::text[],
    $7::varchar[], $8::text[], $9::boolean[]
)
"""
_RESULT_KEYS = (
    "monitor_id",
    "due_at",
    "checked_at",
    "outcome",
    "latency_ms",
    "steps",
    "diagnosis",
    "detail",
    "manual",
)


_PG_INSERT_CHANGES = text("""
INSERT INTO state_changes (monitor_id, store_id, terminal_id, at, from_state, to_state, diagnosis)
SELECT * FROM unnest(
    CAST(:monitor_id AS INTEGER[]), CAST(:store_id AS INTEGER[]), CAST(:terminal_id AS INTEGER[]),
    CAST(:at AS TIMESTAMPTZ[]), CAST(:from_state AS VARCHAR[]), CAST(:to_state AS VARCHAR[]),
    CAST(:diagnosis AS VARCHAR[])
)
""")


def _columns(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    return {k: [r[k] for r in rows] for k in rows[0]}


HOUR = timedelta(hours=1)


def hour_floor(at: datetime) -> datetime:
    return at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


async def redo_rollups_since(session: AsyncSession, since: datetime, now: datetime) -> None:
    """Results (or state changes) from `since` on arrived late: the complete hours from then
    to now are rolled up again by the next rollup job."""
    current, hour = hour_floor(now), hour_floor(since)
    rows = []
    while hour < current:
        rows.append({"bucket_start": hour})
        hour += HOUR
    if rows:
        insert = pg_insert if dialect_of(session) == "postgresql" else sqlite_insert
        await session.execute(insert(table_of(RollupRedo)).on_conflict_do_nothing(), rows)


# A change dated this long before it is written is late: the stored days it falls in
# (app.history.daily stores a day only a while longer after it ended) are computed again.
UPTIME_LATE = timedelta(minutes=5)


async def mark_uptime_redo(
    session: AsyncSession, changed: Sequence[tuple[int, int | None, datetime]], now: datetime
) -> None:
    """The (store, terminal or None for a store network monitor, time) of changes to history;
    the late ones, the earliest per store and terminal, go to `uptime_redo`."""
    earliest: dict[tuple[int, int | None], datetime] = {}
    for store_id, terminal_id, at in changed:
        if at < now - UPTIME_LATE:
            key = (store_id, terminal_id)
            earliest[key] = min(at, earliest.get(key, at))
    if earliest:
        rows = [{"store_id": s, "terminal_id": t, "since": at} for (s, t), at in earliest.items()]
        await session.execute(table_of(UptimeRedo).insert(), rows)


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
    await mark_uptime_redo(session, [(t.store_id, t.terminal_id, t.at) for t in transitions], now)
    earliest = min(t.at for t in transitions)
    if earliest < hour_floor(now):  # back-dated into an hour already rolled up
        await redo_rollups_since(session, earliest, now)
    await refresh_status(
        session,
        now,
        terminal_ids={t.terminal_id for t in transitions if t.terminal_id is not None},
        network_changed_store_ids={t.store_id for t in transitions if t.terminal_id is None},
    )


async def apply_outcomes(
    session: AsyncSession,
    outcomes: Sequence[CheckOutcome],
    *,
    lease_owner: str | None = None,
    now: datetime | None = None,
) -> ApplyReport:
    """Store these outcomes and run them through the state machine, in one batch.

    Call inside the caller's transaction; the caller commits. Several outcomes for the
    same monitor are applied in `checked_at` order.

    With `lease_owner` (a worker's writer), an outcome that carries a `due_at` is kept only
    if this worker still holds the monitor's lease for that due time; otherwise the lease
    expired and another worker owns the run, and the outcome is dropped, so no due time is
    ever stored twice. A kept one moves the monitor's due time on (its `next_due_at`, else
    due_at + interval) and releases the lease. Manual runs leave schedule and lease alone.
    """
    report = ApplyReport()
    if not outcomes:
        return report
    now = now or utcnow()
    monitors = await lock_monitors(session, [o.monitor_id for o in outcomes])

    by_monitor: dict[int, list[CheckOutcome]] = defaultdict(list)
    for o in outcomes:
        by_monitor[o.monitor_id].append(o)

    results: list[dict[str, Any]] = []
    plain: list[int] = []  # indexes in results of plain successes
    kept: list[int] = []  # of the other scheduled results (failures, warnings, state changes)
    monitor_rows: list[tuple[Any, ...]] = []  # the columns of _MONITOR_ROW_KEYS
    seen_ok: dict[int, datetime] = {}  # terminal id -> newest ok result: last seen by us
    seen_by_provider: dict[int, datetime] = {}  # terminal id -> the provider's own last seen
    for mid in sorted(by_monitor):
        m = monitors.get(mid)
        if m is None:
            report.missing += len(by_monitor[mid])
            continue
        sm = MonitorState(
            m.state, m.consecutive_failures, m.consecutive_successes, m.fail_threshold, m.success_threshold
        )
        state_since = m.state_since
        mine = by_monitor[mid]
        if len(mine) > 1:
            mine.sort(key=_checked_at)  # stable, as sorted() was
        first = mine[0].checked_at
        if _in_agent_offline_spell(m, first):
            # A store agent's buffered results from while it was offline: what it saw replaces
            # the unknown spell we had to assume.
            restored = await _retract_agent_offline(session, mid, first)
            if restored is not None:
                sm.state, state_since = restored
                report.retracted.append(m)
                await mark_uptime_redo(session, [(m.store_id, m.terminal_id, first)], now)
        next_due, owner, lease_expires = m.next_due_at, m.lease_owner, m.lease_expires_at
        last: CheckOutcome | None = None
        heard = m.last_checked_at
        for o in mine:
            if lease_owner is not None and o.due_at is not None and not o.manual:
                if owner != lease_owner or next_due != o.due_at:
                    report.dropped += 1
                    continue
                next_due = o.next_due_at or next_due_at(o.due_at, m.interval_s, m.phase_ms, now)
                owner = lease_expires = None
            if (silence := _silence(sm.state, heard, o.checked_at, m.interval_s)) is not None:
                # Results stopped (our database, worker or agent) and the stale job did not see
                # it: what we could not observe is unknown, from when a result was missed.
                report.transitions.append(
                    Transition(
                        mid, m.store_id, m.terminal_id, m.kind, silence, sm.state, State.UNKNOWN, STALE
                    )
                )
                sm.state, state_since = State.UNKNOWN, silence
            heard = o.checked_at
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
            if not o.manual:
                plain_ok = o.outcome == Outcome.OK and not o.diagnosis and not changed
                (plain if plain_ok else kept).append(len(results) - 1)
            if m.terminal_id is not None:
                if o.seen_at is not None:
                    seen_by_provider[m.terminal_id] = o.seen_at
                elif o.outcome == Outcome.OK and seen_ok.get(m.terminal_id, o.checked_at) <= o.checked_at:
                    seen_ok[m.terminal_id] = o.checked_at
            last = o
        if last is None:
            continue
        report.states[mid] = State(sm.state)
        monitor_rows.append(
            (
                mid,
                sm.state,
                state_since,
                sm.consecutive_failures,
                sm.consecutive_successes,
                last.checked_at,
                last.latency_ms,
                last.diagnosis,
                last.detail,
                next_due,
                owner,
                lease_expires,
            )
        )

    # A terminal's first healthy check records the device that answered (app.inventory.identity).
    await learn_identities(
        session, [(r["monitor_id"], r["steps"]) for r in results if r["outcome"] == Outcome.OK]
    )
    # A scheduled result is no row of its own: folded into its monitor's day
    # (app.monitoring.compact): a plain success as a count and latency per 5 minutes, any
    # other (a failure, error, warning, the result that changed the state) whole.
    report.written = len(results)
    results = await store_folded(session, results, plain, kept)
    if _is_pg(session):
        driver = await driver_of(session)
        if monitor_rows:
            columns = [list(c) for c in zip(*monitor_rows, strict=True)]
            owners, expiries = columns[10], columns[11]
            if all(o is None for o in owners) and all(e is None for e in expiries):
                # Every lease released (scheduled runs, the usual batch): two arrays fewer to send.
                await driver.execute(_PG_UPDATE_MONITORS_RELEASED, *columns[:10])
            else:
                await driver.execute(_PG_UPDATE_MONITORS, *columns)
        if results:
            for r in results:
                r["steps"] = dump_steps(r["steps"])
            await driver.execute(_PG_INSERT_RESULTS, *([r[k] for r in results] for k in _RESULT_KEYS))
    else:
        if monitor_rows:
            await session.execute(
                _UPDATE_MONITOR.execution_options(synchronize_session=False),
                [dict(zip(_MONITOR_ROW_KEYS, row, strict=True)) for row in monitor_rows],
            )
        if results:
            await session.execute(_INSERT_RESULT, results)
    await record_transitions(session, report.transitions, now)
    if report.retracted:
        await refresh_status(
            session,
            now,
            terminal_ids={m.terminal_id for m in report.retracted if m.terminal_id is not None},
            network_changed_store_ids={m.store_id for m in report.retracted if m.terminal_id is None},
        )
    for terminal_id in seen_by_provider:
        seen_ok.pop(terminal_id, None)
    if seen_ok:
        await _touch_last_seen(session, seen_ok)
    if seen_by_provider:
        await _set_last_seen(session, seen_by_provider)
    return report


def _checked_at(o: CheckOutcome) -> datetime:
    return o.checked_at


_HEARD = frozenset({State.UP, State.DOWN})


@functools.lru_cache(maxsize=1024)
def _spans(interval_s: int) -> tuple[timedelta, timedelta]:
    """A monitor's interval and how late its next result may come (half an interval, at least
    5 s), made once per interval rather than at every result."""
    return timedelta(seconds=interval_s), max(timedelta(seconds=5), timedelta(seconds=interval_s / 2))


def _silence(state: str, heard: datetime | None, checked_at: datetime, interval_s: int) -> datetime | None:
    """When the monitor's results stopped, if they did between its last result (`heard`) and
    this one: the next result came more than half an interval (at least 5 s: a loaded
    machine's lag) after it was due. Unknown from when it was due to when it came."""
    if heard is None or state not in _HEARD:
        return None
    interval, grace = _spans(interval_s)
    due = heard + interval
    if checked_at - due <= grace:
        return None
    return due


def _in_agent_offline_spell(m: Row[Any], earliest: datetime) -> bool:
    """The monitor is unknown because its agent went silent, and these results go back to
    before that: the agent's buffer, replayed after it reconnected."""
    return (
        m.state == State.UNKNOWN
        and m.last_diagnosis == AGENT_OFFLINE
        and m.state_since is not None
        and earliest < m.state_since
    )


async def _retract_agent_offline(
    session: AsyncSession, monitor_id: int, earliest: datetime
) -> tuple[str, datetime | None] | None:
    """Delete the unknown spells we assumed from `earliest` on (agent_offline, and a stale
    mark made at the same time), if nothing else happened since; returns the state (and its
    start) they replaced, or None when history must stay as it is."""
    sc = table_of(StateChange)
    since = (
        await session.execute(
            select(sc.c.id, sc.c.from_state, sc.c.to_state, sc.c.diagnosis)
            .where(sc.c.monitor_id == monitor_id, sc.c.at >= earliest)
            .order_by(sc.c.at, sc.c.id)
        )
    ).all()
    if not since or any(r.to_state != State.UNKNOWN or r.diagnosis not in _ASSUMED for r in since):
        return None
    before = await session.scalar(
        select(sc.c.at)
        .where(sc.c.monitor_id == monitor_id, sc.c.at < earliest)
        .order_by(sc.c.at.desc())
        .limit(1)
    )
    await session.execute(sc.delete().where(sc.c.id.in_([r.id for r in since])))
    return since[0].from_state, before


LAST_SEEN_GRANULARITY = timedelta(seconds=15)


async def _touch_last_seen(session: AsyncSession, seen: dict[int, datetime]) -> None:
    """Terminal.last_seen_at, to within LAST_SEEN_GRANULARITY: a terminal checked every few
    seconds is not rewritten at every check (one row write per terminal per 15 s at most)."""
    at = max(seen.values())  # one timestamp per batch (its newest): a batch spans under a second
    cut = at - LAST_SEEN_GRANULARITY
    table = table_of(Terminal)
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


async def _set_last_seen(session: AsyncSession, seen: dict[int, datetime]) -> None:
    """The provider's own last-seen time wins over "seen by us" (it saw the terminal itself)."""
    table = table_of(Terminal)
    await session.execute(
        update(table)
        .where(table.c.id == bindparam("b_id"))
        .values(last_seen_at=bindparam("seen"), updated_at=table.c.updated_at)
        .execution_options(synchronize_session=False),
        [{"b_id": k, "seen": v} for k, v in sorted(seen.items())],
    )


async def write_outcomes(
    database: Database, outcomes: Sequence[CheckOutcome], *, lease_owner: str | None = None
) -> ApplyReport:
    """Apply these outcomes in a transaction of their own, under the one retry rule."""

    async def work(session: AsyncSession) -> ApplyReport:
        return await apply_outcomes(session, outcomes, lease_owner=lease_owner)

    return await in_transaction(database, work)


def new_owner_id() -> str:
    """A lease owner: this host and process, unique per writer."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{secrets.token_hex(3)}"


class ResultWriter:
    """Collects a worker's outcomes (scheduled runs, cloud polls) and writes them in batches.

    A batch is written when it reaches `max_batch` outcomes or `max_delay_s` after its
    first outcome, whichever comes first. On PostgreSQL up to `max_in_flight` batches are
    written at once (each in its own transaction), so the next batches are sent while the
    database works on the last (a batch spends most of its time waiting for the database:
    with two in flight, a saturated worker's writer held it back). Batches in flight never
    share a monitor (a monitor's outcomes are applied in order, under the lease fence), and
    what they share (a terminal's or store's status row) at worst deadlocks, which the one
    retry rule retries.
    SQLite has one writer at a time: one batch.

    While the database cannot be reached, results wait here, in order, and the writer tries
    again with backoff (0.5 s doubling to 5 s) until it answers; then they are written with
    their real times, each once (the lease fence drops one whose run another worker took
    over meanwhile). Claims need the database too, so little more than what was claimed
    before the outage waits; past `max_queued` the oldest results are dropped, counted in
    `lost` and logged. An outage is one warning when it starts and one line when it ends.
    A batch that fails for another reason (a bug, bad data) is given up and logged: the
    leases of its monitors expire and they run again.
    """

    def __init__(
        self,
        database: Database,
        lease_owner: str,
        *,
        max_batch: int = 500,
        max_delay_s: float = 0.25,
        max_queued: int = 100_000,
        max_in_flight: int = 4,
        close_timeout_s: float = 10.0,
        on_written: Callable[[list[CheckOutcome], ApplyReport], None] | None = None,
    ):
        self.database = database
        self.max_queued = max_queued
        self.close_timeout_s = close_timeout_s
        self.lease_owner = lease_owner
        self.max_batch = max_batch
        self.max_delay_s = max_delay_s
        self.on_written = on_written
        self.max_in_flight = max_in_flight if database.dialect == "postgresql" else 1
        self._pending: list[CheckOutcome] = []
        self._writing: dict[asyncio.Task[None], list[CheckOutcome]] = {}  # batches in flight
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.written = 0
        self.dropped = 0
        self.failed_batches = 0
        self.lost = 0  # results given up: the queue's bound during an outage, or a failed batch
        self.outage_since: float | None = None  # monotonic time the database stopped answering
        self.last_error: str | None = None
        self._retry_s = 0.0
        self._close_deadline: float | None = None
        self.batches = 0
        self.write_s = 0.0  # time spent in write transactions (summed over the batches in flight)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="termpulse-result-writer")

    def submit(self, outcome: CheckOutcome) -> None:
        self._pending.append(outcome)
        self._idle.clear()
        if len(self._pending) > self.max_queued:
            self._drop_oldest(len(self._pending) - self.max_queued)
        if len(self._pending) == 1 or len(self._pending) >= self.max_batch:
            self._wake.set()

    @property
    def backlog(self) -> int:
        return len(self._pending)

    def waiting_monitor_ids(self) -> set[int]:
        """Monitors whose scheduled result waits here (or is being written): their worker
        renews the leases until written, else a slow write would let the run be claimed
        again and done twice."""
        writing = (o for batch in self._writing.values() for o in batch)
        return {o.monitor_id for o in (*writing, *self._pending) if o.due_at is not None and not o.manual}

    async def flush(self) -> None:
        """Wait until everything submitted so far has been written (or given up)."""
        self._wake.set()
        await self._idle.wait()

    async def _run(self) -> None:
        try:
            while True:
                if not self._pending or len(self._writing) >= self._slots():
                    if not self._pending and not self._writing:
                        self._idle.set()
                        if self._closing:
                            return
                    await self._wake.wait()
                    self._wake.clear()
                    continue
                await self._fill()
                batch = self._take_batch()
                if not batch:  # every pending outcome's monitor is in a batch in flight
                    await self._wake.wait()
                    self._wake.clear()
                    continue
                task = asyncio.create_task(self._write(batch), name="termpulse-result-batch")
                self._writing[task] = batch
                task.add_done_callback(self._written)
        finally:
            if self._writing:
                await asyncio.gather(*self._writing, return_exceptions=True)

    def _slots(self) -> int:
        # During an outage one batch tries (and waits) at a time: the others keep their order.
        return 1 if self.outage_since is not None else self.max_in_flight

    async def _fill(self) -> None:
        """Let the batch fill up a little: fewer, bigger transactions."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_delay_s
        while len(self._pending) < self.max_batch and not self._closing:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            try:
                async with asyncio.timeout(remaining):
                    await self._wake.wait()
            except TimeoutError:
                return
            self._wake.clear()

    def _take_batch(self) -> list[CheckOutcome]:
        """The oldest pending outcomes (up to max_batch) of monitors not in a batch in flight."""
        busy = {o.monitor_id for batch in self._writing.values() for o in batch}
        if not busy:
            batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
            return batch
        batch, rest = [], []
        for o in self._pending:
            if len(batch) < self.max_batch and o.monitor_id not in busy:
                batch.append(o)
            else:
                busy.add(o.monitor_id)  # keep a monitor's later outcomes behind its earlier ones
                rest.append(o)
        self._pending = rest
        return batch

    def _written(self, task: asyncio.Task[None]) -> None:
        self._writing.pop(task, None)
        self._wake.set()

    async def _write(self, batch: list[CheckOutcome]) -> None:
        t0 = time.perf_counter()
        try:
            report = await write_outcomes(self.database, batch, lease_owner=self.lease_owner)
        except Exception as exc:
            if is_unreachable(exc) and not self._past_close_deadline():
                await self._wait_for_database(batch, exc)
                return
            self.failed_batches += 1
            self.lost += len(batch)
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.error(
                "could not write %d check results (their monitors run again when the lease expires): %s",
                len(batch),
                exc,
            )
            return
        finally:
            self.batches += 1
            self.write_s += time.perf_counter() - t0
        if self.outage_since is not None:
            log.warning(
                "the database answers again after %.0f s: the results kept meanwhile are being written",
                time.monotonic() - self.outage_since,
            )
            self.outage_since, self._retry_s = None, 0.0
        self.written += report.written
        self.dropped += report.dropped
        if report.dropped:
            log.warning(
                "%d results dropped: their lease had expired and another worker owns the run", report.dropped
            )
        if self.on_written is not None:
            self.on_written(batch, report)

    async def _wait_for_database(self, batch: list[CheckOutcome], exc: Exception) -> None:
        """Keep the batch (first, in order) and wait before the next try."""
        self.last_error = f"{type(exc).__name__}: {exc}"
        if self.outage_since is None:
            self.outage_since = time.monotonic()
            log.warning(
                "the database cannot be reached (%s): check results wait in memory (up to %d) "
                "and are written when it answers",
                type(exc).__name__,
                self.max_queued,
            )
        self._pending[:0] = batch
        if len(self._pending) > self.max_queued:
            self._drop_oldest(len(self._pending) - self.max_queued)
        self._retry_s = min(max(self._retry_s * 2, 0.5), 5.0)
        await asyncio.sleep(self._retry_s)

    def _drop_oldest(self, count: int) -> None:
        if not self.lost:
            log.error(
                "more than %d check results wait for the database: the oldest are dropped "
                "(their monitors' history has a gap there, recorded as unknown)",
                self.max_queued,
            )
        del self._pending[:count]
        self.lost += count

    def _past_close_deadline(self) -> bool:
        return self._close_deadline is not None and time.monotonic() > self._close_deadline

    async def close(self) -> None:
        """Write everything still pending, then stop (waiting up to `close_timeout_s` for a
        database that cannot be reached; what is still waiting then is lost, and logged)."""
        self._closing = True
        self._close_deadline = time.monotonic() + self.close_timeout_s
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None
