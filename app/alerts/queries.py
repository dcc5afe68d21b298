"""What the Incidents page, the store page, the API and the export read."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, bindparam, case, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.alerts.models import (
    INCIDENT_KINDS,
    OPEN,
    RESOLVED,
    AlertChannel,
    DeliveryAttempt,
    Incident,
    IncidentEvent,
    IncidentMember,
    Notification,
)
from app.db import select_where_in
from app.errors import InvalidInput, NotFound
from app.inventory.models import Store, Terminal

STATES = ("open", "resolved", "all")
PERIODS = {"1": 1, "7": 7, "30": 30, "90": 90, "365": 365}


@dataclass(frozen=True)
class Filters:
    state: str = "all"
    kind: str = ""
    q: str = ""  # store code or name
    region: str = ""
    days: int = 30

    @classmethod
    def parse(cls, raw: dict[str, str]) -> Filters:
        errors: dict[str, str] = {}
        state = raw.get("state") or "all"
        if state not in STATES:
            errors["state"] = f"one of {', '.join(STATES)}"
        kind = raw.get("kind") or ""
        if kind and kind not in INCIDENT_KINDS:
            errors["kind"] = f"one of {', '.join(INCIDENT_KINDS)}"
        days = raw.get("days") or "30"
        if days not in PERIODS:
            errors["days"] = f"one of {', '.join(PERIODS)} days"
        q, region = (raw.get("q") or "").strip(), (raw.get("region") or "").strip()
        if len(q) > 100:
            errors["q"] = "at most 100 characters"
        if len(region) > 100:
            errors["region"] = "at most 100 characters"
        if errors:
            raise InvalidInput(errors)
        return cls(state, kind, q, region, PERIODS.get(days, 30))


@dataclass
class IncidentRow:
    id: int
    kind: str
    state: str
    title: str
    cause: str | None
    opened_at: datetime
    resolved_at: datetime | None
    acked_at: datetime | None
    acked_by: str | None
    silenced: str | None
    terminals_down: int
    terminals_total: int
    stores_count: int
    parent_id: int | None
    store_code: str | None
    store_name: str | None
    region: str | None
    timezone: str | None

    @property
    def duration_s(self) -> float:
        end = self.resolved_at or datetime.now(self.opened_at.tzinfo)
        return max(0.0, (end - self.opened_at).total_seconds())


def _rows_query() -> Select[*tuple[Any, ...]]:
    return select(
        Incident.id,
        Incident.kind,
        Incident.state,
        Incident.title,
        Incident.cause,
        Incident.opened_at,
        Incident.resolved_at,
        Incident.acked_at,
        Incident.acked_by,
        Incident.silenced,
        Incident.terminals_down,
        Incident.terminals_total,
        Incident.stores_count,
        Incident.parent_id,
        Store.code,
        Store.name,
        Store.region,
        Store.timezone,
    ).outerjoin(Store, Store.id == Incident.store_id)


async def list_incidents(
    session: AsyncSession, filters: Filters, now: datetime, *, limit: int | None = 500
) -> list[IncidentRow]:
    """Open first (newest first), then the recent ones; filtered."""
    query = _rows_query()
    since = now - timedelta(days=filters.days)
    if filters.state == "open":
        query = query.where(Incident.state == OPEN)
    elif filters.state == "resolved":
        query = query.where(Incident.state == RESOLVED, Incident.resolved_at >= since)
    else:
        query = query.where(or_(Incident.state == OPEN, Incident.resolved_at >= since))
    if filters.kind:
        query = query.where(Incident.kind == filters.kind)
    if filters.q:
        like = f"%{filters.q.lower()}%"
        query = query.where(or_(func.lower(Store.code).like(like), func.lower(Store.name).like(like)))
    if filters.region:
        query = query.where(func.lower(Store.region) == filters.region.lower())
    # Open first (fleet incidents before the stores inside them), then the most recent.
    query = query.order_by(
        case((Incident.state == OPEN, 0), else_=1),
        case((Incident.parent_id.is_(None), 0), else_=1),
        Incident.opened_at.desc(),
        Incident.id.desc(),
    )
    if limit is not None:
        query = query.limit(limit)
    return [IncidentRow(*r) for r in (await session.execute(query)).all()]


# Every store page reads it: built once.
_STORE_INCIDENTS = (
    _rows_query()
    .where(Incident.store_id == bindparam("store_id"))
    .order_by(case((Incident.state == OPEN, 0), else_=1), Incident.opened_at.desc())
    .limit(bindparam("limit"))
)


async def store_incidents(session: AsyncSession, store_id: int, limit: int = 5) -> list[IncidentRow]:
    """A store's incidents for its page: open ones, then the latest."""
    found = await session.execute(_STORE_INCIDENTS, {"store_id": store_id, "limit": limit})
    return [IncidentRow(*r) for r in found.all()]


