"""Store agents as the monitoring engine sees them: their results into the one writer, their
heartbeats, their health (agent_offline, store_offline), and on-demand checks handed to them.

The protocol itself (HTTP, tokens, limits) is app.agents; this module is what it calls.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import case, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.checks.result import Step
from app.db import Database, in_transaction, select_where_in, table_of, utcnow
from app.errors import Forbidden
from app.inventory.models import Agent, Monitor, Store
from app.monitoring.maintenance import redo_rollups_since
from app.monitoring.writer import AGENT_OFFLINE, CheckOutcome, Transition, apply_outcomes, record_transitions
from app.vocabulary import AgentState, MonitorKind, Outcome, State

SILENT_HEARTBEATS = 3  # an agent not heard for this many heartbeat intervals is offline
STORE_OFFLINE = "store_offline"


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


async def agent_config(session: AsyncSession, agent: Agent) -> tuple[dict[str, Any], str]:
    """What the agent runs, and an ETag that changes whenever that does."""
    stores = (
        await session.scalars(select(Store.code).where(Store.agent_id == agent.id).order_by(Store.code))
    ).all()
    monitors = (
        await session.execute(
            select(
                Monitor.id,
                Monitor.kind,
                Monitor.target,
                Monitor.params,
                Monitor.interval_s,
                Monitor.timeout_s,
                Monitor.phase_ms,
            )
            .where(Monitor.agent_id == agent.id, Monitor.enabled.is_(True))
            .order_by(Monitor.id)
        )
    ).all()
    config = {
        "agent": {"id": agent.id, "name": agent.name},
        "stores": list(stores),
        "heartbeat_s": agent.heartbeat_s,
        "monitors": [
            {
                "id": m.id,
                "kind": m.kind,
                "target": m.target,
                "params": m.params or {},
                "interval_s": m.interval_s,
                "timeout_s": m.timeout_s,
                "phase_ms": m.phase_ms,
            }
            for m in monitors
        ],
    }
    etag = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:32]
    return config, f'"{etag}"'


# --- heartbeats and results -----------------------------------------------------------


async def heartbeat(session: AsyncSession, agent: Agent, beat: Heartbeat, now: datetime) -> dict[str, Any]:
    """Record what the agent says of itself; the caller commits."""
    if beat.instance != agent.instance:  # a new local database: its sequence starts afresh
        agent.instance, agent.last_seq = beat.instance, 0
    agent.clock_skew_ms = (beat.clock - now).total_seconds() * 1000
    agent.version, agent.queue_length, agent.dropped = beat.version, beat.queue, beat.dropped
    await _heard(session, agent, now)
    _, etag = await agent_config(session, agent)
    return {
        "server_time": now.isoformat(),
        "skew_ms": round(agent.clock_skew_ms, 1),
        "last_seq": agent.last_seq,
        "config_etag": etag,
    }


async def _heard(session: AsyncSession, agent: Agent, now: datetime) -> None:
    agent.last_heard_at = now
    if agent.state != AgentState.ONLINE:
        agent.state, agent.state_since = AgentState.ONLINE, now
        await session.execute(
            update(Store)
            .where(Store.agent_id == agent.id, Store.status_reason == STORE_OFFLINE)
            .values(status_reason=None)
        )


def to_server_clock(agent: Agent, at: datetime) -> datetime:
    return at - timedelta(milliseconds=agent.clock_skew_ms or 0.0)


async def ingest_results(
    database: Database, agent_id: int, instance: str, results: list[AgentResult]
) -> IngestReport:
    """An agent's results into the one writer, exactly once: in one transaction with the
    agent's row locked, only seqs above the highest written are applied, and that mark moves.
    A result for a monitor that is not the agent's is refused (403) and nothing is written."""

    async def work(session: AsyncSession) -> IngestReport:
        agent = await session.get(Agent, agent_id, with_for_update=True)
        if agent is None:
            raise Forbidden("this agent no longer exists")
        ids = sorted({r.monitor_id for r in results})
        query = select(Monitor.id).where(Monitor.agent_id == agent_id)
        own = set(await select_where_in(session, query, Monitor.id, ids, scalars=True))
        foreign = [i for i in ids if i not in own]
        if foreign:
            raise Forbidden(f"monitors {foreign[:10]} are not run by this agent; nothing was written")
        if instance != agent.instance:
            agent.instance, agent.last_seq = instance, 0
        fresh = sorted((r for r in results if r.seq > agent.last_seq), key=lambda r: r.seq)
        outcomes = [
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
        now = utcnow()
        await apply_outcomes(session, outcomes, now=now)
        if outcomes:  # a replayed buffer reaches back into hours already rolled up
            await redo_rollups_since(session, min(o.checked_at for o in outcomes), now)
        if fresh:
            agent.last_seq = fresh[-1].seq
        await _heard(session, agent, now)
        return IngestReport(len(fresh), len(results) - len(fresh), agent.last_seq)

    return await in_transaction(database, work)


# --- health ---------------------------------------------------------------------------


async def mark_agents_offline(session: AsyncSession, now: datetime) -> int:
    """Agents silent for SILENT_HEARTBEATS heartbeats go offline; their monitors become
    unknown (agent_offline, never down), as do those of an agent enrolled that long ago and
    never heard from; a store whose agent and every cloud terminal went silent together is
    marked store_offline. Returns how many agents went offline."""
    watched = (
        await session.scalars(
            select(Agent)
            .where(Agent.state.in_((AgentState.ONLINE, AgentState.NEVER_SEEN)), Agent.revoked_at.is_(None))
            .with_for_update()
        )
    ).all()
    went = 0
    for agent in watched:
        heard = agent.last_heard_at or agent.created_at
        if now - heard <= timedelta(seconds=SILENT_HEARTBEATS * agent.heartbeat_s):
            continue
        if agent.state == AgentState.ONLINE:
            agent.state, agent.state_since = AgentState.OFFLINE, now
            went += 1
        await _monitors_unknown(session, agent, now)
    await _mark_stores_offline(session, now)
    return went


async def _monitors_unknown(session: AsyncSession, agent: Agent, now: datetime) -> None:
    rows = (
        await session.execute(
            select(Monitor.id, Monitor.store_id, Monitor.terminal_id, Monitor.kind, Monitor.state)
            .where(Monitor.agent_id == agent.id, Monitor.enabled.is_(True), Monitor.state != State.UNKNOWN)
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
    answer: asyncio.Future[list[dict[str, Any]]] = field(repr=False)


class AgentBroker:
    """Hands on-demand checks to agents waiting in their long poll, and their answers back.

    In-process: the web process that serves the agents' long polls is the one that asks."""

    def __init__(self) -> None:
        self._queues: dict[int, asyncio.Queue[WorkItem]] = {}
        self._open: dict[str, WorkItem] = {}

    def _queue(self, agent_id: int) -> asyncio.Queue[WorkItem]:
        return self._queues.setdefault(agent_id, asyncio.Queue())

    async def run(
        self, agent_id: int, monitor_ids: list[int], timeout_s: float
    ) -> list[dict[str, Any]] | None:
        """Ask the agent to run these monitors now; its results, or None if none came in time."""
        item = WorkItem(
            secrets.token_urlsafe(12), agent_id, monitor_ids, asyncio.get_running_loop().create_future()
        )
        self._open[item.id] = item
        self._queue(agent_id).put_nowait(item)
        try:
            async with asyncio.timeout(timeout_s):
                return await item.answer
        except TimeoutError:
            return None
        finally:
            self._open.pop(item.id, None)

    async def next_work(self, agent_id: int, wait_s: float) -> WorkItem | None:
        """The next check for this agent, waiting up to `wait_s` (its long poll)."""
        queue = self._queue(agent_id)
        try:
            async with asyncio.timeout(wait_s):
                while True:
                    item = await queue.get()
                    if item.id in self._open:  # not given up on meanwhile
                        return item
        except TimeoutError:
            return None

    def answer(self, agent_id: int, work_id: str, results: list[dict[str, Any]]) -> bool:
        """The agent's answer; False when the check is not this agent's or was given up on."""
        item = self._open.get(work_id)
        if item is None or item.agent_id != agent_id or item.answer.done():
            return False
        if not {r.get("monitor_id") for r in results} <= set(item.monitor_ids):
            raise Forbidden("an answer for monitors this check did not ask for")
        item.answer.set_result(results)
        return True
