"""Claiming due monitors with a lease, and running them on time under a concurrency limit.

Every second the worker's sweep claims the monitors due within a short horizon:

    UPDATE monitors SET lease_owner = :me, lease_expires_at = now() + :lease
     WHERE id IN (SELECT id FROM monitors
                   WHERE enabled AND next_due_at <= now() + :horizon
                     AND (lease_expires_at IS NULL OR lease_expires_at < now())
                     AND kind <> 'cloud' AND agent_id IS NULL
                   ORDER BY next_due_at LIMIT :n FOR NO KEY UPDATE SKIP LOCKED)
    RETURNING id, kind, target, params, timeout_s, next_due_at

(SQLite has no SKIP LOCKED and a single worker: the same statement without it.) Each
claimed monitor then waits for its own due time (the horizon only lets the sweep claim a
little ahead, so a check starts within milliseconds of its due time instead of up to a
second late), runs under the semaphore, and its outcome goes to the ResultWriter, which
writes it, moves the due time on and releases the lease, fenced by (lease owner, due
time). A worker that dies leaves leases that expire: another worker claims those
monitors for the same due time, so nothing is lost and nothing is stored twice.

Not swept here: cloud monitors (app.monitoring.cloud polls them a store at a time) and the
monitors of stores with a store agent (the agent runs them: app.agents).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Text, bindparam, cast, func, or_, select, update

from app.checks.context import ProbeContext
from app.checks.probes import run_probe
from app.checks.result import ProbeResult
from app.db import Database, UTCDateTime, driver_of, table_of, utcnow
from app.inventory.models import Monitor
from app.monitoring.metrics import START_LAG, count_check
from app.monitoring.writer import CheckOutcome, ResultWriter
from app.vocabulary import MonitorKind, Outcome

log = logging.getLogger(__name__)

# Diagnoses that mean "the target did not answer in time": if our event loop was too busy
# to even notice the deadline on time, the silence may be ours, not the terminal's.
_TIMEOUT_DIAGNOSES = {"tcp_timeout", "dns_timeout", "stalled", "tls_stalled"}


def _log_failure(task: asyncio.Task[int]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.warning("claim after a check finished failed (the next sweep claims): %s", exc)


CATCHUP_S = 60.0  # how long after an outage claims are paced


class _Pace:
    """How fast this worker claims in normal times (a moving average), and, for CATCHUP_S
    after an outage, a budget of claims per second (a token bucket) at a given rate."""

    def __init__(self) -> None:
        self.rate = 0.0  # claims/s in normal times
        self._count, self._since = 0, time.monotonic()
        self._until = 0.0
        self._limit = self._tokens = 0.0
        self._at = 0.0

    def claimed(self, n: int) -> None:
        now = time.monotonic()
        if now < self._until:
            self._tokens -= n
            return
        self._count += n
        if now - self._since >= 5.0:  # a sample per 5 s: the average follows the fleet's pace
            self.rate = 0.8 * self.rate + 0.2 * self._count / (now - self._since)
            self._count, self._since = 0, now

    def catch_up(self, per_s: float) -> None:
        now = time.monotonic()
        self._until, self._limit, self._tokens, self._at = now + CATCHUP_S, per_s, per_s, now
        log.info("the database is back: catching up at %.0f checks/s for %.0f s", per_s, CATCHUP_S)

    def allowance(self) -> int:
        """Claims allowed now (any number outside a catch-up)."""
        now = time.monotonic()
        if now >= self._until:
            return 1 << 30
        self._tokens = min(self._limit, self._tokens + (now - self._at) * self._limit)
        self._at = now
        return int(self._tokens)


@dataclass(slots=True)
class Claimed:
    id: int
    kind: str
    target: str
    params: dict
    timeout_s: float
    due_at: datetime


_mt = table_of(Monitor)
_PARAMS_TEXT = cast(_mt.c.params, Text)


def _params(raw: str | None) -> dict:
    return (json.loads(raw) or {}) if raw and raw != "{}" else {}


async def claim_due(
    database: Database, owner: str, limit: int, lease_s: float, horizon_s: float
) -> list[Claimed]:
    """Lease up to `limit` monitors due within `horizon_s`, earliest first."""
    if limit <= 0:
        return []
    if database.dialect == "postgresql":
        # The database's clock, so workers on several hosts agree on due times and leases.
        # Through asyncpg (app.db.Driver): one statement, no transaction of its own needed.
        async with database.engine.connect() as conn:
            driver = await driver_of(conn, begin=False)
            rows = await driver.fetch(
                _PG_CLAIM,
                owner,
                timedelta(seconds=lease_s),
                timedelta(seconds=horizon_s),
                str(MonitorKind.CLOUD),
                limit,
            )
    else:
        rows = await _claim_sqlite(database, owner, limit, lease_s, horizon_s)
    claimed = [Claimed(r[0], r[1], r[2], _params(r[3]), r[4], r[5]) for r in rows]
    claimed.sort(key=lambda c: c.due_at)
    return claimed


# The statement the SQLAlchemy one below makes, with SKIP LOCKED, but for `id = ANY(ARRAY(...))`
# where it has `id IN (...)`: the same rows, locked by the same subquery run once, then updated
# through the primary key. For `IN` PostgreSQL chose a hash join over a scan of the whole table
# at every claim (EXPLAIN ANALYZE, 20,000 monitors, 2,000 leased, a claim of 500: 18 -> 12 ms).
_PG_CLAIM = """
UPDATE monitors SET lease_owner = $1::varchar, lease_expires_at = now() + $2::interval
WHERE monitors.id = ANY(ARRAY(
    SELECT monitors.id FROM monitors
    WHERE monitors.enabled IS true AND monitors.next_due_at <= now() + $3::interval
      AND (monitors.lease_expires_at IS NULL OR monitors.lease_expires_at < now())
      AND monitors.kind != $4::varchar AND monitors.agent_id IS NULL
    ORDER BY monitors.next_due_at LIMIT $5::integer FOR NO KEY UPDATE SKIP LOCKED
))
RETURNING monitors.id, monitors.kind, monitors.target, CAST(monitors.params AS TEXT), monitors.timeout_s,
    monitors.next_due_at
