"""JSON API of the incidents: /api/v1/incidents (list, one with its timeline, acknowledge)."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel

from app.alerts import queries
from app.alerts.engine import acknowledge
from app.alerts.pages import acting_identity
from app.auth.sessions import Identity
from app.db import utcnow
from app.web.deps import BigRowId, SessionDep

router = APIRouter(tags=["incidents"])


class IncidentOut(BaseModel):
    id: int
    kind: str  # store, fleet, cannot_check
    state: str  # open, resolved
    title: str
    cause: str | None  # diagnosis code most involved
    opened_at: datetime
    resolved_at: datetime | None
    acked_at: datetime | None
    acked_by: str | None
    silenced: str | None  # why nothing is notified (maintenance window, outside trading hours)
    terminals_down: int
    terminals_total: int
    stores_count: int  # fleet incidents: how many stores joined
    parent_id: int | None  # the fleet incident a store incident is part of
    store_code: str | None
    store_name: str | None
    region: str | None


class EventOut(BaseModel):
    at: datetime
    kind: str
    text: str


class AttemptOut(BaseModel):
    at: datetime
    worker: str
    ok: bool
    duration_ms: int
    detail: str


class NotificationOut(BaseModel):
    id: int
    channel: str
    kind: str
    title: str
    state: str
    created_at: datetime
    sent_at: datetime | None
    attempts: list[AttemptOut]


class IncidentDetailOut(IncidentOut):
    events: list[EventOut]
    notifications: list[NotificationOut]
    stores: list[IncidentOut]  # fleet incidents: the store incidents inside


def _out(r: queries.IncidentRow) -> IncidentOut:
    fields = {k: getattr(r, k) for k in IncidentOut.model_fields}
    return IncidentOut(**fields)


@router.get("/incidents")
async def incidents_api(
    request: Request,
    session: SessionDep,
    state: str = "all",
    kind: str = "",
    q: str = "",
    region: str = "",
    days: str = "30",
) -> list[IncidentOut]:
    """Incidents, open first then the most recent: `state` open, resolved or all; `kind`
    store, fleet or cannot_check; `q` a store code or name; `region`; `days` 1, 7, 30, 90 or
    365 (how far back resolved ones go). Bad input: 422 naming the field."""
    filters = queries.Filters.parse({"state": state, "kind": kind, "q": q, "region": region, "days": days})
    return [_out(r) for r in await queries.list_incidents(session, filters, utcnow())]


@router.get("/incidents/{incident_id}")
async def incident_api(incident_id: BigRowId, session: SessionDep) -> IncidentDetailOut:
    """One incident with its timeline (opened, checks joined, notified where, acknowledged by,
    resolved) and every notification with each delivery attempt."""
    d = await queries.incident_detail(session, incident_id)
    return IncidentDetailOut(
        **_out(d.row).model_dump(),
        events=[EventOut(at=at, kind=kind, text=text) for at, kind, text in d.events],
        notifications=[
            NotificationOut(
                id=n.id,
                channel=n.channel,
                kind=n.kind,
                title=n.title,
                state=n.state,
                created_at=n.created_at,
                sent_at=n.sent_at,
                attempts=[AttemptOut(**a.__dict__) for a in n.attempts],
            )
            for n in d.notifications
        ],
        stores=[_out(c) for c in d.children],
    )


@router.post("/incidents/{incident_id}/ack")
async def ack_api(
    incident_id: BigRowId, session: SessionDep, identity: Identity = Depends(acting_identity)
) -> IncidentOut:
    """Acknowledge: reminders and escalation stop; who and when are kept. 409 when it was
    acknowledged already, 404 when there is no such incident."""
    await acknowledge(session, incident_id, identity.username, utcnow())
    await session.commit()
    d = await queries.incident_detail(session, incident_id)
    return _out(d.row)
