"""Store agents as the monitoring engine sees them: their results into the one writer, their
heartbeats, their health (agent_offline, store_offline), and on-demand checks handed to them.

The protocol itself (HTTP, tokens, limits) is app.agents; this module is what it calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import secrets
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import Row, Text, bindparam, case, cast, func, literal, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.checks.result import Step
from app.db import Database, in_transaction, is_unreachable, select_where_in, table_of, utcnow
from app.errors import Forbidden, Unauthenticated
from app.inventory.models import Agent, Monitor, Store
from app.monitoring.writer import (
    AGENT_OFFLINE,
    CheckOutcome,
    Transition,
    apply_outcomes,
    record_transitions,
    redo_rollups_since,
)
from app.relay import Relay
from app.vocabulary import MANUAL_STATES, AgentState, MonitorKind, Outcome, State

log = logging.getLogger(__name__)

SILENT_HEARTBEATS = 3  # an agent not heard for this many heartbeat intervals is offline
STORE_OFFLINE = "store_offline"
TOKEN_NEEDED = "a valid store agent token is needed (Authorization: Bearer tpa_...)"


class AgentResult(BaseModel):
    """One result as an agent posts it (its own clock)."""

    seq: int = Field(ge=1)
    monitor_id: int
    due_at: datetime | None = None
    checked_at: datetime
    outcome: Outcome
    latency_ms: float | None = None
    steps: list[Step] = Field(default_factory=list, max_length=50)
    diagnosis: str | None = Field(default=None, max_length=64)
    detail: str | None = Field(default=None, max_length=2000)


class AgentAnswer(BaseModel):
    """One result of an on-demand check, as the agent answers it (its own clock)."""

    monitor_id: int
    checked_at: datetime
    outcome: Outcome
    latency_ms: float | None = None
    steps: list[Step] = Field(default_factory=list, max_length=50)
    diagnosis: str | None = Field(default=None, max_length=64)
    detail: str | None = Field(default=None, max_length=2000)
    context: dict[str, str] = Field(default_factory=dict, max_length=30)  # fills the diagnosis texts


class Heartbeat(BaseModel):
    version: str = Field(max_length=32)
    instance: str = Field(min_length=8, max_length=64)
    clock: datetime
    queue: int = Field(ge=0)
    dropped: int = Field(ge=0)


@dataclass
class IngestReport:
    accepted: int
    duplicates: int
    last_seq: int


# --- configuration --------------------------------------------------------------------


async def agent_config(session: AsyncSession, agent: Agent | AgentRow) -> tuple[dict[str, Any], str]:
    """What the agent runs, and an ETag that changes whenever that does."""
    stores, monitors = await _config_rows(session, [agent.id])
    config = {
        "agent": {"id": agent.id, "name": agent.name},
        "stores": stores[agent.id],
        "heartbeat_s": agent.heartbeat_s,
        "monitors": [
            {
                "id": m.id,
                "kind": m.kind,
                "target": m.target,
                "params": (json.loads(m.params) if m.params is not None else None) or {},
                "interval_s": m.interval_s,
                "timeout_s": m.timeout_s,
                "phase_ms": m.phase_ms,
            }
            for m in monitors[agent.id]
        ],
    }
    return config, _etag(agent, stores[agent.id], monitors[agent.id])


async def agent_etags(session: AsyncSession, agents: Sequence[Agent | AgentRow]) -> dict[int, str]:
    """`agent_config`'s ETag of several agents (what each heartbeat answers), in two queries
    whatever their number."""
    stores, monitors = await _config_rows(session, [a.id for a in agents])
    return {a.id: _etag(a, stores[a.id], monitors[a.id]) for a in agents}


_st, _mt = table_of(Store), table_of(Monitor)
_CONFIG_STORES = select(_st.c.agent_id, _st.c.code).order_by(_st.c.code)
# The params as the database's text: the ETag is made without decoding them (core rows, not
# the ORM's: a heartbeat asks for the ETag every 15 s per agent, the body is asked for rarely).
_CONFIG_MONITORS = (
    select(
        _mt.c.agent_id,
        _mt.c.id,
        _mt.c.kind,
        _mt.c.target,
        cast(_mt.c.params, Text).label("params"),
        _mt.c.interval_s,
        _mt.c.timeout_s,
        _mt.c.phase_ms,
    )
    .where(_mt.c.enabled.is_(True))
    .order_by(_mt.c.id)
)


async def _config_rows(
    session: AsyncSession, ids: list[int]
) -> tuple[dict[int, list[str]], dict[int, list[Row[Any]]]]:
    """Per agent, its stores' codes and its enabled monitors' rows."""
    stores: dict[int, list[str]] = {i: [] for i in ids}
    for agent_id, code in await select_where_in(session, _CONFIG_STORES, _st.c.agent_id, ids):
        if agent_id is not None:
            stores[agent_id].append(code)
    monitors: dict[int, list[Row[Any]]] = {i: [] for i in ids}
    for m in await select_where_in(session, _CONFIG_MONITORS, _mt.c.agent_id, ids):
        monitors[m.agent_id].append(m)
    return stores, monitors


def _etag(agent: Agent | AgentRow, stores: list[str], monitors: list[Row[Any]]) -> str:
    """Over everything the configuration is made of, as stored."""
    made_of = repr((agent.id, agent.name, agent.heartbeat_s, stores, [tuple(m) for m in monitors]))
    return '"' + hashlib.sha256(made_of.encode()).hexdigest()[:32] + '"'


# --- heartbeats and results -----------------------------------------------------------


async def heartbeat(
    session: AsyncSession, agent: Agent | AgentRow, beat: Heartbeat, now: datetime, etag: str | None = None
) -> dict[str, Any]:
    """Record what the agent says of itself; the caller commits. `etag`: the agent's config
    ETag, when the caller has it already (the writer reads a whole batch's at once)."""
    if beat.instance != agent.instance:  # a new local database: its sequence starts afresh
        agent.instance, agent.last_seq = beat.instance, 0
    agent.clock_skew_ms = (beat.clock - now).total_seconds() * 1000
    agent.version, agent.queue_length, agent.dropped = beat.version, beat.queue, beat.dropped
    await _heard(session, agent, now)
    if etag is None:
        _, etag = await agent_config(session, agent)
    return {
        "server_time": now.isoformat(),
        "skew_ms": round(agent.clock_skew_ms, 1),
        "last_seq": agent.last_seq,
        "config_etag": etag,
    }


async def _heard(session: AsyncSession, agent: Agent | AgentRow, now: datetime) -> None:
    agent.last_heard_at = now
    if agent.state != AgentState.ONLINE:
        agent.state, agent.state_since = AgentState.ONLINE, now
        await session.execute(
            update(Store)
            .where(Store.agent_id == agent.id, Store.status_reason == STORE_OFFLINE)
            .values(status_reason=None)
        )


def to_server_clock(agent: Agent | AgentRow, at: datetime) -> datetime:
    return at - timedelta(milliseconds=agent.clock_skew_ms or 0.0)


async def ingest_results(
    database: Database, agent_id: int, instance: str, results: list[AgentResult]
) -> IngestReport:
    """An agent's results into the one writer, exactly once: in one transaction with the
    agent's row locked, only seqs above the highest written are applied, and that mark moves.
    A result for a monitor that is not the agent's is refused (403) and nothing is written.

    The protocol goes through an `AgentWriter`, which does the same for many agents' calls
    in one transaction; this is one call on its own."""
    call = AgentCall(agent_id, None, instance, results=results)
    answer = (await in_transaction(database, lambda session: apply_agent_calls(session, [call])))[0]
    if isinstance(answer, Exception):
        raise answer
    assert isinstance(answer, IngestReport)
    return answer


@dataclass(eq=False)
class AgentCall:
    """One agent's results or heartbeat, as the writer applies it.

    token_hash: the token the call came with, checked again against the agent's row once
    it is locked (revoked or rotated meanwhile: 401, nothing written); None: not checked."""

    agent_id: int
    token_hash: str | None
    instance: str
    results: list[AgentResult] | None = None
    beat: Heartbeat | None = None
    received: datetime | None = None  # when the heartbeat arrived: its clock skew is measured to it
    done: asyncio.Future[Any] | None = field(default=None, repr=False)


async def apply_agent_calls(session: AsyncSession, calls: Sequence[AgentCall]) -> list[object]:
    """Apply these calls (at most one per agent) in the caller's transaction: per call its
    answer (an IngestReport, a heartbeat's dict) or the exception its caller gets. A refused
    call (agent gone, token no longer its, a monitor not its own) writes nothing and the
    others go on; results of all the calls go through one `apply_outcomes`."""
    assert len({c.agent_id for c in calls}) == len(calls), "one call per agent in a batch"
    locking = select(*_AGENT_COLUMNS).order_by(Agent.id).with_for_update()
    ids = sorted(c.agent_id for c in calls)
    agents = {r.id: AgentRow(**r._mapping) for r in await select_where_in(session, locking, Agent.id, ids)}
    answers: list[object] = [None] * len(calls)
    live = []
    for i, c in enumerate(calls):
        agent = agents.get(c.agent_id)
        if agent is None:
            gone = "this agent no longer exists"
            answers[i] = Forbidden(gone) if c.results is not None else Unauthenticated(gone)
        elif c.token_hash is not None and (agent.token_hash != c.token_hash or agent.revoked_at is not None):
            answers[i] = Unauthenticated(TOKEN_NEEDED)
        else:
            live.append(i)

    # Results: every monitor must be the agent's, else nothing of that call is written.
    wanted = sorted({r.monitor_id for i in live for r in calls[i].results or ()})
    owners: dict[int, int | None] = {}
    if wanted:
        owned = select(Monitor.id, Monitor.agent_id)
        owners = {mid: aid for mid, aid in await select_where_in(session, owned, Monitor.id, wanted)}
    now = utcnow()
    outcomes: list[CheckOutcome] = []
    fresh_of: dict[int, list[AgentResult]] = {}
    for i in live:
        c, agent = calls[i], agents[calls[i].agent_id]
        if c.results is None:
            continue
        ids = sorted({r.monitor_id for r in c.results})
        foreign = [m for m in ids if owners.get(m) != c.agent_id]
        if foreign:
            answers[i] = Forbidden(f"monitors {foreign[:10]} are not run by this agent; nothing was written")
            continue
        if c.instance != agent.instance:
            agent.instance, agent.last_seq = c.instance, 0
        fresh = sorted((r for r in c.results if r.seq > agent.last_seq), key=lambda r: r.seq)
        fresh_of[i] = fresh
        outcomes += [
            CheckOutcome(
                r.monitor_id,
                r.outcome,
                to_server_clock(agent, r.checked_at),
                r.latency_ms,
                r.steps,
                r.diagnosis,
                r.detail,
                due_at=to_server_clock(agent, r.due_at) if r.due_at else None,
            )
            for r in fresh
        ]
    # The agents' monitors are disjoint: one apply_outcomes is each call's apply_outcomes.
    await apply_outcomes(session, outcomes, now=now)
    if outcomes:  # a replayed buffer reaches back into hours already rolled up
        await redo_rollups_since(session, min(o.checked_at for o in outcomes), now)
    for i, fresh in fresh_of.items():
        c, agent = calls[i], agents[calls[i].agent_id]
        if fresh:
            agent.last_seq = fresh[-1].seq
        await _heard(session, agent, now)
        answers[i] = IngestReport(len(fresh), len(c.results or ()) - len(fresh), agent.last_seq)

    beats = [i for i in live if calls[i].beat is not None]
    if beats:
        etags = await agent_etags(session, [agents[calls[i].agent_id] for i in beats])
        for i in beats:
            c, agent = calls[i], agents[calls[i].agent_id]
            assert c.beat is not None
            answers[i] = await heartbeat(session, agent, c.beat, c.received or now, etags[agent.id])
    written = [agents[calls[i].agent_id] for i in live if not isinstance(answers[i], Exception)]
    if written:
        await session.execute(_UPDATE_AGENT, [a.values() for a in written])
    return answers


@dataclass(slots=True)
class AgentRow:
    """An agent's row as the writer reads it (locked) and writes it back, in one statement
    for a whole batch: the ORM's object per agent and its flush cost more than the rest."""

    id: int
    name: str
    token_hash: str
    revoked_at: datetime | None
    heartbeat_s: int
    state: str
    state_since: datetime | None
    last_heard_at: datetime | None
    version: str | None
    clock_skew_ms: float | None
    queue_length: int
    dropped: int
    instance: str | None
    last_seq: int

    def values(self) -> dict[str, Any]:
        return {"b_id": self.id, **{c: getattr(self, c) for c in _AGENT_WRITTEN}}


_AGENT_COLUMNS = (
    Agent.id,
    Agent.name,
    Agent.token_hash,
    Agent.revoked_at,
    Agent.heartbeat_s,
    Agent.state,
    Agent.state_since,
    Agent.last_heard_at,
    Agent.version,
    Agent.clock_skew_ms,
    Agent.queue_length,
    Agent.dropped,
    Agent.instance,
    Agent.last_seq,
)
# What heartbeats and results change (the rest is the admins': name, token, revocation).
_AGENT_WRITTEN = (
    "state",
    "state_since",
    "last_heard_at",
    "version",
    "clock_skew_ms",
    "queue_length",
    "dropped",
    "instance",
    "last_seq",
)
_at = table_of(Agent)
_UPDATE_AGENT = (
    update(_at)
    .where(_at.c.id == bindparam("b_id"))
    .values({c: bindparam(c) for c in _AGENT_WRITTEN})
    .execution_options(synchronize_session=False)
)


class AgentWriter:
    """The agents' results and heartbeats, many agents' calls in one transaction.

    A call waits for the transaction that carries it, then gets its answer. An idle writer
    writes a call at once; a busy one starts a transaction at most every `max_delay_s` with
    every call waiting then (up to `max_calls` calls and `max_results` results), so thousands
    of agents make a few big transactions a second. At most one call per agent goes in a
    transaction: a second one waits for the next, so an agent's calls apply in the order they
    came, and each agent's seq fence and last_seq move in the same transaction as its results.
    A refused call (401, 403) is left out of its transaction; a transaction that fails is tried
    again call by call, so one call's failure is its own and never loses another's.
    On PostgreSQL up to `max_in_flight` transactions run at once (the next is sent while the
    database works on the last), never two with the same agent: an agent's stores, monitors
    and seq are its own, so transactions in flight share no row but a terminal's or store's
    status at worst, and a deadlock there is retried by the one retry rule.
    """

    def __init__(
        self,
        database: Database,
        *,
        max_calls: int = 1000,
        max_results: int = 5000,
        max_delay_s: float = 0.25,
        max_in_flight: int = 2,
    ) -> None:
        self.database = database
        self.max_in_flight = max_in_flight if database.dialect == "postgresql" else 1
        self.max_calls = max_calls
        self.max_results = max_results
        self.max_delay_s = max_delay_s
        self._queue: deque[AgentCall] = deque()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._writing: dict[asyncio.Task[None], list[AgentCall]] = {}  # transactions in flight
        self._started = -1e9  # loop time the last transaction started
        self.transactions = 0
        self.calls = 0

    async def results(
        self, agent_id: int, token_hash: str | None, instance: str, results: list[AgentResult]
    ) -> IngestReport:
        answer = await self._submit(AgentCall(agent_id, token_hash, instance, results=results))
        assert isinstance(answer, IngestReport)
        return answer

    async def heartbeat(
        self, agent_id: int, token_hash: str | None, beat: Heartbeat, received: datetime
    ) -> dict[str, Any]:
        answer = await self._submit(
            AgentCall(agent_id, token_hash, beat.instance, beat=beat, received=received)
        )
        assert isinstance(answer, dict)
        return answer

    async def _submit(self, call: AgentCall) -> object:
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._task is None or self._task.done():
            self._loop, self._queue, self._wake = loop, deque(), asyncio.Event()
            self._task = loop.create_task(self._run(), name="termpulse-agent-writer")
        assert self._wake is not None
        call.done = loop.create_future()
        self._queue.append(call)
        self._wake.set()
        return await call.done

    async def close(self) -> None:
        """Stop; calls still waiting are refused (their agents send them again)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for task in self._writing:
            task.cancel()
        writing = [call for batch in self._writing.values() for call in batch]
        for call in [*writing, *self._queue]:
            if call.done is not None and not call.done.done():
                call.done.set_exception(RuntimeError("the server is stopping"))
        self._writing, self._queue = {}, deque()

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            if not self._queue or len(self._writing) >= self.max_in_flight:
                self._wake.clear()
                await self._wake.wait()
                continue
            # Busy (the last transaction started less than max_delay_s ago): let the next one
            # fill up until then, so thousands of agents' calls make a few transactions a
            # second. Idle: write at once.
            loop = asyncio.get_running_loop()
            wait = self._started + self.max_delay_s - loop.time()
            if wait > 0 and len(self._queue) < self.max_calls:
                await asyncio.sleep(wait)
            batch = self._take()
            if not batch:  # every waiting call's agent has a transaction in flight
                self._wake.clear()
                await self._wake.wait()
                continue
            self._started = loop.time()
            task = loop.create_task(self._write(batch), name="termpulse-agent-batch")
            self._writing[task] = batch
            task.add_done_callback(self._written)

    def _written(self, task: asyncio.Task[None]) -> None:
        self._writing.pop(task, None)
        if self._wake is not None:
            self._wake.set()

    def _take(self) -> list[AgentCall]:
        """The calls waiting, oldest first, one per agent and none of an agent with a
        transaction in flight, within the limits; the rest wait."""
        batch: list[AgentCall] = []
        agents = {call.agent_id for calls in self._writing.values() for call in calls}  # in flight
        results = 0
        rest: deque[AgentCall] = deque()
        for call in self._queue:
            if call.done is None or call.done.done():
                continue  # its caller gave up before it was written: it never is
            n = len(call.results or ())
            full = len(batch) >= self.max_calls or (batch and results + n > self.max_results)
            if call.agent_id in agents or full:
                rest.append(call)
                continue
            batch.append(call)
            agents.add(call.agent_id)
            results += n
        self._queue = rest
        return batch

    async def _write(self, batch: list[AgentCall]) -> None:
        answers: list[object]
        try:
            answers = await in_transaction(self.database, lambda session: apply_agent_calls(session, batch))
        except Exception as exc:
            if len(batch) == 1 or is_unreachable(exc):
                answers = [exc] * len(batch)  # the database's trouble, not one call's: all wait
            else:
                log.warning("agents' batch of %d calls failed (%s): writing them one by one", len(batch), exc)
                answers = [await self._write_one(call) for call in batch]
        self.transactions += 1
        self.calls += len(batch)
        for call, answer in zip(batch, answers, strict=True):
            if call.done is None or call.done.done():
                continue
            if isinstance(answer, BaseException):
                call.done.set_exception(answer)
            else:
                call.done.set_result(answer)

    async def _write_one(self, call: AgentCall) -> object:
        try:
            answers = await in_transaction(self.database, lambda session: apply_agent_calls(session, [call]))
        except Exception as exc:
            return exc
        return answers[0]


# --- health ---------------------------------------------------------------------------


async def mark_agents_offline(session: AsyncSession, now: datetime) -> int:
    """Agents silent for SILENT_HEARTBEATS heartbeats go offline; their monitors become
    unknown (agent_offline, never down), as do those of an agent enrolled that long ago and
    never heard from; a store whose agent and every cloud terminal went silent together is
    marked store_offline. Returns how many agents went offline."""
    # Only the silent agents are locked (and read as objects): the others' calls go on
    # meanwhile, which with thousands of agents on one server is every moment.
    watched = (
        await session.execute(
            select(Agent.id, Agent.state, Agent.last_heard_at, Agent.created_at, Agent.heartbeat_s).where(
                Agent.state.in_((AgentState.ONLINE, AgentState.NEVER_SEEN)), Agent.revoked_at.is_(None)
            )
        )
    ).all()
    silent = {a.id for a in watched if _silent(a.last_heard_at or a.created_at, a.heartbeat_s, now)}
    never = [a.id for a in watched if a.id in silent and a.state == AgentState.NEVER_SEEN]
    if never:  # an agent never heard from: its monitors are marked once, not again at every pass
        silent -= set(never) - await _not_marked_yet(session, never)
    went = 0
    query = select(Agent).order_by(Agent.id).with_for_update()
    for agent in await select_where_in(session, query, Agent.id, sorted(silent), scalars=True):
        # Again under the lock: a call may have come in since.
        watching = agent.state in (AgentState.ONLINE, AgentState.NEVER_SEEN) and agent.revoked_at is None
        if not watching or not _silent(agent.last_heard_at or agent.created_at, agent.heartbeat_s, now):
            continue
        if agent.state == AgentState.ONLINE:
            agent.state, agent.state_since = AgentState.OFFLINE, now
            went += 1
        await _monitors_unknown(session, agent, now)
    await _mark_stores_offline(session, now)
    return went


def _silent(heard: datetime, heartbeat_s: int, now: datetime) -> bool:
    return now - heard > timedelta(seconds=SILENT_HEARTBEATS * heartbeat_s)


async def _not_marked_yet(session: AsyncSession, agent_ids: list[int]) -> set[int]:
    """Of these never-heard-from agents, those with a monitor that `_monitors_unknown` would
    still change."""
    detail = literal("store agent ") + Agent.name + literal(" silent since never")
    query = (
        select(Monitor.agent_id)
        .join(Agent, Agent.id == Monitor.agent_id)
        .where(
            Monitor.enabled.is_(True),
            Monitor.state.not_in(list(MANUAL_STATES)),  # paused, maintenance: set by people, kept
            or_(
                Monitor.state != State.UNKNOWN,
                Monitor.last_diagnosis.is_distinct_from(AGENT_OFFLINE),
                Monitor.last_detail.is_distinct_from(detail),
            ),
        )
        .distinct()
    )
    return {i for i in await select_where_in(session, query, Monitor.agent_id, agent_ids, scalars=True) if i}


async def _monitors_unknown(session: AsyncSession, agent: Agent, now: datetime) -> None:
    rows = (
        await session.execute(
            select(Monitor.id, Monitor.store_id, Monitor.terminal_id, Monitor.kind, Monitor.state)
            .where(
                Monitor.agent_id == agent.id,
                Monitor.enabled.is_(True),
                Monitor.state.not_in([State.UNKNOWN, *MANUAL_STATES]),
            )
            .order_by(Monitor.id)
            .with_for_update()
        )
    ).all()
    heard = f"{agent.last_heard_at:%Y-%m-%d %H:%M:%S} UTC" if agent.last_heard_at else "never"
    detail = f"store agent {agent.name} silent since {heard}"
    mt = table_of(Monitor)
    await session.execute(
        update(mt)
        .where(mt.c.agent_id == agent.id, mt.c.enabled.is_(True))
        .values(last_diagnosis=AGENT_OFFLINE, last_detail=detail)
    )
    if rows:
        await session.execute(
            update(mt)
            .where(mt.c.id.in_([r.id for r in rows]))
            .values(state=State.UNKNOWN, state_since=now)
            .execution_options(synchronize_session=False)
        )
        changes = [
            Transition(r.id, r.store_id, r.terminal_id, r.kind, now, r.state, State.UNKNOWN, AGENT_OFFLINE)
            for r in rows
        ]
        await record_transitions(session, changes, now)


async def _mark_stores_offline(session: AsyncSession, now: datetime) -> None:
    """store_offline: the store's agent is offline and every cloud terminal it has is
    disconnected in the provider's API (both sides silent: power or internet is gone)."""
    stores = (
        await session.execute(
            select(Store.id, Store.status_reason, Agent.state).join(Agent, Agent.id == Store.agent_id)
        )
    ).all()
    if not stores:
        return
    cloud = (
        await session.execute(
            select(Monitor.store_id, func.count(), func.sum(case((Monitor.state == State.DOWN, 1), else_=0)))
            .where(Monitor.kind == MonitorKind.CLOUD, Monitor.enabled.is_(True))
            .where(Monitor.store_id.in_([s.id for s in stores]))
            .group_by(Monitor.store_id)
        )
    ).all()
    all_down = {sid for sid, total, down in cloud if total and down == total}
    for s in stores:
        reason = STORE_OFFLINE if s.state == AgentState.OFFLINE and s.id in all_down else None
        if reason != s.status_reason:
            await session.execute(update(Store).where(Store.id == s.id).values(status_reason=reason))


# --- on-demand checks (Check connection through the agent) -----------------------------


@dataclass
class WorkItem:
    id: str
    agent_id: int
    monitor_ids: list[int]
    expires: float  # loop time: a copy whose `closed` never came (its asker died) is let go then
    taken: bool = False  # handed to the agent by some process's long poll


WORK_CHANNEL = "termpulse_agent_work"


class AgentBroker:
    """Hands on-demand checks to agents waiting in their long poll, and their answers back.

    Across processes: the process that asks, the one holding the agent's long poll and the one
    its answer reaches may all differ (`serve --workers N`, servers behind a proxy). So every
    step is a message on the relay, which every process hears: `open` (a check for this agent),
    `taken` (a long poll handed it out: the others let it be), `answer` (the asking process
    gets the results), `closed` (answered or given up: forgotten everywhere). What a process
    keeps is a copy of the open checks, to hand out and to check an answer against."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self._open: dict[str, WorkItem] = {}  # every open check, asked here or heard of
        self._answers: dict[str, asyncio.Future[list[dict[str, Any]]]] = {}  # those asked here
        self._wake: dict[int, asyncio.Event] = {}  # per agent: a check for it opened
        self.stopping = asyncio.Event()  # set when the server begins to stop: long polls end
        relay.subscribe(WORK_CHANNEL, self._heard)

    def stop(self) -> None:
        """The server is stopping: every long poll ends now with no work (each would otherwise
        hold the stop until its graceful timeout and be cancelled)."""
        self.stopping.set()

    def _heard(self, message: dict[str, Any]) -> None:
        event, work_id = message["event"], message["id"]
        if event == "open":
            now = asyncio.get_running_loop().time()
            for old in [i for i in self._open.values() if i.expires < now]:
                del self._open[old.id]
            item = WorkItem(work_id, message["agent"], message["monitors"], now + message["wait_s"])
            self._open[work_id] = item
            self._wake.setdefault(message["agent"], asyncio.Event()).set()
        elif event == "taken" and (taken := self._open.get(work_id)) is not None:
            taken.taken = True
        elif event == "answer" and (future := self._answers.get(work_id)) is not None:
            if not future.done():
                future.set_result(message["results"])
        elif event == "closed":
            self._open.pop(work_id, None)

    async def run(
        self, agent_id: int, monitor_ids: list[int], timeout_s: float
    ) -> list[dict[str, Any]] | None:
        """Ask the agent to run these monitors now; its results, or None if none came in time."""
        await self.relay.start()
        work_id = secrets.token_urlsafe(12)
        answer = self._answers[work_id] = asyncio.get_running_loop().create_future()
        try:
            await self.relay.publish(
                WORK_CHANNEL,
                {
                    "event": "open",
                    "id": work_id,
                    "agent": agent_id,
                    "monitors": monitor_ids,
                    "wait_s": timeout_s,
                },
            )
            async with asyncio.timeout(timeout_s):
                return await answer
        except TimeoutError:
            return None
        finally:
            self._answers.pop(work_id, None)
            with contextlib.suppress(Exception):  # unreachable database: the others' copies expire
                await self.relay.publish(WORK_CHANNEL, {"event": "closed", "id": work_id})

    async def next_work(self, agent_id: int, wait_s: float) -> WorkItem | None:
        """The next check for this agent, waiting up to `wait_s` (its long poll)."""
        await self.relay.start()
        wake = self._wake.setdefault(agent_id, asyncio.Event())
        try:
            async with asyncio.timeout(wait_s):
                while True:
                    wake.clear()
                    item = next(
                        (i for i in self._open.values() if i.agent_id == agent_id and not i.taken), None
                    )
                    if item is not None:
                        item.taken = True
                        with contextlib.suppress(Exception):  # at worst another poll runs it again
                            await self.relay.publish(WORK_CHANNEL, {"event": "taken", "id": item.id})
                        return item
                    await wake.wait()
        except TimeoutError:
            return None

    async def answer(self, agent_id: int, work_id: str, results: list[dict[str, Any]]) -> bool:
        """The agent's answer; False when the check is not this agent's or was given up on."""
        await self.relay.start()
        item = self._open.get(work_id)
        if item is None or item.agent_id != agent_id:
            return False
        if not {r.get("monitor_id") for r in results} <= set(item.monitor_ids):
            raise Forbidden("an answer for monitors this check did not ask for")
        await self.relay.publish(WORK_CHANNEL, {"event": "answer", "id": work_id, "results": results})
        return True
