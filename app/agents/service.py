"""Enrolling store agents: create (the token is shown once), revoke, rotate, assign stores."""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import utcnow
from app.errors import InvalidInput, NameTaken, NotFound
from app.inventory.models import Agent, Store
from app.inventory.monitors import assign_agents
from app.relay import notify_in
from app.vocabulary import AgentState

TOKEN_PREFIX = "tpa_"
NAME_MAX = 100  # agents.name


def new_token() -> str:
    return TOKEN_PREFIX + base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")


def token_hash(token: str) -> str:
    """SHA-256 is enough: the token is 256 random bits, not a password a person chose."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass
class Enrolled:
    agent: Agent
    token: str  # shown once, never stored


async def authenticate(session: AsyncSession, token: str) -> Agent | None:
    """The agent holding this token, unless it is revoked."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    agent = await session.scalar(select(Agent).where(Agent.token_hash == token_hash(token)))
    return agent if agent is not None and agent.revoked_at is None else None


@dataclass(frozen=True, slots=True)
class TokenHolder:
    """The agent a token was found to belong to, and when."""

    agent_id: int
    token_hash: str
    seen: float  # time.monotonic()


class TokenCache:
    """Which agent holds a token, remembered for `ttl_s`, so that a call that checks the token
    again where it writes (results and heartbeats: under the agent's row lock, in the writer's
    transaction) or that only waits (the long poll) need not look it up first. Revoking or
    rotating forgets the agent in every process at once (app.relay; on SQLite, where the
    command `termpulse agent-token` is another process with no relay, within ttl_s on those
    calls, and on everything else at once)."""

    def __init__(self, ttl_s: float = 60.0, max_entries: int = 100_000) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._holders: dict[str, TokenHolder] = {}

    def get(self, digest: str) -> TokenHolder | None:
        holder = self._holders.get(digest)
        if holder is None or time.monotonic() - holder.seen > self.ttl_s:
            return None
        return holder

    def put(self, agent_id: int, digest: str) -> TokenHolder:
        if len(self._holders) >= self.max_entries:
            cut = time.monotonic() - self.ttl_s
            self._holders = {d: h for d, h in self._holders.items() if h.seen >= cut}
        holder = self._holders[digest] = TokenHolder(agent_id, digest, time.monotonic())
        return holder

    def forget(self, agent_id: int) -> None:
        for digest in [d for d, h in self._holders.items() if h.agent_id == agent_id]:
            del self._holders[digest]


TOKENS = TokenCache()  # this process's; the protocol's calls look tokens up through it
# Told to every process when an agent's token is revoked or rotated: each forgets it at once.
TOKENS_CHANNEL = "termpulse_agent_tokens"


async def create_agent(session: AsyncSession, name: str, store_codes: list[str]) -> Enrolled:
    """A new agent for these stores; their network and LAN checks move to it. Caller commits."""
    name = name.strip()
    if not name:
        raise InvalidInput({"name": "Give the agent a name (e.g. the store code and the machine)."})
    if len(name) > NAME_MAX:
        raise InvalidInput({"name": f"At most {NAME_MAX} characters."})
    if await session.scalar(select(Agent.id).where(Agent.name == name)) is not None:
        raise NameTaken(f"an agent named {name!r} exists already", field="name")
    token = new_token()
    agent = Agent(name=name, token_hash=token_hash(token), token_hint=token[:10], state=AgentState.NEVER_SEEN)
    session.add(agent)
    await session.flush()
    await assign_stores(session, agent, store_codes)
    return Enrolled(agent, token)


async def assign_stores(session: AsyncSession, agent: Agent, store_codes: list[str]) -> None:
    """These stores (and only these) are checked by `agent` from now on."""
    if agent.revoked_at is not None:
        raise InvalidInput({"stores": "A revoked agent cannot take stores: enrol a new one."})
    codes = sorted({c.strip() for c in store_codes if c.strip()})
    if not codes:
        raise InvalidInput({"stores": "Name at least one store the agent sits in."})
    rows = await session.execute(select(Store.code, Store.id).where(Store.code.in_(codes)))
    found = {code: store_id for code, store_id in rows}
    unknown = [c for c in codes if c not in found]
    if unknown:
        raise InvalidInput({"stores": f"No store {', '.join(unknown)}."})
    before = set((await session.scalars(select(Store.id).where(Store.agent_id == agent.id))).all())
    wanted = set(found.values())
    await session.execute(update(Store).where(Store.id.in_(before - wanted)).values(agent_id=None))
    await session.execute(update(Store).where(Store.id.in_(wanted)).values(agent_id=agent.id))
    await assign_agents(session, before | wanted)


async def get_agent(session: AsyncSession, agent_id: int) -> Agent:
    agent = await session.get(Agent, agent_id)
    if agent is None:
        raise NotFound("agent", agent_id)
    return agent


async def revoke(session: AsyncSession, agent: Agent) -> None:
    """The token stops working at once; the stores' checks go back to the central workers."""
    agent.revoked_at = utcnow()
    agent.state, agent.state_since = AgentState.REVOKED, agent.revoked_at
    TOKENS.forget(agent.id)
    await notify_in(session, TOKENS_CHANNEL, {"agent": agent.id})
    stores = set((await session.scalars(select(Store.id).where(Store.agent_id == agent.id))).all())
    await session.execute(
        update(Store).where(Store.agent_id == agent.id).values(agent_id=None, status_reason=None)
    )
    await assign_agents(session, stores)


async def rotate(session: AsyncSession, agent: Agent) -> str:
    """A new token for the agent; the old one stops working at once."""
    if agent.revoked_at is not None:
        raise InvalidInput({"agent": "A revoked agent cannot get a new token: enrol a new one."})
    token = new_token()
    agent.token_hash, agent.token_hint = token_hash(token), token[:10]
    TOKENS.forget(agent.id)
    await notify_in(session, TOKENS_CHANNEL, {"agent": agent.id})
    return token
