"""Pages: Notifications (channels with Send test, routing rules; admins), Incidents (open first,
then recent, filterable; each incident's timeline; acknowledge) and the incidents export."""

from __future__ import annotations

import csv
import io
import os
import tempfile
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import FileResponse, RedirectResponse, Response
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.background import BackgroundTask

from app.alerts import queries, service
from app.alerts.channels import decrypt_url, send
from app.alerts.engine import acknowledge
from app.alerts.export import incident_rows, write_xlsx
from app.alerts.models import INCIDENT_KINDS, MATCH_KINDS
from app.auth.sessions import Identity, identify, require_admin
from app.db import utcnow
from app.errors import Conflict, InvalidInput, NameTaken, NotFound
from app.providers.crypto import KeyUnavailable
from app.web.deps import SessionDep
from app.web.templating import is_htmx, render

admin = APIRouter(
    prefix="/admin/notifications", include_in_schema=False, dependencies=[Depends(require_admin)]
)
router = APIRouter(include_in_schema=False)


def _go(request: Request, url: str) -> Response:
    if is_htmx(request):
        return Response(status_code=204, headers={"HX-Redirect": url})
    return RedirectResponse(url, status_code=303)


async def _notifications_page(
    request: Request, session: AsyncSession, *, status_code: int = 200, **extra: Any
) -> Response:
    channels = await service.list_channels(session)
    context: dict[str, Any] = {
        "channels": channels,
        "channel_names": {c.id: c.name for c in channels},
        "rules": await service.list_rules(session),
        "match_kinds": MATCH_KINDS,
        "channel_values": {},
        "channel_errors": {},
        "rule_values": {"match": "all", "min_duration_s": "60"},
        "rule_errors": {},
        "tested": None,
    }
    context.update(extra)
    return render(request, "alerts/notifications.html", context, status_code=status_code)


@admin.get("")
async def notifications_page(request: Request, session: SessionDep) -> Response:
    return await _notifications_page(request, session)


@admin.post("/channels")
async def add_channel(request: Request, session: SessionDep) -> Response:
    form = await request.form()
    values = {"name": str(form.get("name", ""))}  # the URL (a secret) is never rendered back
    try:
        await service.create_channel(
            session, request.app.state.settings.secret_key, form.get("name"), form.get("url")
        )
    except (InvalidInput, NameTaken) as exc:
        errors = exc.errors if isinstance(exc, InvalidInput) else {"name": exc.message}
        return await _notifications_page(
            request, session, status_code=422, channel_values=values, channel_errors=errors
        )
    await session.commit()
    return _go(request, "/admin/notifications")


@admin.post("/channels/{channel_id}/test")
async def test_channel(request: Request, channel_id: int, session: SessionDep) -> Response:
    """Send a test message now (not through the outbox: the answer is shown right here)."""
    channel = await service.get_channel(session, channel_id)
    settings = request.app.state.settings
    try:
        url = decrypt_url(settings.secret_key, channel.url_encrypted)
    except KeyUnavailable as exc:
        return await _notifications_page(request, session, tested=(channel.id, False, str(exc), 0))
    result = await send(
        url,
        "[TermPulse] Test notification",
        f"A test from TermPulse ({settings.base_url}) to the channel {channel.name}. "
        "Store incidents will arrive here in this form.",
        kind="test",
        timeout_s=settings.alert_send_timeout_s,
    )
    tested = (channel.id, result.ok, result.detail, result.duration_ms)
    return await _notifications_page(request, session, tested=tested)


@admin.post("/channels/{channel_id}/delete")
async def delete_channel(request: Request, channel_id: int, session: SessionDep) -> Response:
    try:
        await service.delete_channel(session, channel_id)
        await session.commit()
    except NotFound:
        pass  # already gone
    return _go(request, "/admin/notifications")


@admin.post("/rules")
async def add_rule(request: Request, session: SessionDep) -> Response:
    form = dict((await request.form()).items())
    try:
        await service.create_rule(session, form)
    except (InvalidInput, NameTaken) as exc:
        errors = exc.errors if isinstance(exc, InvalidInput) else {"name": exc.message}
        return await _notifications_page(
            request, session, status_code=422, rule_values=form, rule_errors=errors
        )
    await session.commit()
    return _go(request, "/admin/notifications")


