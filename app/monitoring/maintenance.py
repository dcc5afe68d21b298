"""Periodic jobs next to the checks: stale results -> unknown, retention, rollups."""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, case, delete, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import Database, dialect_of, table_of, utcnow
from app.inventory.models import Agent, Monitor
from app.monitoring.compact import (
    FoldedResult,
    PlainBucket,
    first_day,
    forget_kept,
    forget_recent,
    kept_results,
    plain_buckets,
    plain_days,
)
from app.monitoring.models import CheckResult, RolledUpHour, Rollup, RollupRedo, StateChange
from app.monitoring.partitions import keep_partitions
from app.monitoring.state import STALE_INTERVALS
from app.monitoring.writer import (
    HOUR,
    STALE,
    Transition,
    hour_floor,
    lock_monitors,
    record_transitions,
)
from app.vocabulary import AgentState, Outcome, State

log = logging.getLogger(__name__)

STALE_DIAGNOSIS = STALE
_ONLINE_AGENTS = (
    select(Agent.id).where(Agent.state == AgentState.ONLINE).scalar_subquery()
)  # on the state change: no result for STALE_INTERVALS intervals


# --- stale -> unknown ----------------------------------------------------------------


def _is_stale(
    last_checked_at: datetime | None, state_since: datetime | None, interval_s: int, now: datetime
) -> bool:
    reference = last_checked_at or state_since
    return reference is None or now - reference > timedelta(seconds=STALE_INTERVALS * interval_s)


def _silent_since(
    last_checked_at: datetime | None, state_since: datetime | None, interval_s: int, now: datetime
) -> datetime:
    """When the next result was due and did not come (never before the current state began)."""
    if last_checked_at is None:
        return max(state_since or now, now - timedelta(seconds=STALE_INTERVALS * interval_s))
    since = last_checked_at + timedelta(seconds=interval_s)
    return min(max(since, state_since or since), now)


async def mark_stale(session: AsyncSession, now: datetime | None = None) -> int:
    """Monitors up or down whose last result is older than 3 intervals become unknown."""
    now = now or utcnow()
    shortest = await session.scalar(select(func.min(Monitor.interval_s)).where(Monitor.enabled.is_(True)))
    if shortest is None:
        return 0
    cutoff = now - timedelta(seconds=STALE_INTERVALS * shortest)
    rows = await session.execute(
        select(Monitor.id, Monitor.last_checked_at, Monitor.state_since, Monitor.interval_s).where(
            Monitor.enabled.is_(True),
            Monitor.state.in_((State.UP, State.DOWN)),
            or_(Monitor.last_checked_at.is_(None), Monitor.last_checked_at < cutoff),
            # A silent store agent's monitors are the agent health job's (agent_offline).
            or_(Monitor.agent_id.is_(None), Monitor.agent_id.in_(_ONLINE_AGENTS)),
        )
    )
    candidates = [r.id for r in rows if _is_stale(r.last_checked_at, r.state_since, r.interval_s, now)]
    if not candidates:
        return 0
    # Lock and look again: a result may have landed in between.
    locked = await lock_monitors(session, candidates)
    transitions, updates = [], []
    for mid, m in locked.items():
        if m.state not in (State.UP, State.DOWN) or not _is_stale(
            m.last_checked_at, m.state_since, m.interval_s, now
        ):
            continue
        # Back-dated: unknown from when the next result was due, not from when we noticed,
        # so history shows the silence for its real length.
        since = _silent_since(m.last_checked_at, m.state_since, m.interval_s, now)
        transitions.append(
            Transition(mid, m.store_id, m.terminal_id, m.kind, since, m.state, State.UNKNOWN, STALE_DIAGNOSIS)
        )
        updates.append({"b_id": mid, "since": since})
    if updates:
        table = table_of(Monitor)
        await session.execute(
            update(table)
            .where(table.c.id == bindparam("b_id"))
            .values(state=State.UNKNOWN, state_since=bindparam("since"))
            .execution_options(synchronize_session=False),
            updates,
        )
        await record_transitions(session, transitions, now)
        log.info("%d monitors have no result for %d intervals: state unknown", len(updates), STALE_INTERVALS)
    return len(updates)


# --- retention -------------------------------------------------------------------------


async def purge_results(database: Database, older_than: datetime, batch: int = 10000) -> int:
    """Remove raw check results older than the retention: on PostgreSQL whole day partitions
    (and the next days' partitions are made ahead, app.monitoring.partitions), on SQLite a
    batch per transaction. Also clears the folded days' recent successes nobody reads now, and
    their kept results as old as the raw results removed. Returns the number of rows removed."""
    now = utcnow()
    async with database.sessionmaker() as session:
        await forget_recent(session, now.date())
        await forget_kept(session, older_than)
        await session.commit()
    if database.dialect == "postgresql":
        async with database.engine.begin() as conn:
            return await keep_partitions(conn, now, older_than)
    total = 0
    table = table_of(CheckResult)
    while True:
        victims = select(table.c.id).where(table.c.checked_at < older_than).limit(batch).scalar_subquery()
        async with database.engine.begin() as conn:
            deleted = (await conn.execute(delete(table).where(table.c.id.in_(victims)))).rowcount or 0
        total += deleted
        if deleted < batch:
            return total