"""


async def _claim_sqlite(
    database: Database, owner: str, limit: int, lease_s: float, horizon_s: float
) -> list[Any]:
    current = utcnow()
    now = bindparam("now", current, type_=UTCDateTime())
    horizon = bindparam("horizon", current + timedelta(seconds=horizon_s), type_=UTCDateTime())
    lease_until = bindparam("lease_until", current + timedelta(seconds=lease_s), type_=UTCDateTime())
    due = (
        select(_mt.c.id)
        .where(
            _mt.c.enabled.is_(True),
            _mt.c.next_due_at <= horizon,
            or_(_mt.c.lease_expires_at.is_(None), _mt.c.lease_expires_at < now),
            _mt.c.kind != MonitorKind.CLOUD,
            _mt.c.agent_id.is_(None),  # a store agent runs those
        )
        .order_by(_mt.c.next_due_at)
        .limit(limit)
        .with_for_update(skip_locked=True, key_share=True)  # SQLite: none (one worker)
    )
    stmt = (
        update(_mt)
        .where(_mt.c.id.in_(due.scalar_subquery()))
        .values(lease_owner=owner, lease_expires_at=lease_until)
        # params as text: most are empty, and decoding '{}' per claimed row is a cost per check
        .returning(_mt.c.id, _mt.c.kind, _mt.c.target, _PARAMS_TEXT, _mt.c.timeout_s, _mt.c.next_due_at)
    )
    async with database.engine.begin() as conn:
        return list((await conn.execute(stmt)).all())


async def release_leases(database: Database, owner: str) -> int:
    """Give back every lease this worker holds (on a clean stop), so others run them now."""
    mine = select(_mt.c.id).where(_mt.c.lease_owner == owner)
    if database.dialect == "postgresql":  # locked in id order, as the writer does: no deadlock
        mine = mine.order_by(_mt.c.id).with_for_update(key_share=True)
    async with database.engine.begin() as conn:
        result = await conn.execute(
            update(_mt)
            .where(_mt.c.id.in_(mine.scalar_subquery()))
            .values(lease_owner=None, lease_expires_at=None)
        )
    return result.rowcount or 0


async def renew_leases(database: Database, owner: str, ids: list[int], lease_s: float) -> int:
    """Extend this worker's leases on these monitors (the ones it has claimed and not yet
    finished): a live worker keeps them however long a check takes, so leases can be short
    and a dead worker's monitors run again soon after it died."""
    if not ids:
        return 0
    if database.dialect == "postgresql":
        until: ColumnElement[datetime] = func.now() + timedelta(seconds=lease_s)
    else:
        until = bindparam("until", utcnow() + timedelta(seconds=lease_s), type_=UTCDateTime())
    renewed = 0
    async with database.engine.begin() as conn:
        for start in range(0, len(ids), 5000):
            chunk = ids[start : start + 5000]
            mine: tuple[ColumnElement[bool], ...] = (_mt.c.id.in_(chunk), _mt.c.lease_owner == owner)
            if database.dialect == "postgresql":
                # Rows a result batch holds are skipped, not waited for: that batch releases
                # their leases as it commits (and a retried one finds them renewed 1/3 of a
                # lease later). Waiting, in another lock order than the writer's id order,
                # deadlocked with the batches in flight.
                held = (
                    select(_mt.c.id)
                    .where(*mine)
                    .order_by(_mt.c.id)
                    .with_for_update(skip_locked=True, key_share=True)
                )
                mine = (_mt.c.id.in_(held.scalar_subquery()),)
            result = await conn.execute(update(_mt).where(*mine).values(lease_expires_at=until))
            renewed += result.rowcount or 0
    return renewed


