"""The audit log: who did what, when, from where.

Written in two ways:

* explicitly, with details, by the login, account and Users pages (logins and failures,
  logouts, password changes, tokens, user changes);
* for every other state-changing request and every export, by the login middleware after the
  answer (`record_request`): the action named from the method and path (ACTIONS), the
  outcome from the status (ok below 400, refused for 401/403, failed otherwise).
  So a new page or API route that changes something is audited without code of its own.

Either way an entry carries the fields its request changed, from what to what (`changes`, after
CHANGES_MARK in the detail): the objects an admin edits (TRACKED) are compared before each flush
(`_note_flush`), and bulk updates that bypass the ORM's unit of work note theirs with
`note_changes`. Secrets are only said to have "changed"; what the system keeps up to date itself
(status, timestamps) is left out.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import logging
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Any

from fastapi import Request
from sqlalchemy import event, inspect
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

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


# --- the fields a change changed ---------------------------------------------------------------

# The tables an admin edits, each with the attribute that names a row (an entry's target).
TRACKED = {
    "stores": "code",
    "terminals": "poiid",
    "network_profiles": "name",
    "check_settings": "name",
    "provider_accounts": "name",
    "users": "username",
    "alert_channels": "name",
    "alert_rules": "name",
    "maintenance_windows": "title",
}
_KEPT_BY_SYSTEM = re.compile(r"id|created_(at|by)|updated_at|status(_\w+)?|cloud_state|last_\w+|\w+_hint")
_SECRET = re.compile(r"(\w+_)?(password|secret|token|key)(_\w+)?|\w+_(hash|encrypted)")
CHANGED = "changed"  # what a secret's change shows, never its value
CHANGES_MARK = "\nchanges: "
_VALUE_MAX = 80
_ROWS_MAX = 200  # rows kept per request (an import changes thousands); the rest are counted
MORE = "+"  # the key counting the rows left out

# label -> field -> [old, new] (or CHANGED); MORE -> rows left out
Changes = dict[str, Any]
_request_changes: ContextVar[Changes | None] = ContextVar("audit_request_changes", default=None)


@contextmanager
def collecting_changes() -> Iterator[Changes]:
    """The changes made while a request is served (for `record_request`)."""
    changes: Changes = {}
    token = _request_changes.set(changes)
    try:
        yield changes
    finally:
        _request_changes.reset(token)


def _shown(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, Enum):
        value = value.value
    elif isinstance(value, datetime):
        value = value.isoformat(timespec="seconds")
    elif not isinstance(value, str):
        value = json.dumps(value, default=str)
    return value if len(value) <= _VALUE_MAX else value[: _VALUE_MAX - 1] + "…"


def field_changes(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of `after` that differ from `before`: [old, new], or CHANGED for a secret."""
    found: dict[str, Any] = {}
    for field, new in after.items():
        old = before.get(field)
        if old == new or _KEPT_BY_SYSTEM.fullmatch(field):
            continue
        if _SECRET.fullmatch(field):
            found[re.sub(r"_(hash|encrypted)$", "", field)] = CHANGED
        else:
            found[field] = [_shown(old), _shown(new)]
    return found


def _merge(changes: Changes, label: str, fields: dict[str, Any]) -> None:
    if label not in changes and len(changes) >= _ROWS_MAX:
        changes[MORE] = changes.get(MORE, 0) + 1
        return
    known = changes.setdefault(label, {})
    for field, change in fields.items():
        if isinstance(change, list) and isinstance(known.get(field), list):
            change = [known[field][0], change[1]]  # changed twice: from the first to the last
        known[field] = change


def note_changes(
    session: AsyncSession | Session, label: str, before: Mapping[str, Any], after: Mapping[str, Any]
) -> None:
    """Note what a change of the row named `label` changed, for the audit entries of `session`
    (same target) and of the request under way."""
    fields = field_changes(before, after)
    if not fields:
        return
    _merge(session.info.setdefault("audit_changes", {}), label, fields)
    if (request_changes := _request_changes.get()) is not None:
        _merge(request_changes, label, fields)


@event.listens_for(Session, "before_flush")
def _note_flush(session: Session, _context: Any, _instances: Any) -> None:
    for row in session.dirty:
        label_field = TRACKED.get(getattr(row, "__tablename__", ""))
        if label_field is None:
            continue
        state = inspect(row)
        before, after = {}, {}
        for column in state.mapper.column_attrs:
            history = state.attrs[column.key].history
            if history.added:
                before[column.key] = history.deleted[0] if history.deleted else None
                after[column.key] = history.added[0]
        note_changes(session, str(getattr(row, label_field)), before, after)
    noted: Changes = session.info.get("audit_changes", {})
    for entry in session.new:
        if isinstance(entry, AuditEvent) and entry.target in noted and CHANGES_MARK not in entry.detail:
            entry.detail = with_changes(entry.detail or "", {entry.target: noted[entry.target]})


@event.listens_for(Session, "after_commit")
@event.listens_for(Session, "after_rollback")
def _forget_changes(session: Session) -> None:
    session.info.pop("audit_changes", None)


def with_changes(detail: str, changes: Changes) -> str:
    """`detail` followed by as many of the changes as fit the column (the rest counted)."""
    if not changes:
        return detail
    detail = detail[:500]
    room = 1000 - len(detail) - len(CHANGES_MARK) - 20
    kept: Changes = {}
    left_out = changes.get(MORE, 0)
    for label, fields in changes.items():
        if label == MORE:
            continue
        for field, change in fields.items():
            size = len(json.dumps([label, field, change], ensure_ascii=False)) + 4
            if size > room:
                left_out += 1
                continue
            room -= size
            kept.setdefault(label, {})[field] = change
    if left_out:
        kept[MORE] = left_out
    return detail + CHANGES_MARK + json.dumps(kept, ensure_ascii=False)


def split_detail(detail: str) -> tuple[str, list[str]]:
    """An entry's detail as its text and its changes, one "field: old → new" each."""
    text, mark, data = detail.partition(CHANGES_MARK)
    try:
        changes = json.loads(data) if mark else {}
    except ValueError:
        return detail, []
    labels = [label for label in changes if label != MORE]
    lines = []
    for label in labels:
        for field, change in changes[label].items():
            said = change if change == CHANGED else f"{_said(change[0])} → {_said(change[1])}"
            lines.append(f"{label} · {field}: {said}" if len(labels) > 1 else f"{field}: {said}")
    if changes.get(MORE):
        lines.append(f"and {changes[MORE]} more")
    return text, lines


def _said(value: Any) -> str:
    if value is None or value == "":
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


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
    changes: Changes | None = None,
) -> None:
    """An entry for a request the middleware saw (see the module), in a session of its own,
    with the `changes` it made. The audit log failing (a database outage) never fails the request."""
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
    if outcome == "ok":  # a refused or failed change changed nothing
        detail = with_changes(detail, changes or {})
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
