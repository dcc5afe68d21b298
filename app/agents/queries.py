"""Store agents as people read them: the Agents page and `/api/v1/agents` share these rows.

Two queries whatever the number of agents: the agents, then their stores' codes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.inventory.models import Agent, Store
from app.vocabulary import AgentState


@dataclass
class AgentView:
    id: int
    name: str
    state: AgentState
    state_since: datetime | None
    created_at: datetime | None
    last_heard_at: datetime | None
    version: str | None
    clock_skew_ms: float | None
    queue_length: int
    dropped: int
    token_hint: str
    revoked_at: datetime | None
    heartbeat_s: int
    stores: list[str] = field(default_factory=list)

    @property
    def revoked(self) -> bool:
        return self.state == AgentState.REVOKED


def _view(agent: Agent) -> AgentView:
    return AgentView(
        id=agent.id,
        name=agent.name,
        state=AgentState(agent.state),
        state_since=agent.state_since,
        created_at=agent.created_at,
        last_heard_at=agent.last_heard_at,
        version=agent.version,
        clock_skew_ms=agent.clock_skew_ms,
        queue_length=agent.queue_length,
        dropped=agent.dropped,
        token_hint=agent.token_hint,
        revoked_at=agent.revoked_at,
        heartbeat_s=agent.heartbeat_s,
    )


async def agent_views(session: AsyncSession, ids: Sequence[int] | None = None) -> list[AgentView]:
    """These agents (all without `ids`) with their stores, worst first (offline, never seen,
    online, revoked), then by name."""
    query = select(Agent)
    if ids is not None:
        if not ids:
            return []
        query = query.where(Agent.id.in_(list(ids)))
    views = [_view(a) for a in (await session.scalars(query)).all()]
    by_id = {v.id: v for v in views}
    if by_id:
        stores = select(Store.agent_id, Store.code).where(Store.agent_id.is_not(None)).order_by(Store.code)
        if ids is not None:
            stores = stores.where(Store.agent_id.in_(list(by_id)))
        for agent_id, code in (await session.execute(stores)).all():
            if agent_id in by_id:
                by_id[agent_id].stores.append(code)
    return sorted(views, key=lambda v: (v.state.severity, v.name.lower()))


async def agent_view(session: AsyncSession, agent_id: int) -> AgentView | None:
    found = await agent_views(session, [agent_id])
    return found[0] if found else None