@admin.post("/rules/{rule_id}/delete")
async def delete_rule(request: Request, rule_id: int, session: SessionDep) -> Response:
    try:
        await service.delete_rule(session, rule_id)
        await session.commit()
    except NotFound:
        pass
    return _go(request, "/admin/notifications")


# --- incidents ---------------------------------------------------------------------------------


def _raw_filters(request: Request) -> dict[str, str]:
    return {k: request.query_params.get(k, "") for k in ("state", "kind", "q", "region", "days")}


@router.get("/incidents")
async def incidents_page(request: Request, session: SessionDep) -> Response:
    raw = _raw_filters(request)
    errors: dict[str, str] = {}
    try:
        filters = queries.Filters.parse(raw)
    except InvalidInput as exc:
        errors, filters = exc.errors, queries.Filters()
    rows = await queries.list_incidents(session, filters, utcnow())
    context = {
        "rows": rows,
        "filters": raw,
        "errors": errors,
        "kinds": INCIDENT_KINDS,
        "states": queries.STATES,
        "periods": list(queries.PERIODS),
        "query": request.url.query,
        "counts": await queries.open_counts(session),
    }
    return render(
        request, "alerts/incidents.html", context, block="results", status_code=422 if errors else 200
    )


@router.get("/incidents/export.csv")
async def export_csv(request: Request, session: SessionDep) -> Response:
    filters = await _export_filters(request, session)
    if isinstance(filters, Response):
        return filters
    rows = await incident_rows(session, filters, utcnow())
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\r\n").writerows(rows)
    return Response(
        buf.getvalue().encode("utf-8"),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="incidents_{utcnow():%Y%m%d}.csv"'},
    )


@router.get("/incidents/export.xlsx")
async def export_xlsx(request: Request, session: SessionDep) -> Response:
    filters = await _export_filters(request, session)
    if isinstance(filters, Response):
        return filters
    rows = await incident_rows(session, filters, utcnow())
    fd, path = tempfile.mkstemp(prefix="termpulse-incidents-", suffix=".xlsx")
    os.close(fd)
    try:
        write_xlsx(path, rows, filters)
    except BaseException:
        os.unlink(path)
        raise
    return FileResponse(
        path,
        filename=f"incidents_{utcnow():%Y%m%d}.xlsx",
        media_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        background=BackgroundTask(os.unlink, path),
    )


async def _export_filters(request: Request, session: AsyncSession) -> queries.Filters | Response:
    try:
        return queries.Filters.parse(_raw_filters(request))
    except InvalidInput as exc:
        rows = await queries.list_incidents(session, queries.Filters(), utcnow())
        context = {
            "rows": rows,
            "filters": _raw_filters(request),
            "errors": exc.errors,
            "kinds": INCIDENT_KINDS,
            "states": queries.STATES,
            "periods": list(queries.PERIODS),
            "query": "",
            "counts": await queries.open_counts(session),
        }
        return render(request, "alerts/incidents.html", context, status_code=422)


@router.get("/incidents/{incident_id}")
async def incident_page(request: Request, incident_id: int, session: SessionDep) -> Response:
    detail = await queries.incident_detail(session, incident_id)
    return render(request, "alerts/incident.html", {"d": detail, "message": request.query_params.get("m")})


async def acting_identity(request: Request) -> Identity:
    """Who acknowledges: support and above (a viewer only looks; app.auth.rules)."""
    identity: Identity | None = getattr(request.state, "identity", None) or await identify(request)
    if identity is None:
        raise HTTPException(401, "log in first", headers={"WWW-Authenticate": 'Basic realm="TermPulse"'})
    if not identity.can("support"):
        raise HTTPException(
            403, f"{identity.username} may not acknowledge incidents (support, managers and admins may)"
        )
    return identity


@router.post("/incidents/{incident_id}/ack")
async def ack_incident(
    request: Request, incident_id: int, session: SessionDep, identity: Identity = Depends(acting_identity)
) -> Response:
    try:
        await acknowledge(session, incident_id, identity.username, utcnow())
        await session.commit()
    except Conflict:  # already acknowledged: the page says by whom
        return _go(request, f"/incidents/{incident_id}?m=already")
    return _go(request, f"/incidents/{incident_id}?m=acked")
