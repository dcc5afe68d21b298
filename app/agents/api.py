"""JSON API for enrolling store agents (admin only): `/api/v1/agents`. A token is in the answer
of create and rotate only; the server keeps its hash."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, Field, field_validator
from sqlalchemy.ext.asyncio import AsyncSession

from app.agents import service
from app.agents.queries import AgentView, agent_view, agent_views
from app.auth.sessions import require_admin
from app.errors import NotFound
from app.inventory.schemas import printable
from app.vocabulary import AgentState
from app.web.deps import RowId, SessionDep

router = APIRouter(prefix="/agents", tags=["store agents"], dependencies=[Depends(require_admin)])


class AgentIn(BaseModel):
    name: str = Field(max_length=100)
    stores: list[str] = Field(min_length=1, max_length=500, description="store codes the agent sits in")

    _printable = field_validator("*")(printable)


class StoresIn(BaseModel):
    stores: list[str] = Field(min_length=1, max_length=500)

    _printable = field_validator("*")(printable)


class AgentOut(BaseModel):
    id: int
    name: str
    stores: list[str]
    state: AgentState
    state_since: datetime | None
    last_heard_at: datetime | None
    version: str | None
    clock_skew_ms: float | None
    queue_length: int
    dropped: int
    token_hint: str
    revoked_at: datetime | None


class EnrolledOut(BaseModel):
    agent: AgentOut
    token: str = Field(description="shown once: give it to the agent (termpulse agent --token ...)")


def agent_out(view: AgentView) -> AgentOut:
    return AgentOut(
        id=view.id,
        name=view.name,
        stores=view.stores,
        state=view.state,
        state_since=view.state_since,
        last_heard_at=view.last_heard_at,
        version=view.version,
        clock_skew_ms=view.clock_skew_ms,
        queue_length=view.queue_length,
        dropped=view.dropped,
        token_hint=view.token_hint,
        revoked_at=view.revoked_at,
    )


async def _out(session: AsyncSession, agent_id: int) -> AgentOut:
    view = await agent_view(session, agent_id)
    if view is None:
        raise NotFound("agent", agent_id)
    return agent_out(view)


@router.get("", summary="Store agents, worst first")
async def list_agents(session: SessionDep) -> list[AgentOut]:
    return [agent_out(v) for v in await agent_views(session)]


@router.post("", status_code=201, summary="Enrol an agent for stores (the token is shown once)")
async def create(data: AgentIn, session: SessionDep) -> EnrolledOut:
    enrolled = await service.create_agent(session, data.name, data.stores)
    await session.commit()
    return EnrolledOut(agent=await _out(session, enrolled.agent.id), token=enrolled.token)


@router.get("/{agent_id}")
async def get(agent_id: RowId, session: SessionDep) -> AgentOut:
    return await _out(session, agent_id)


@router.put("/{agent_id}/stores", summary="The stores this agent checks (others go back to central)")
async def set_stores(agent_id: RowId, data: StoresIn, session: SessionDep) -> AgentOut:
    agent = await service.get_agent(session, agent_id)
    await service.assign_stores(session, agent, data.stores)
    await session.commit()
    return await _out(session, agent_id)


@router.post("/{agent_id}/rotate", summary="A new token; the old one stops working at once")
async def rotate(agent_id: RowId, session: SessionDep) -> EnrolledOut:
    agent = await service.get_agent(session, agent_id)
    token = await service.rotate(session, agent)
    await session.commit()
    return EnrolledOut(agent=await _out(session, agent_id), token=token)


@router.post("/{agent_id}/revoke", status_code=204, summary="Revoke the token; the checks go back to central")
async def revoke(agent_id: RowId, session: SessionDep) -> Response:
    agent = await service.get_agent(session, agent_id)
    await service.revoke(session, agent)
    await session.commit()
    return Response(status_code=204)