# --- rollups ---------------------------------------------------------------------------


def seconds_by_state(
    initial: str, changes: list[tuple[datetime, str]], start: datetime, end: datetime
) -> dict[str, float]:
    """Seconds spent in each state within [start, end), from the state at `start` and the
    changes (at, to_state) in order."""
    spent: dict[str, float] = defaultdict(float)
    state, t = initial, start
    for at, to_state in changes:
        if at >= end:
            break
        at = max(at, start)
        spent[state] += (at - t).total_seconds()
        state, t = to_state, at
    spent[state] += (end - t).total_seconds()
    return spent


async def _results(session: AsyncSession, start: datetime, end: datetime) -> dict[int, _Stats]:
    """Every monitor's scheduled results checked in [start, end): raw rows, folded plain
    successes and kept results together (a manual check is no sample of the schedule)."""
    cr = table_of(CheckResult)
    stats = {
        r.monitor_id: _Stats(r.n, int(r.ok_count or 0), r.lat_sum, r.lat_min, r.lat_max)
        for r in await session.execute(
            select(
                cr.c.monitor_id,
                func.count().label("n"),
                func.sum(case((cr.c.outcome == Outcome.OK, 1), else_=0)).label("ok_count"),
                func.sum(cr.c.latency_ms).label("lat_sum"),
                func.min(cr.c.latency_ms).label("lat_min"),
                func.max(cr.c.latency_ms).label("lat_max"),
            )
            .where(cr.c.checked_at >= start, cr.c.checked_at < end, cr.c.manual.is_(False))
            .group_by(cr.c.monitor_id)
        )
    }
    # The hour's folded days, read once for their plain successes and their kept results.
    days = await plain_days(session, None, start.astimezone(UTC).date(), end.astimezone(UTC).date())
    for b in await plain_buckets(session, None, start, end, days):
        stats[b.monitor_id] = _with_plain(stats.get(b.monitor_id), b)
    for k in await kept_results(session, None, start, end, days):
        stats[k.monitor_id] = _with_kept(stats.get(k.monitor_id), k)
    return stats


async def rollup_hour(session: AsyncSession, start: datetime) -> int:
    """Compute the hour rollups for [start, start + 1 h); idempotent. A monitor gets an hour
    row only if it was down or unknown in it (what app.history.uptime reads; a missing row is
    an hour up, and rollup_day counts the results of the whole day). The hour is marked
    rolled up."""
    end = start + HOUR
    stats = await _results(session, start, end)
    # Every change from the hour's start on: the first one after it also tells the state
    # at the start (its from_state); a monitor without any is in its current state.
    changes: dict[int, list] = defaultdict(list)
    sc = table_of(StateChange)
    for mid, at, from_state, to_state in await session.execute(
        select(sc.c.monitor_id, sc.c.at, sc.c.from_state, sc.c.to_state)
        .where(sc.c.at >= start)
        .order_by(sc.c.monitor_id, sc.c.at, sc.c.id)
    ):
        changes[mid].append((at, from_state, to_state))
    rows = []
    for mid, state, state_since in await session.execute(
        select(Monitor.id, Monitor.state, Monitor.state_since).order_by(Monitor.id)
    ):
        mine = changes.get(mid)
        if mine:
            initial = mine[0][1]
            begin = start
        else:
            initial = state
            # A monitor created during the hour is counted from its creation only.
            begin = max(start, state_since) if state_since and state_since < end else start
        if begin >= end:
            continue
        spent = seconds_by_state(initial, [(at, to) for at, _f, to in mine or ()], begin, end)
        down, unknown = round(spent.get(State.DOWN, 0.0), 3), round(spent.get(State.UNKNOWN, 0.0), 3)
        if down or unknown:
            s = stats.get(mid) or _Stats(0, 0, None, None, None)
            rows.append(s.row(mid, "hour", start) | {"seconds_down": down, "seconds_unknown": unknown})
    r = table_of(Rollup)
    await session.execute(delete(r).where(r.c.period == "hour", r.c.bucket_start == start))
    await _upsert_rollups(session, rows)
    insert = pg_insert if dialect_of(session) == "postgresql" else sqlite_insert
    await session.execute(insert(table_of(RolledUpHour)).values(bucket_start=start).on_conflict_do_nothing())
    return len(rows)


