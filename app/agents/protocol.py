"""The store agent protocol, `/api/agent/v1` (docs/agents.md): configuration, heartbeats,
result batches, and the long poll through which Check connection reaches an agent.

Every call carries the agent's bearer token; a token reads only its own stores' monitors and
writes only their results. Bodies are capped and calls are rate limited per agent (and,
for tokens we do not know, per client address).

Built for thousands of agents on one server: no call holds a database connection while it
waits (for the writer, for a long poll); results and heartbeats go through the agents'
writer (app.monitoring.agents.AgentWriter), which writes many agents' calls in one
transaction and checks each call's token again under the agent's row lock; tokens are
looked up through this process's cache (app.agents.service.TOKENS) by those calls and the
long poll, and read from the database by the others.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from pydantic import BaseModel, Field, ValidationError

from app.agents.service import TOKEN_PREFIX, TOKENS, TokenHolder, authenticate, token_hash
from app.db import utcnow
from app.errors import InvalidInput, NotFound, RateLimited, TooLarge, Unauthenticated
from app.inventory.models import Agent
from app.monitoring.agents import (
    TOKEN_NEEDED,
    AgentAnswer,
    AgentBroker,
    AgentResult,
    AgentWriter,
    Heartbeat,
    agent_config,
)
from app.web.deps import SessionDep
from app.web.ratelimit import MovingWindow

router = APIRouter(prefix="/api/agent/v1", tags=["store agents"])
_Body = TypeVar("_Body", bound=BaseModel)
_T = TypeVar("_T")

MAX_BODY = 1024 * 1024
MAX_WAIT_S = 30.0


_PER_AGENT = MovingWindow(240, 60.0)  # a replaying agent sends a batch every few hundred ms at most
_PER_AGENT_HEARTBEAT = MovingWindow(30, 60.0)
_PER_CLIENT_BAD_TOKEN = MovingWindow(30, 60.0)


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


def _limit(window: MovingWindow, key: str) -> None:
    wait = window.hit(key)
    if wait is not None:
        raise RateLimited("too many calls: slow down", max(wait, 1.0))


def _bearer(authorization: str) -> str | None:
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token.startswith(TOKEN_PREFIX) else None


async def _lookup(request: Request, token: str | None) -> Agent | None:
    """The token's agent from the database, on a connection held for this lookup only."""
    if token is None:
        return None
    async with request.app.state.db.sessionmaker() as session:
        return await authenticate(session, token)


async def _gone(request: Request) -> None:
    """Returns once the client has closed the connection (nothing is polled meanwhile)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _admit(request: Request, agent_id: int | None) -> None:
    if agent_id is None:
        _limit(_PER_CLIENT_BAD_TOKEN, request.client.host if request.client else "?")
        raise Unauthenticated(TOKEN_NEEDED)
    # Heartbeats have a budget of their own: an agent replaying a long buffer at full speed must
    # not be held back from saying it is alive.
    heartbeat = request.url.path.endswith("/heartbeat")
    _limit(_PER_AGENT_HEARTBEAT if heartbeat else _PER_AGENT, str(agent_id))


async def current_agent(request: Request) -> TokenHolder:
    """The agent whose bearer token this is (401 otherwise), through the token cache: for the
    calls that check the token again where they write (results, heartbeats) or only wait (the
    long poll)."""
    token = _bearer(request.headers.get("authorization", ""))
    holder = TOKENS.get(token_hash(token)) if token is not None else None
    if holder is None and (agent := await _lookup(request, token)) is not None:
        holder = TOKENS.put(agent.id, agent.token_hash)
    _admit(request, holder.agent_id if holder is not None else None)
    assert holder is not None
    return holder


async def checked_agent(request: Request, session: SessionDep) -> Agent:
    """The agent whose bearer token this is (401 otherwise), read from the database in the
    call's own session (the calls that take it hold their session for a moment only)."""
    token = _bearer(request.headers.get("authorization", ""))
    agent = await authenticate(session, token) if token is not None else None
    _admit(request, agent.id if agent is not None else None)
    assert agent is not None
    TOKENS.put(agent.id, agent.token_hash)
    return agent


