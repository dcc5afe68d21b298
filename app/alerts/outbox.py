"""Delivering the outbox: claim due notifications with a lease, send them through Apprise,
record every attempt, retry with backoff.

    UPDATE alert_outbox SET lease_owner = :me, lease_expires_at = now() + :lease,
           attempts = attempts + 1
     WHERE id IN (SELECT id FROM alert_outbox
                   WHERE state = 'pending' AND next_attempt_at <= now()
                     AND (lease_expires_at IS NULL OR lease_expires_at < now())
                   ORDER BY next_attempt_at LIMIT :n FOR UPDATE SKIP LOCKED)
    RETURNING ...

Whichever worker claims a notification sends it; no other can claim it while the lease
holds, so with several workers each notification is sent once. A worker killed mid-delivery
leaves a lease that expires: another worker claims it and sends it then (the one case where
a channel may see a message twice: the killed worker's send reached the channel but it
died before recording it). The outcome is written fenced by the lease owner.
SQLite has one worker (no SKIP LOCKED there): the same statement without it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, bindparam, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.alerts.channels import SendResult, decrypt_url, send
from app.alerts.models import (
    FAILED,
    PENDING,
    SENT,
    AlertChannel,
    DeliveryAttempt,
    IncidentEvent,
    Notification,
)
from app.config import Settings
from app.db import Database, UTCDateTime, in_transaction, table_of, utcnow
from app.providers.crypto import KeyUnavailable

log = logging.getLogger(__name__)

_ot = table_of(Notification)


@dataclass(frozen=True)
class Claimed:
    id: int
    incident_id: int | None
    channel_id: int
    kind: str
    title: str
    body: str
    attempts: int


async def claim(database: Database, owner: str, limit: int, lease_s: float) -> list[Claimed]:
    """Lease up to `limit` notifications that are due, oldest first."""
    now: ColumnElement[datetime]
    if database.dialect == "postgresql":
        now = func.now()
        lease_until = now + timedelta(seconds=lease_s)
    else:
        current = utcnow()
        now = bindparam("now", current, type_=UTCDateTime())
        lease_until = bindparam("lease_until", current + timedelta(seconds=lease_s), type_=UTCDateTime())
    due = (
        select(_ot.c.id)
        .where(
            _ot.c.state == PENDING,
            _ot.c.next_attempt_at <= now,
            or_(_ot.c.lease_expires_at.is_(None), _ot.c.lease_expires_at < now),
        )
        .order_by(_ot.c.next_attempt_at, _ot.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    stmt = (
        update(_ot)
        .where(_ot.c.id.in_(due.scalar_subquery()))
        .values(lease_owner=owner, lease_expires_at=lease_until, attempts=_ot.c.attempts + 1)
        .returning(
            _ot.c.id, _ot.c.incident_id, _ot.c.channel_id, _ot.c.kind, _ot.c.title, _ot.c.body, _ot.c.attempts
        )
    )
    async with database.engine.begin() as conn:
        rows = (await conn.execute(stmt)).all()
    return sorted((Claimed(*r) for r in rows), key=lambda c: c.id)


def backoff_s(settings: Settings, attempts: int) -> float:
    return float(min(settings.alert_retry_max_s, settings.alert_retry_base_s * 2 ** max(0, attempts - 1)))


class Deliverer:
    """Sends what it claims, a few at a time; `await tick()` once per second or so."""

    def __init__(
        self, settings: Settings, database: Database, owner: str, *, concurrency: int = 20, batch: int = 50
    ):
        self.settings = settings
        self.database = database
        self.owner = owner
        self.concurrency = concurrency
        self.batch = batch
        self.sent = 0

    async def tick(self) -> int:
        """Claim and deliver until nothing is due. Returns how many were attempted."""
        total = 0
        while True:
            claimed = await claim(self.database, self.owner, self.batch, self.settings.alert_lease_s)
            if not claimed:
                return total
            total += len(claimed)
            urls = await self._urls({c.channel_id for c in claimed})
            gate = asyncio.Semaphore(self.concurrency)
            await asyncio.gather(*(self._gated(gate, c, urls.get(c.channel_id)) for c in claimed))
            if len(claimed) < self.batch:
                return total

    async def _gated(
        self, gate: asyncio.Semaphore, c: Claimed, channel: tuple[str, str | Exception] | None
    ) -> None:
        async with gate:
            await self.deliver(c, channel)

    async def _urls(self, channel_ids: set[int]) -> dict[int, tuple[str, str | Exception]]:
        async with self.database.sessionmaker() as session:
            rows = (
                await session.execute(
                    select(
                        AlertChannel.id, AlertChannel.name, AlertChannel.url_encrypted, AlertChannel.enabled
                    ).where(AlertChannel.id.in_(sorted(channel_ids)))
                )
            ).all()
        found: dict[int, tuple[str, str | Exception]] = {}
        for cid, name, token, enabled in rows:
            if not enabled:
                found[cid] = (name, KeyUnavailable(f"the channel {name} is disabled"))
                continue
            try:
                found[cid] = (name, decrypt_url(self.settings.secret_key, token))
            except KeyUnavailable as exc:
                found[cid] = (name, exc)
        return found

    async def deliver(self, c: Claimed, channel: tuple[str, str | Exception] | None) -> SendResult:
        started_at = utcnow()
        if channel is None:
            name, result = f"channel #{c.channel_id}", SendResult(False, "the channel was deleted", 0)
        elif isinstance(channel[1], Exception):
            name, result = channel[0], SendResult(False, str(channel[1]), 0)
        else:
            name = channel[0]
            result = await send(
                channel[1], c.title, c.body, kind=c.kind, timeout_s=self.settings.alert_send_timeout_s
            )
        await in_transaction(
            self.database, lambda session: self._record(session, c, name, result, started_at)
        )
        if result.ok:
            self.sent += 1
        return result

    async def _record(
        self, session: AsyncSession, c: Claimed, name: str, result: SendResult, at: datetime
    ) -> None:
        now = utcnow()
        await session.execute(
            insert(DeliveryAttempt).values(
                notification_id=c.id,
                at=at,
                worker=self.owner,
                ok=result.ok,
                duration_ms=result.duration_ms,
                detail=result.detail,
            )
        )
        if result.ok:
            values: dict[str, object] = {"state": SENT, "sent_at": now, "last_error": None}
            text = f"Sent to {name} ({_what(c.kind)}, attempt {c.attempts})"
        elif c.attempts >= self.settings.alert_max_attempts:
            values = {"state": FAILED, "last_error": result.detail}
            text = f"Gave up on {name} after {c.attempts} attempts: {result.detail}"
        else:
            wait = backoff_s(self.settings, c.attempts)
            values = {"next_attempt_at": now + timedelta(seconds=wait), "last_error": result.detail}
            text = f"Attempt {c.attempts} to {name} failed ({result.detail}); next try in {wait:g} s"
        # Fenced: a worker whose lease ran out (another has it now) only records its attempt.
        await session.execute(
            update(_ot)
            .where(_ot.c.id == c.id, _ot.c.lease_owner == self.owner)
            .values(lease_owner=None, lease_expires_at=None, **values)
        )
        if c.incident_id is not None:
            kind = "sent" if result.ok else "delivery_failed"
            session.add(IncidentEvent(incident_id=c.incident_id, at=now, kind=kind, text=text))


def _what(kind: str) -> str:
    return {
        "opened": "notification",
        "reminder": "reminder",
        "escalation": "escalation",
        "resolved": "resolution",
    }.get(kind, kind)
