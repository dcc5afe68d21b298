"""The Agents admin page: store agents worst first, enrol one, rotate or revoke its token,
change its stores. A new token is shown once, in the answer to the action that made it, with
the command line to run on the store's machine; the server keeps only its hash."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from sqlalchemy.ext.asyncio import AsyncSession

from app.agents import service
from app.agents.queries import agent_views
from app.auth.sessions import require_admin
from app.errors import AppError, InvalidInput, NotFound
from app.poiid import normalise_poiid
from app.web.deps import SessionDep
from app.web.templating import render

router = APIRouter(prefix="/admin/agents", include_in_schema=False, dependencies=[Depends(require_admin)])

TOKEN_ENV = "TERMPULSE_AGENT_TOKEN"  # what `termpulse agent` reads instead of --token
# What deploy/termpulse-agent.service reads (deploy/README.md): the server's URL and the token.
ENV_FILE = "/etc/termpulse-agent/agent.env"
SERVER_ENV = "TERMPULSE_SERVER"


def store_codes(raw: str) -> list[str]:
    """Store codes as people type or paste them: separated by commas, semicolons or spaces,
    any Unicode dash a hyphen."""
    return [normalise_poiid(code) for code in re.split(r"[\s,;]+", raw) if code.strip()]


@dataclass(frozen=True)
class NewToken:
    """A token just made (enrolment or rotation), and how to hand it to the agent."""

    agent: str
    token: str
    server: str  # this server's base URL, as the browser reached it
    rotated: bool = False

    @property
    def insecure(self) -> bool:
        """Reached over plain http: the agent refuses that without --insecure-http."""
        return self.server.startswith("http://")

    @property
    def command(self) -> str:
        insecure = " --insecure-http" if self.insecure else ""
        return f"termpulse agent --server {self.server}{insecure} --token {self.token}"

    @property
    def env_file(self) -> str:
        """The environment file of the systemd unit the project ships."""
        return f"{SERVER_ENV}={self.server}\n{TOKEN_ENV}={self.token}\n"


def _server(request: Request) -> str:
    return str(request.base_url).rstrip("/")


async def _page(
    request: Request,
    session: AsyncSession,
    *,
    status_code: int = 200,
    token: NewToken | None = None,
    message: tuple[bool, str] | None = None,
    values: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    editing: int | None = None,
    edit_value: str = "",
    edit_error: str = "",
) -> Response:
    """The page (an htmx request: its body block) with whatever the last action produced."""
    context: dict[str, Any] = {
        "agents": await agent_views(session),
        "token": token,
        "message": message,
        "values": values or {},
        "errors": errors or {},
        "editing": editing,
        "edit_value": edit_value,
        "edit_error": edit_error,
        "env_file_path": ENV_FILE,
        "token_env": TOKEN_ENV,
    }
    response = render(request, "agents/list.html", context, block="body", status_code=status_code)
    if token is not None:  # shown once: never kept by a browser cache or a proxy
        response.headers["Cache-Control"] = "no-store"
    return response


def _field_errors(exc: AppError) -> dict[str, str]:
    if isinstance(exc, InvalidInput):
        return exc.errors
    return {exc.field or "name": exc.message}


@router.get("")
async def agents_page(request: Request, session: SessionDep) -> Response:
    return await _page(request, session)


@router.post("")
async def enrol(request: Request, session: SessionDep) -> Response:
    form = await request.form()
    values = {"name": str(form.get("name", "")), "stores": str(form.get("stores", ""))}
    try:
        enrolled = await service.create_agent(session, values["name"], store_codes(values["stores"]))
    except AppError as exc:
        if exc.field is None:
            raise
        await session.rollback()  # nothing half-made is listed
        return await _page(request, session, status_code=422, values=values, errors=_field_errors(exc))
    await session.commit()
    token = NewToken(enrolled.agent.name, enrolled.token, _server(request))
    return await _page(request, session, token=token)


@router.post("/{agent_id}/rotate")
async def rotate(request: Request, agent_id: int, session: SessionDep) -> Response:
    try:
        agent = await service.get_agent(session, agent_id)
        token = await service.rotate(session, agent)
    except (NotFound, InvalidInput) as exc:
        await session.rollback()
        return await _page(request, session, status_code=exc.status_code, message=(False, _gone(exc)))
    await session.commit()
    return await _page(request, session, token=NewToken(agent.name, token, _server(request), rotated=True))


@router.post("/{agent_id}/revoke")
async def revoke(request: Request, agent_id: int, session: SessionDep) -> Response:
    try:
        agent = await service.get_agent(session, agent_id)
    except NotFound as exc:
        return await _page(request, session, status_code=404, message=(False, _gone(exc)))
    if agent.revoked_at is not None:  # a form sent twice (a reload): nothing more to do
        return await _page(request, session, message=(True, f"{agent.name} was already revoked."))
    stores = (await agent_views(session, [agent.id]))[0].stores
    await service.revoke(session, agent)
    await session.commit()
    text = f"{agent.name} revoked: its token no longer works."
    if stores:
        text += f" {', '.join(stores)} {'is' if len(stores) == 1 else 'are'} checked centrally again."
    return await _page(request, session, message=(True, text))


@router.post("/{agent_id}/stores")
async def change_stores(request: Request, agent_id: int, session: SessionDep) -> Response:
    raw = str((await request.form()).get("stores", ""))
    try:
        agent = await service.get_agent(session, agent_id)
    except NotFound as exc:
        return await _page(request, session, status_code=404, message=(False, _gone(exc)))
    try:
        await service.assign_stores(session, agent, store_codes(raw))
    except InvalidInput as exc:
        await session.rollback()
        error = exc.errors.get("stores", exc.message)
        response = await _page(
            request, session, status_code=422, editing=agent_id, edit_value=raw, edit_error=error
        )
        response.headers["HX-Reswap"] = "innerHTML"  # the message is in the row: stay there
        return response
    await session.commit()
    stores = (await agent_views(session, [agent_id]))[0].stores
    return await _page(request, session, message=(True, f"{agent.name} now checks {', '.join(stores)}."))


def _gone(exc: AppError) -> str:
    if isinstance(exc, NotFound):
        return "That agent no longer exists: the list below is current."
    return exc.message
