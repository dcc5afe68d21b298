"""`termpulse agent-token create|revoke|rotate|list`: enrol store agents from the command line."""

from __future__ import annotations

import argparse
import asyncio
import sys

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.agents import service
from app.auth.audit import record_command
from app.config import Settings
from app.db import Database
from app.errors import AppError
from app.inventory.models import Agent, Store
from app.migrate import migrate


def agent_token_command(settings: Settings, args: argparse.Namespace) -> int:
    return asyncio.run(_run(settings, args))


async def _run(settings: Settings, args: argparse.Namespace) -> int:
    database = Database(settings.database_url)
    try:
        await migrate(database.engine)
        async with database.sessionmaker() as session:
            if args.action == "list":
                for agent in (await session.scalars(select(Agent).order_by(Agent.name))).all():
                    codes = (
                        await session.scalars(select(Store.code).where(Store.agent_id == agent.id))
                    ).all()
                    heard = (
                        agent.last_heard_at.isoformat(timespec="seconds") if agent.last_heard_at else "never"
                    )
                    stores = ",".join(codes)
                    print(f"{agent.id}\t{agent.name}\t{agent.state}\t{stores}\tlast heard {heard}")
                return 0
            if args.action == "create":
                name = args.name or f"{args.store[0]} agent"
                enrolled = await service.create_agent(session, name, args.store)
                await record_command(
                    session, "agent change", target=name, detail=_said("created", args.store)
                )
                await session.commit()
                token = enrolled.token
                print(
                    f"agent {enrolled.agent.id} ({name}) created for {', '.join(args.store)}", file=sys.stderr
                )
            else:
                agent = await _find(session, args.agent)
                if args.action == "revoke":
                    await service.revoke(session, agent)
                    await record_command(session, "agent change", target=agent.name, detail=_said("revoked"))
                    await session.commit()
                    print(f"agent {agent.name} revoked: its stores are checked centrally again")
                    return 0
                token = await service.rotate(session, agent)
                await record_command(
                    session, "agent change", target=agent.name, detail=_said("token rotated")
                )
                await session.commit()
                print(f"agent {agent.name}: new token (the old one no longer works)", file=sys.stderr)
    except AppError as exc:
        print(f"termpulse agent-token: {exc.message}", file=sys.stderr)
        return 2
    finally:
        await database.dispose()
    # The token alone on standard output (shown once), the command to run on the store's machine on stderr.
    print(token)
    hint = f"on the store's machine: termpulse agent --server https://<this server> --token {token}"
    print(hint, file=sys.stderr)
    return 0


def _said(what: str, stores: list[str] | None = None) -> str:
    """The audit entry's detail: what the command did, as the Agents page's entries say it."""
    return f"termpulse agent-token: {what}" + (f" for {', '.join(stores)}" if stores else "")


async def _find(session: AsyncSession, key: str) -> Agent:
    query = (
        select(Agent).where(Agent.id == int(key)) if key.isdigit() else select(Agent).where(Agent.name == key)
    )
    agent = await session.scalar(query)
    if agent is None:
        raise AppError(f"no agent {key}")
    return agent
