"""The audit log page (admins): filters (user, action, outcome, period, target), newest first,
200 a page (older ones by `before`), and the same selection as CSV. An entry's changes are shown
as a list ("field: old → new") and exported as one cell."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from sqlalchemy import Select, select

from app.auth.audit import split_detail
from app.auth.models import AuditEvent
from app.auth.sessions import require_admin
from app.web.deps import SessionDep
from app.web.templating import render

router = APIRouter(prefix="/admin/audit", include_in_schema=False, dependencies=[Depends(require_admin)])

PER_PAGE = 200
EXPORT_MAX = 100_000
OUTCOMES = ("ok", "failed", "refused")
COLUMNS = ("at", "username", "action", "target", "outcome", "address", "detail", "changes")


def _filters(request: Request) -> tuple[dict[str, str], dict[str, str], list[Any]]:
    """The form's values, errors by field, and the WHERE clauses they make."""
    params = request.query_params
    values = {
        k: params.get(k, "").strip()[:200] for k in ("user", "action", "outcome", "since", "until", "q")
    }
    errors: dict[str, str] = {}
    where: list[Any] = []
    if values["user"]:
        where.append(AuditEvent.username == values["user"])
    if values["action"]:
        where.append(AuditEvent.action == values["action"])
    if values["outcome"]:
        if values["outcome"] in OUTCOMES:
            where.append(AuditEvent.outcome == values["outcome"])
        else:
            errors["outcome"] = f"One of {', '.join(OUTCOMES)}."
    for name, end in (("since", False), ("until", True)):
        if not values[name]:
            continue
        try:
            day = date.fromisoformat(values[name])
        except ValueError:
            errors[name] = "A date as YYYY-MM-DD."
            continue
        moment = datetime.combine(day + timedelta(days=1) if end else day, time(), UTC)
        where.append(AuditEvent.at < moment if end else AuditEvent.at >= moment)
    if values["q"]:
        where.append(AuditEvent.target.contains(values["q"], autoescape=True))
    return values, errors, where


def _query(where: list[Any]) -> Select[Any]:
    return select(AuditEvent).where(*where).order_by(AuditEvent.id.desc())


@router.get("")
async def audit_page(request: Request, session: SessionDep) -> Response:
    values, errors, where = _filters(request)
    before = request.query_params.get("before", "")
    query = _query(where)
    if before.isdecimal() and len(before) < 19:
        query = query.where(AuditEvent.id < int(before))
    entries = [] if errors else list(await session.scalars(query.limit(PER_PAGE + 1)))
    actions = sorted(await session.scalars(select(AuditEvent.action).distinct()))
    context = {
        "entries": [(entry, *split_detail(entry.detail)) for entry in entries[:PER_PAGE]],
        "older": entries[PER_PAGE - 1].id if len(entries) > PER_PAGE else None,
        "values": values,
        "errors": errors,
        "actions": actions,
        "outcomes": OUTCOMES,
        "query": urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "before"]),
    }
    return render(request, "auth/audit.html", context, status_code=422 if errors else 200)


@router.get("/export.csv")
async def audit_export(request: Request, session: SessionDep) -> Response:
    _, errors, where = _filters(request)
    if errors:
        return Response(
            "; ".join(f"{k}: {v}" for k, v in errors.items()), status_code=422, media_type="text/plain"
        )
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(COLUMNS)
    for entry in await session.scalars(_query(where).limit(EXPORT_MAX)):
        detail, changes = split_detail(entry.detail)
        cells = [entry.username, entry.action, entry.target, entry.outcome, entry.address, detail]
        writer.writerow(
            [entry.at.isoformat(timespec="seconds"), *map(_cell, cells), _cell("; ".join(changes))]
        )
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="termpulse-audit.csv"'},
    )


def _cell(value: str) -> str:
    """A cell a spreadsheet will not run as a formula (user names and paths come from outside)."""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value
