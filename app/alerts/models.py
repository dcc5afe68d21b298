"""Alerting: incidents and their timelines, notification channels and routing rules, and the
outbox of notifications with every delivery attempt."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, BigId, JSONData, UTCDateTime, utcnow

# Incident kinds: one store; many stores at once (or one cause at many stores); our side.
STORE, FLEET, CANNOT_CHECK = "store", "fleet", "cannot_check"
INCIDENT_KINDS = (STORE, FLEET, CANNOT_CHECK)
# Incident states: open (failing, or within the quiet period after recovering), resolved.
OPEN, RESOLVED = "open", "resolved"
# What a rule matches.
MATCH_ALL, MATCH_REGION, MATCH_TAG, MATCH_FLEET = "all", "region", "tag", "fleet"
MATCH_KINDS = (MATCH_ALL, MATCH_REGION, MATCH_TAG, MATCH_FLEET)
# Notification kinds and states.
NOTIFY_OPENED, NOTIFY_REMINDER, NOTIFY_ESCALATION, NOTIFY_RESOLVED, NOTIFY_TEST = (
    "opened",
    "reminder",
    "escalation",
    "resolved",
    "test",
)
PENDING, SENT, FAILED = "pending", "sent", "failed"


class AlertChannel(Base):
    """Where notifications go: one Apprise URL (stored encrypted: it carries tokens)."""

    __tablename__ = "alert_channels"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    url_encrypted: Mapped[bytes] = mapped_column(LargeBinary)
    url_hint: Mapped[str] = mapped_column(String(200))  # scheme and host, the rest masked
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AlertRule(Base):
    """Which incidents go to which channel, after how long, how often again, and to whom next."""

    __tablename__ = "alert_rules"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    match: Mapped[str] = mapped_column(String(16), default=MATCH_ALL)  # all, region, tag, fleet
    value: Mapped[str] = mapped_column(String(100), default="")  # the region or tag
    channel_id: Mapped[int] = mapped_column(ForeignKey("alert_channels.id", ondelete="CASCADE"), index=True)
    min_duration_s: Mapped[int] = mapped_column(Integer, default=0)
    remind_every_s: Mapped[int | None] = mapped_column(Integer)
    escalate_channel_id: Mapped[int | None] = mapped_column(
        ForeignKey("alert_channels.id", ondelete="SET NULL"), index=True
    )
    escalate_after_s: Mapped[int | None] = mapped_column(Integer)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)


class Incident(Base):
    """A store that cannot take cards (or some terminals cannot), a fleet-wide event, or a
    spell where TermPulse could not check."""

    __tablename__ = "incidents"
    __table_args__ = (
        Index("ix_incidents_state_opened", "state", "opened_at"),
        Index("ix_incidents_store_state", "store_id", "state"),
        Index("ix_incidents_parent", "parent_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    store_id: Mapped[int | None] = mapped_column(ForeignKey("stores.id", ondelete="CASCADE"))
    # A store incident grouped into a fleet incident: the fleet incident notifies for it.
    parent_id: Mapped[int | None] = mapped_column(BigId)
    state: Mapped[str] = mapped_column(String(16), default=OPEN)
    title: Mapped[str] = mapped_column(String(300))
    cause: Mapped[str | None] = mapped_column(String(64))  # the diagnosis code most involved
    cause_key: Mapped[str | None] = mapped_column(String(300))  # what groups stores (cause@target)
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime)  # when the first check went down
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    recovering_since: Mapped[datetime | None] = mapped_column(UTCDateTime)  # all up: the quiet period
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    acked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    acked_by: Mapped[str | None] = mapped_column(String(100))
    terminals_down: Mapped[int] = mapped_column(Integer, default=0)
    terminals_total: Mapped[int] = mapped_column(Integer, default=0)
    stores_count: Mapped[int] = mapped_column(Integer, default=0)  # fleet incidents
    silenced: Mapped[str | None] = mapped_column(String(200))  # why nothing is notified (a window)


class IncidentMember(Base):
    """A check (monitor) involved in an incident: joined when it went down."""

    __tablename__ = "incident_members"
    __table_args__ = (UniqueConstraint("incident_id", "monitor_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id", ondelete="CASCADE"), index=True)
    monitor_id: Mapped[int] = mapped_column(Integer)
    terminal_id: Mapped[int | None] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))
    target: Mapped[str] = mapped_column(String(300))
    diagnosis: Mapped[str | None] = mapped_column(String(64))
    down_since: Mapped[datetime] = mapped_column(UTCDateTime)
    up_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class IncidentEvent(Base):
    """The incident's timeline: opened, joined, notified, acknowledged, escalated, resolved ..."""

    __tablename__ = "incident_events"
    __table_args__ = (Index("ix_incident_events_incident_at", "incident_id", "at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    kind: Mapped[str] = mapped_column(String(32))
    text: Mapped[str] = mapped_column(Text, default="")


class IncidentNotice(Base):
    """What one rule has done for one incident: first notified, last reminded, escalated."""

    __tablename__ = "incident_notices"
    __table_args__ = (UniqueConstraint("incident_id", "rule_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id", ondelete="CASCADE"))
    rule_id: Mapped[int] = mapped_column(ForeignKey("alert_rules.id", ondelete="CASCADE"))
    channel_id: Mapped[int] = mapped_column(Integer)
    notified_at: Mapped[datetime] = mapped_column(UTCDateTime)
    reminded_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    escalated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    escalate_channel_id: Mapped[int | None] = mapped_column(Integer)


class Notification(Base):
    """The outbox: written in the incident change's transaction, delivered by whichever worker
    claims it (a lease, SKIP LOCKED on PostgreSQL), retried with backoff."""

    __tablename__ = "alert_outbox"
    __table_args__ = (Index("ix_alert_outbox_state_next", "state", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    incident_id: Mapped[int | None] = mapped_column(
        ForeignKey("incidents.id", ondelete="CASCADE"), index=True
    )
    channel_id: Mapped[int] = mapped_column(ForeignKey("alert_channels.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    title: Mapped[str] = mapped_column(String(300))
    body: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16), default=PENDING)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)


class DeliveryAttempt(Base):
    """One try at sending one notification: who tried, when, and what the channel answered."""

    __tablename__ = "alert_attempts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    notification_id: Mapped[int] = mapped_column(
        ForeignKey("alert_outbox.id", ondelete="CASCADE"), index=True
    )
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    worker: Mapped[str] = mapped_column(String(64))
    ok: Mapped[bool] = mapped_column(Boolean)
    duration_ms: Mapped[int] = mapped_column(Integer, default=0)
    detail: Mapped[str] = mapped_column(Text, default="")


class AlertCursor(Base):
    """How far the evaluator has read the state changes (one row)."""

    __tablename__ = "alert_cursor"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    last_change_id: Mapped[int] = mapped_column(BigId, default=0)
    evaluated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    extra: Mapped[dict] = mapped_column(JSONData, default=dict)