@dataclass
class DispatchStats:
    claimed: int = 0
    started: int = 0
    finished: int = 0
    sweeps: int = 0
    claims: int = 0
    claim_s: float = 0.0  # time spent in claim transactions
    overloaded: int = 0
    lag_s: list[float] | None = None  # start minus due, per check (kept only when asked)


class Dispatcher:
    """Claims due monitors and runs each at its due time under a concurrency limit.

    A claim takes what this worker can start now: no more than its free concurrency (the
    limit minus the checks started and not finished), so a backlog spreads over all the
    workers instead of queueing behind one worker's semaphore, and checks hanging until
    their timeout keep only their own slots. While there is a backlog, a check finishing
    frees room and the next claim follows at once, not at the next sweep.
    """

    def __init__(
        self,
        database: Database,
        owner: str,
        writer: ResultWriter,
        probe_context: ProbeContext,
        *,
        concurrency: int = 500,
        claim_batch: int = 500,
        lease_s: float = 30,
        horizon_s: float = 1.5,
        max_claimed: int | None = None,
        keep_lag: bool = False,
        catchup_min_per_s: float = 100.0,
    ):
        self.database = database
        self.owner = owner
        self.writer = writer
        self.probe_context = probe_context
        self.claim_batch = claim_batch
        self.lease_s = lease_s
        self.horizon_s = horizon_s
        # Claimed but not yet handed to the writer: bounded, so a slow worker does not sit
        # on leases it cannot run in time (it leaves them to the other workers).
        self.max_claimed = max_claimed or max(concurrency * 8, claim_batch * 2)
        self.concurrency = concurrency
        self.semaphore = asyncio.Semaphore(concurrency)
        self._running = 0  # started (due) and not finished
        self.recent_lag_s: deque[float] = deque(maxlen=2000)  # start minus due of the latest checks
        self._backlog = False  # the last claim found more due than it could take
        self._sweeping = False
        self._renewed_at = time.monotonic()
        self._refill: asyncio.Task[int] | None = None
        # After an outage, claims catch up at twice the pace of normal times (not all at once:
        # every terminal and the database would get the whole backlog in a burst).
        self.catchup_min_per_s = catchup_min_per_s
        self._held_back = False  # claims were held back by an outage: catch up when it ends
        self._pace = _Pace()
        self.stats = DispatchStats(lag_s=[] if keep_lag else None)
        self._inflight = 0
        self._held: set[int] = set()  # claimed and not yet finished: their leases are renewed
        self._handles: dict[int, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task] = set()
        self._stopping = False

    @property
    def inflight(self) -> int:
        return self._inflight

    @property
    def running(self) -> int:
        """Checks started and not finished (hung ones included)."""
        return self._running

    async def sweep(self) -> int:
        """One sweep: claim batches until nothing more is due or the claim budget is used."""
        if self._stopping or self._sweeping:
            return 0
        self._sweeping = True
        try:
            return await self._claim_all()
        finally:
            self._sweeping = False

    async def _claim_all(self) -> int:
        self.stats.sweeps += 1
        total = 0
        loop = asyncio.get_running_loop()
        self._backlog = False
        if self.writer.outage_since is not None or self.writer.backlog > 2 * self.writer.max_batch:
            # Results wait to be written (the database was down or is slow): claiming more
            # would only pile them up, and their leases must be renewed first.
            self._held_back = self._held_back or self.writer.outage_since is not None
            return 0
        if self._held_back:
            self._held_back = False
            self._pace.catch_up(max(2 * self._pace.rate, self.catchup_min_per_s))
        if time.monotonic() - self._renewed_at > self.lease_s / 3:
            await self.renew()  # overdue (the database was down): before claiming anything new
        while not self._stopping:
            room = min(self.claim_batch, self.max_claimed - self._inflight, self.concurrency - self._running)
            room = min(room, self._pace.allowance())
            if room <= 0:
                self._backlog = True  # more may be due: claimed when room frees up
                break
            t0 = time.perf_counter()
            claimed = await claim_due(self.database, self.owner, room, self.lease_s, self.horizon_s)
            self.stats.claims += 1
            self.stats.claim_s += time.perf_counter() - t0
            if self._stopping:  # stopped while claiming: give them back at once
                await release_leases(self.database, self.owner)
                break
            total += len(claimed)
            self._pace.claimed(len(claimed))
            self.stats.claimed += len(claimed)
            self._held.update(c.id for c in claimed)
            self._inflight += len(claimed)
            wall, mono = time.time(), loop.time()
            for c in claimed:
                delay = c.due_at.timestamp() - wall
                if delay <= 0:
                    self._start(c)
                else:
                    self._handles[c.id] = loop.call_at(mono + delay, self._start, c)
            if len(claimed) < room:
                break
        return total

    def _finished(self) -> None:
        """A check is done: with a backlog, claim again as soon as half of the slots are
        free (not at the next sweep, which would leave them idle meanwhile)."""
        self._running -= 1
        if (
            self._backlog
            and not self._sweeping
            and not self._stopping
            and (self._refill is None or self._refill.done())
            and self.concurrency - self._running >= max(1, self.concurrency // 2)
            and self._inflight < self.max_claimed
        ):
            self._refill = asyncio.get_running_loop().create_task(self.sweep())
            self._refill.add_done_callback(_log_failure)

    def _start(self, c: Claimed) -> None:
        self._handles.pop(c.id, None)
        self._running += 1
        task = asyncio.get_running_loop().create_task(self._run(c))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, c: Claimed) -> None:
        try:
            # The loop's timers may fire a hair early: never start before the due time.
            early = (c.due_at - utcnow()).total_seconds()
            if early > 0:
                await asyncio.sleep(early)
            async with self.semaphore:
                started = utcnow()
                t0 = time.perf_counter()
                self.stats.started += 1
                lag = (started - c.due_at).total_seconds()
                self.recent_lag_s.append(lag)
                if self.stats.lag_s is not None:
                    self.stats.lag_s.append(lag)
                START_LAG.observe(max(lag, 0.0))
                outcome = await self._probe(c, started, t0)
            count_check(c.kind, outcome.outcome, outcome.diagnosis)
            self.writer.submit(outcome)
        finally:
            self._held.discard(c.id)
            self._inflight -= 1
            self.stats.finished += 1
            self._finished()

    async def _probe(self, c: Claimed, started: datetime, t0: float) -> CheckOutcome:
        try:
            result = await run_probe(c.kind, c.target, c.params, c.timeout_s, self.probe_context)
        except Exception as exc:  # the probe contract says it never raises; be safe anyway
            log.exception("check of monitor %s (%s %s) failed", c.id, c.kind, c.target)
            text = f"{type(exc).__name__}: {exc}"
            result = ProbeResult.failed("internal_error", text, [])
        wall = time.perf_counter() - t0
        if (
            result.outcome == Outcome.FAIL
            and result.diagnosis in _TIMEOUT_DIAGNOSES
            and wall > c.timeout_s * 1.5 + 0.5
        ):
            # The deadline fired far too late: our loop was overloaded, the silence may be ours.
            self.stats.overloaded += 1
            detail = (
                f"checker overloaded: a {c.timeout_s:g} s check took {wall:.1f} s, so the timeout "
                f"({result.diagnosis}) may be ours; state unknown"
            )
            result = ProbeResult.failed("checker_overloaded", detail, result.steps, result.latency_ms)
        return CheckOutcome.of(c.id, result, started, due_at=c.due_at)

    async def renew(self) -> int:
        """Renew the leases of the monitors claimed and not yet written."""
        if self._stopping:
            return 0
        held = self._held | self.writer.waiting_monitor_ids()
        renewed = await renew_leases(self.database, self.owner, sorted(held), self.lease_s)
        self._renewed_at = time.monotonic()
        return renewed

    async def stop(self, grace_s: float = 10.0) -> None:
        """Stop claiming, drop checks not started yet, let running ones finish (bounded)."""
        self._stopping = True
        if self._refill is not None and not self._refill.done():
            await asyncio.wait([self._refill], timeout=grace_s)  # a claim in flight: let it end
        not_started = len(self._handles)
        for handle in self._handles.values():
            handle.cancel()
        self._handles.clear()
        self._inflight -= not_started
        tasks = list(self._tasks)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace_s)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=2)
        log.debug("dispatcher stopped (%d checks not started)", not_started)
