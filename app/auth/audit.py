"""The audit log: who did what, when, from where.

Written in two ways:

* explicitly, with details, by the login, account and Users pages (logins and failures,
  logouts, password changes, tokens, user changes);
* for every other state-changing request and every export, by the login middleware after the
  answer (`record_request`): the action named from the method and path (ACTIONS), the
  outcome from the status (ok below 400, refused for 401/403, failed otherwise).
  So a new page or API route that changes something is audited without code of its own.
"""

from __future__ import annotations

import asyncio
import getpass
import logging
import re
from typing import TYPE_CHECKING, Any

from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.models import AuditEvent
from app.db import utcnow

if TYPE_CHECKING:
    from app.auth.sessions import Identity

log = logging.getLogger(__name__)

_WRITE = ("POST", "PUT", "PATCH", "DELETE")

# (methods, path regex, action); the first that matches names the action. None: not recorded
# here (the handler records it with its details, or it changes nothing).
ACTIONS: list[tuple[tuple[str, ...], str, str | None]] = [
    (_WRITE, r"/(login|logout|account(/.*)?)", None),
    (_WRITE, r"/admin/users(/.*)?|/api/v1/users(/.*)?", None),
    (_WRITE, r"/admin/import/preview", None),  # nothing is written until the commit
    (_WRITE, r"(/api/v1)?/terminals/[^/]+/check", "check connection"),
    (_WRITE, r"(/api/v1)?/stores/[^/]+/check", "check store"),
    (_WRITE, r"(/api/v1)?/incidents/[^/]+/ack", "incident acknowledged"),
    (("GET", "HEAD"), r"/(history|incidents)/export\.[a-z]+|/admin/audit/export\.csv", "export"),
    (_WRITE, r"/admin/import/commit", "import"),
    (
        _WRITE,
        r"(/admin|/api/v1)/(stores|terminals|check-settings|network-profiles)(/.*)?",
        "inventory change",
    ),
    (_WRITE, r"(/admin|/api/v1)/providers(/.*)?", "provider change"),
    (_WRITE, r"(/admin|/api/v1)/agents(/.*)?", "agent change"),
    (_WRITE, r"/admin/notifications(/.*)?", "channel change"),
    (
        _WRITE,
        r"(/api/v1)?/(maintenance|maintenance-windows)(/.*)?|(/api/v1)?/stores/[^/]+/trading-hours",
        "maintenance change",
    ),
    (_WRITE, r".*", "change"),
]
_ACTIONS = [(methods, re.compile(regex), action) for methods, regex, action in ACTIONS]


def action_for(method: str, path: str) -> str | None:
    for methods, regex, action in _ACTIONS:
        if method in methods and regex.fullmatch(path):
            return action
    return None


def _address(request: Request) -> str:
    return (request.client.host if request.client else "?")[:64]


async def record(
    session: AsyncSession,
    request: Request,
    identity: Identity | None,
    action: str,
    *,
    target: str = "",
    outcome: str = "ok",
    detail: str = "",
    who: str | None = None,
) -> None:
    """Adds an entry to `session` (committed with the caller's change)."""
    session.add(
        AuditEvent(
            at=utcnow(),
            username=(who if who is not None else identity.username if identity else "")[:100],
            action=action[:64],
            target=target[:300],
            outcome=outcome,
            address=_address(request),
            detail=detail[:1000],
        )
    )


def outcome_of(status: int) -> str:
    return "ok" if status < 400 else "refused" if status in (401, 403) else "failed"


async def record_request(
    request: Request,
    identity: Identity,
    outcome: str,
    *,
    action: str | None = None,
    needed: str = "",
    status: int = 0,
) -> None:
    """An entry for a request the middleware saw (see the module), in a session of its own.
    The audit log failing (a database outage) never fails the request."""
    method, path = request.method, request.url.path
    action = action or action_for(method, path) or ("access" if outcome == "refused" else None)
    if action is None:
        return
    query = f"?{request.url.query}" if request.url.query else ""
    detail = f"{method} {path}{query}"[:900]
    if needed:
        detail += f": needs {needed}"
    elif status:
        detail += f" -> {status}"
    try:
        db: Any = request.app.state.db
        async with asyncio.timeout(5), db.sessionmaker() as session:
            await record(session, request, identity, action, target=path, outcome=outcome, detail=detail)
            await session.commit()
    except Exception as exc:  # the audit log must not turn an answer into an error (nor hold it)
        log.warning("audit entry not written for %s %s: %r", method, path, exc)


def command_line_user() -> str:
    """Who ran a command: the system user, marked as the command line."""
    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        name = "?"
    return f"{name} (command line)"[:100]


async def record_command(session: AsyncSession, action: str, *, target: str = "", detail: str = "") -> None:
    """An entry for a `termpulse` command (create-user, import), added to `session`."""
    session.add(
        AuditEvent(
            at=utcnow(),
            username=command_line_user(),
            action=action,
            target=target[:300],
            outcome="ok",
            address="command line",
            detail=detail[:1000],
        )
    )