AgentDep = Annotated[TokenHolder, Depends(current_agent)]
CheckedAgentDep = Annotated[Agent, Depends(checked_agent)]


def _writer(request: Request) -> AgentWriter:
    writer: AgentWriter | None = getattr(request.app.state, "agent_writer", None)
    if writer is None:
        writer = request.app.state.agent_writer = AgentWriter(request.app.state.db)
    return writer


async def _written(holder: TokenHolder, call: Awaitable[_T]) -> _T:
    """The writer's answer; its token was checked again: remembered afresh, or forgotten."""
    try:
        answer = await call
    except Unauthenticated:
        TOKENS.forget(holder.agent_id)
        raise
    TOKENS.put(holder.agent_id, holder.token_hash)
    return answer


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
    agent: CheckedAgentDep, session: SessionDep, if_none_match: Annotated[str | None, Header()] = None
) -> Response | dict[str, Any]:
    body, etag = await agent_config(session, agent)
    if if_none_match == etag:
        return Response(status_code=304, headers={"ETag": etag})
    return Response(
        content=_json(body),
        media_type="application/json",
        headers={"ETag": etag, "Cache-Control": "no-cache"},
    )


# Results and heartbeats answer with their JSON made here: the models only document them
# (FastAPI would validate and serialize again what the writer has just made, on every call).


@router.post("/heartbeat", summary="The agent's version, clock and queue", response_model=HeartbeatOut)
async def beat(request: Request) -> Response:
    received = utcnow()  # as close to the agent's stamp as we can: the skew excludes our own work
    agent = await current_agent(request)  # called, not a dependency: FastAPI's cost per call halves
    data = await _body(request, Heartbeat)
    writer = _writer(request)
    answer = await _written(agent, writer.heartbeat(agent.agent_id, agent.token_hash, data, received))
    out = {k: answer[k] for k in ("server_time", "skew_ms", "last_seq", "config_etag")}
    return Response(content=_json(out), media_type="application/json")


@router.post(
    "/results", summary="A batch of results, exactly once by sequence number", response_model=ResultsOut
)
async def results(request: Request) -> Response:
    agent = await current_agent(request)  # called, not a dependency: FastAPI's cost per call halves
    data = await _body(request, ResultsIn)
    writer = _writer(request)
    report = await _written(
        agent, writer.results(agent.agent_id, agent.token_hash, data.instance, data.results)
    )
    out = {"accepted": report.accepted, "duplicates": report.duplicates, "last_seq": report.last_seq}
    return Response(content=_json(out), media_type="application/json")


@router.get(
    "/work",
    summary="Long poll: an on-demand check to run now",
    response_model=None,
    responses={200: {"model": WorkOut}, 204: {"description": "no check asked for within `wait` seconds"}},
)
async def next_work(
    request: Request, agent: AgentDep, wait: Annotated[float, Query(ge=0, le=MAX_WAIT_S)] = 25.0
) -> Response | WorkOut:
    # Ends early when the agent has gone: a long poll never holds on for nobody. Waited for,
    # not polled (thousands of agents wait here at any time), and with no database connection.
    broker = _broker(request)
    work = asyncio.ensure_future(broker.next_work(agent.agent_id, wait))
    gone = asyncio.ensure_future(_gone(request))
    stopping = asyncio.ensure_future(broker.stopping.wait())  # the server stops: answer now
    try:
        await asyncio.wait((work, gone, stopping), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (work, gone, stopping):
            task.cancel()
    item = work.result() if work.done() and not work.cancelled() else None
    if item is None:
        return Response(status_code=204)
    return WorkOut(id=item.id, monitor_ids=item.monitor_ids)


@router.post("/work/{work_id}", summary="The answer to an on-demand check", status_code=204)
async def answer(request: Request, agent: CheckedAgentDep, work_id: str) -> Response:
    data = await _body(request, AnswersIn)
    answers = [r.model_dump(mode="json") for r in data.results]
    if not await _broker(request).answer(agent.id, work_id, answers):
        raise NotFound("open check", work_id)
    return Response(status_code=204)


def _json(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()
