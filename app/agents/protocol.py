"""The store agent protocol, `/api/agent/v1` (docs/agents.md): configuration, heartbeats,
result batches, and the long poll through which Check connection reaches an agent.

Every call carries the agent's bearer token; a token reads only its own stores' monitors and
writes only their results. Bodies are capped and calls are rate limited per agent (and,
for tokens we do not know, per client address).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from limits import parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from app.agents.service import authenticate
from app.db import in_transaction, utcnow
from app.errors import InvalidInput, NotFound, RateLimited, TooLarge, Unauthenticated
from app.inventory.models import Agent
from app.monitoring.agents import (
    AgentAnswer,
    AgentBroker,
    AgentResult,
    Heartbeat,
    agent_config,
    heartbeat,
    ingest_results,
)
from app.web.deps import SessionDep

router = APIRouter(prefix="/api/agent/v1", tags=["store agents"])
_Body = TypeVar("_Body", bound=BaseModel)

MAX_BODY = 1024 * 1024
MAX_WAIT_S = 30.0
_limiter = MovingWindowRateLimiter(MemoryStorage())
_PER_AGENT = parse("240/minute")  # a replaying agent sends a batch every few hundred ms at most
_PER_AGENT_HEARTBEAT = parse("30/minute")
_PER_CLIENT_BAD_TOKEN = parse("30/minute")


class ResultsIn(BaseModel):
    instance: str = Field(min_length=8, max_length=64)
    results: list[AgentResult] = Field(max_length=5000)


class ResultsOut(BaseModel):
    accepted: int
    duplicates: int
    last_seq: int


class HeartbeatOut(BaseModel):
    server_time: str
    skew_ms: float
    last_seq: int
    config_etag: str


class WorkOut(BaseModel):
    id: str
    monitor_ids: list[int]


class AnswersIn(BaseModel):
    results: list[AgentAnswer] = Field(max_length=500)


def _limit(item: Any, key: str) -> None:
    if not _limiter.hit(item, key):
        reset = _limiter.get_window_stats(item, key).reset_time
        raise RateLimited("too many calls: slow down", max(reset - time.time(), 1.0))


async def current_agent(
    request: Request, session: SessionDep, authorization: Annotated[str, Header()] = ""
) -> Agent:
    """The agent whose bearer token this is (401 otherwise)."""
    scheme, _, token = authorization.partition(" ")
    agent = await authenticate(session, token.strip()) if scheme.lower() == "bearer" else None
    if agent is None:
        _limit(_PER_CLIENT_BAD_TOKEN, request.client.host if request.client else "?")
        raise Unauthenticated("a valid store agent token is needed (Authorization: Bearer tpa_...)")
    # Heartbeats have a budget of their own: an agent replaying a long buffer at full speed must
    # not be held back from saying it is alive.
    heartbeat = request.url.path.endswith("/heartbeat")
    _limit(_PER_AGENT_HEARTBEAT if heartbeat else _PER_AGENT, str(agent.id))
    return agent


AgentDep = Annotated[Agent, Depends(current_agent)]


async def _body(request: Request, model: type[_Body]) -> _Body:
    """The JSON body as `model`, read no further than MAX_BODY bytes."""
    if int(request.headers.get("content-length") or 0) > MAX_BODY:
        raise TooLarge(f"the body is over {MAX_BODY} bytes: send smaller batches")
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > MAX_BODY:
            raise TooLarge(f"the body is over {MAX_BODY} bytes: send smaller batches")
    try:
        return model.model_validate_json(bytes(data))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise InvalidInput({where: first["msg"]}) from None


def _broker(request: Request) -> AgentBroker:
    broker: AgentBroker = request.app.state.agent_broker
    return broker


@router.get("/config", summary="The agent's monitors", response_model=None)
async def config(
    agent: AgentDep, session: SessionDep, if_none_match: Annotated[str | None, Header()] = None
) -> Response | dict[str, Any]:
    body, etag = await agent_config(session, agent)
    if if_none_match == etag:
        return Response(status_code=304, headers={"ETag": etag})
    return Response(
        content=_json(body),
        media_type="application/json",
        headers={"ETag": etag, "Cache-Control": "no-cache"},
    )


@router.post("/heartbeat", summary="The agent's version, clock and queue")
async def beat(request: Request, agent: AgentDep) -> HeartbeatOut:
    received = utcnow()  # as close to the agent's stamp as we can: the skew excludes our own work
    data = await _body(request, Heartbeat)

    async def work(session: AsyncSession) -> dict[str, Any]:
        row = await session.get(Agent, agent.id, with_for_update=True)
        if row is None:  # deleted since the token was checked
            raise Unauthenticated("this agent no longer exists")
        return await heartbeat(session, row, data, received)

    return HeartbeatOut(**await in_transaction(request.app.state.db, work))


@router.post("/results", summary="A batch of results, exactly once by sequence number")
async def results(request: Request, agent: AgentDep) -> ResultsOut:
    data = await _body(request, ResultsIn)
    report = await ingest_results(request.app.state.db, agent.id, data.instance, data.results)
    return ResultsOut(accepted=report.accepted, duplicates=report.duplicates, last_seq=report.last_seq)


@router.get("/work", summary="Long poll: an on-demand check to run now", response_model=None)
async def next_work(
    request: Request, agent: AgentDep, wait: Annotated[float, Query(ge=0, le=MAX_WAIT_S)] = 25.0
) -> Response | WorkOut:
    # In slices of a second, so a long poll whose agent has gone does not hold on.
    broker, loop = _broker(request), asyncio.get_running_loop()
    deadline = loop.time() + wait
    while (left := deadline - loop.time()) > 0 and not await request.is_disconnected():
        item = await broker.next_work(agent.id, min(left, 1.0))
        if item is not None:
            return WorkOut(id=item.id, monitor_ids=item.monitor_ids)
    return Response(status_code=204)


@router.post("/work/{work_id}", summary="The answer to an on-demand check", status_code=204)
async def answer(request: Request, agent: AgentDep, work_id: str) -> Response:
    data = await _body(request, AnswersIn)
    if not _broker(request).answer(agent.id, work_id, [r.model_dump(mode="json") for r in data.results]):
        raise NotFound("open check", work_id)
    return Response(status_code=204)


def _json(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()