async def open_counts(session: AsyncSession) -> dict[str, int]:
    rows = await session.execute(
        select(Incident.kind, func.count())
        .where(Incident.state == OPEN, Incident.parent_id.is_(None))
        .group_by(Incident.kind)
    )
    return {k: n for k, n in rows.all()}


@dataclass
class AttemptView:
    at: datetime
    worker: str
    ok: bool
    duration_ms: int
    detail: str


@dataclass
class NotificationView:
    id: int
    channel: str
    kind: str
    title: str
    state: str
    created_at: datetime
    sent_at: datetime | None
    attempts: list[AttemptView] = field(default_factory=list)


@dataclass
class MemberView:
    kind: str
    target: str
    diagnosis: str | None
    down_since: datetime
    up_at: datetime | None
    poiid: str | None


@dataclass
class IncidentDetail:
    row: IncidentRow
    events: list[tuple[datetime, str, str]]
    members: list[MemberView]
    notifications: list[NotificationView]
    children: list[IncidentRow]


async def incident_detail(session: AsyncSession, incident_id: int) -> IncidentDetail:
    found = (await session.execute(_rows_query().where(Incident.id == incident_id))).first()
    if found is None:
        raise NotFound("incident", incident_id)
    row = IncidentRow(*found)
    events = [
        (at, kind, text)
        for at, kind, text in (
            await session.execute(
                select(IncidentEvent.at, IncidentEvent.kind, IncidentEvent.text)
                .where(IncidentEvent.incident_id == incident_id)
                .order_by(IncidentEvent.at, IncidentEvent.id)
            )
        ).all()
    ]
    members = [
        MemberView(*r)
        for r in (
            await session.execute(
                select(
                    IncidentMember.kind,
                    IncidentMember.target,
                    IncidentMember.diagnosis,
                    IncidentMember.down_since,
                    IncidentMember.up_at,
                    Terminal.poiid,
                )
                .outerjoin(Terminal, Terminal.id == IncidentMember.terminal_id)
                .where(IncidentMember.incident_id == incident_id)
                .order_by(IncidentMember.down_since, IncidentMember.id)
            )
        ).all()
    ]
    notes = [
        NotificationView(nid, name or f"channel #{cid}", kind, title, state, created, sent)
        for nid, cid, name, kind, title, state, created, sent in (
            await session.execute(
                select(
                    Notification.id,
                    Notification.channel_id,
                    AlertChannel.name,
                    Notification.kind,
                    Notification.title,
                    Notification.state,
                    Notification.created_at,
                    Notification.sent_at,
                )
                .outerjoin(AlertChannel, AlertChannel.id == Notification.channel_id)
                .where(Notification.incident_id == incident_id)
                .order_by(Notification.id)
            )
        ).all()
    ]
    by_id = {n.id: n for n in notes}
    for a in await select_where_in(
        session,
        select(DeliveryAttempt).order_by(DeliveryAttempt.id),
        DeliveryAttempt.notification_id,
        list(by_id),
        scalars=True,
    ):
        by_id[a.notification_id].attempts.append(AttemptView(a.at, a.worker, a.ok, a.duration_ms, a.detail))
    children = [
        IncidentRow(*r)
        for r in (
            await session.execute(
                _rows_query().where(Incident.parent_id == incident_id).order_by(Store.code).limit(1000)
            )
        ).all()
    ]
    return IncidentDetail(row, events, members, notes, children)