@dataclass
class _Stats:
    """A monitor's results over a bucket: raw rows and folded results together."""

    count: int
    ok_count: int
    lat_sum: float | None
    lat_min: float | None
    lat_max: float | None

    def add(self, other: _Stats) -> None:
        self.count += other.count
        self.ok_count += other.ok_count
        if other.lat_sum is not None:
            self.lat_sum = (self.lat_sum or 0.0) + other.lat_sum
        if other.lat_min is not None:
            self.lat_min = other.lat_min if self.lat_min is None else min(self.lat_min, other.lat_min)
        if other.lat_max is not None:
            self.lat_max = other.lat_max if self.lat_max is None else max(self.lat_max, other.lat_max)

    def row(self, monitor_id: int, period: str, bucket_start: datetime) -> dict[str, Any]:
        return {
            "monitor_id": monitor_id,
            "period": period,
            "bucket_start": bucket_start,
            "count": self.count,
            "ok_count": self.ok_count,
            "latency_sum_ms": float(self.lat_sum or 0.0),
            "latency_min_ms": self.lat_min,
            "latency_max_ms": self.lat_max,
        }


def _with_plain(s: _Stats | None, b: PlainBucket) -> _Stats:
    """A monitor's figures plus a bucket of its plain successes (latency min and max: of the
    buckets' 5-minute means)."""
    s = s or _Stats(0, 0, None, None, None)
    mean = b.mean_ms if b.timed else None
    s.add(_Stats(b.count, b.count, b.latency_sum_ms if b.timed else None, mean, mean))
    return s


def _with_kept(s: _Stats | None, k: FoldedResult) -> _Stats:
    s = s or _Stats(0, 0, None, None, None)
    s.add(_Stats(1, int(k.outcome == Outcome.OK), k.latency_ms, k.latency_ms, k.latency_ms))
    return s


async def rollup_day(session: AsyncSession, day_start: datetime) -> int:
    """The day rollups (UTC day): the day's results (raw rows and folded), and the time down
    and unknown of its hour rollups (an hour without a row was up)."""
    r = table_of(Rollup)
    day_end = day_start + timedelta(days=1)
    stats = await _results(session, day_start, day_end)
    faults: dict[int, list[float]] = defaultdict(lambda: [0.0, 0.0])
    hours = await session.execute(
        select(r.c.monitor_id, r.c.seconds_down, r.c.seconds_unknown).where(
            r.c.period == "hour", r.c.bucket_start >= day_start, r.c.bucket_start < day_end
        )
    )
    for mid, down, unknown in hours:
        stats.setdefault(mid, _Stats(0, 0, None, None, None))
        faults[mid][0] += down or 0.0
        faults[mid][1] += unknown or 0.0
    rows = [
        s.row(mid, "day", day_start) | {"seconds_down": faults[mid][0], "seconds_unknown": faults[mid][1]}
        for mid, s in sorted(stats.items())
    ]
    await _upsert_rollups(session, rows)
    return len(rows)


async def _upsert_rollups(session: AsyncSession, rows: list[dict]) -> None:
    if not rows:
        return
    # In monitor order: each row's foreign key locks its monitor (KEY SHARE) until the commit,
    # and the writer locks the monitors of a batch in id order; any other order can deadlock.
    rows = sorted(rows, key=lambda r: r["monitor_id"])
    insert = pg_insert if dialect_of(session) == "postgresql" else sqlite_insert
    stmt = insert(table_of(Rollup))
    stmt = stmt.on_conflict_do_update(
        index_elements=["monitor_id", "period", "bucket_start"],
        set_={
            c: stmt.excluded[c]
            for c in (
                "count",
                "ok_count",
                "latency_sum_ms",
                "latency_min_ms",
                "latency_max_ms",
                "seconds_down",
                "seconds_unknown",
            )
        },
    )
    for i in range(0, len(rows), 2000):
        await session.execute(stmt, rows[i : i + 2000])


async def rollup_pending(database: Database, now: datetime | None = None, max_hours: int = 48) -> int:
    """Roll up every complete hour not rolled up yet (at most `max_hours` back) and every hour
    marked for redo, then the days those hours belong to. Returns the number of hours done."""
    now = now or utcnow()
    current = hour_floor(now)
    async with database.sessionmaker() as session:
        last = await session.scalar(select(func.max(RolledUpHour.bucket_start)))
        if last is None:  # the first time only: min(checked_at) reads every partition (BRIN)
            first_raw = await session.scalar(select(func.min(CheckResult.checked_at)))
            first_folded = await first_day(session)
    if last is not None:
        start = last + HOUR
    elif first := min((t for t in (first_raw, first_folded) if t is not None), default=None):
        start = hour_floor(first)
    else:
        return 0
    start = max(start, current - max_hours * HOUR)
    async with database.sessionmaker() as session:
        redo = set(
            (
                await session.scalars(select(RollupRedo.bucket_start).where(RollupRedo.bucket_start < start))
            ).all()
        )
    hours = sorted(redo | {start + i * HOUR for i in range(int((current - start) / HOUR))})
    days = set()
    for hour in hours:
        async with database.sessionmaker() as session:
            await rollup_hour(session, hour)
            await session.execute(delete(RollupRedo).where(RollupRedo.bucket_start == hour))
            await session.commit()
        days.add(hour.replace(hour=0))
    for day in sorted(days):
        async with database.sessionmaker() as session:
            await rollup_day(session, day)
            await session.commit()
    return len(hours)
