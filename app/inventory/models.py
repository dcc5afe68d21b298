"""Stores and terminals, what the fleet is made of, and the monitors derived from them.

The rows also carry the current derived state (terminal and store status, a monitor's
state and schedule), kept here so pages never aggregate; app.monitoring writes it."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, Float, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.db import Base, BigId, JSONData, UTCDateTime, utcnow
from app.vocabulary import AgentState, CloudState, State

INTEGRATIONS = ("cloud", "local", "both")
# torgsoft: Torgsoft's bank-terminal set (BPOS 2000/2100, the JSON WebSocket service on 3000,
# PosApi 5001): its port, the WebSocket handshake when that is 3000, and a ping (app.inventory.monitors).
LOCAL_APIS = ("paynt_epos", "adyen_local", "tcp", "torgsoft")
PROVIDERS = ("adyen", "stripe", "paynt", "ingenico", "generic")


class Store(Base):
    __tablename__ = "stores"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    region: Mapped[str] = mapped_column(String(100), default="", index=True)
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    adyen_store_id: Mapped[str | None] = mapped_column(String(100))
    stripe_location_id: Mapped[str | None] = mapped_column(String(100))
    network_profile: Mapped[str | None] = mapped_column(String(64))
    tags: Mapped[str] = mapped_column(String(500), default="")  # ';'-separated, as in the CSV
    status: Mapped[str] = mapped_column(String(16), default=State.UNKNOWN)
    status_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # A diagnosis for the whole store (store_offline: agent and cloud terminals all silent).
    status_reason: Mapped[str | None] = mapped_column(String(64))
    # The store agent that runs its network and LAN checks; None: they run centrally.
    agent_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id", ondelete="SET NULL"), index=True)
    # Its own check settings (None: its region's, else its network profile's, else the defaults;
    # app.inventory.monitors applies them to every monitor of the store).
    check_interval_s: Mapped[int | None] = mapped_column(Integer)
    check_timeout_s: Mapped[float | None] = mapped_column(Float)
    down_after: Mapped[int | None] = mapped_column(Integer)  # failed checks in a row before down
    up_after: Mapped[int | None] = mapped_column(Integer)  # passed checks in a row before up again
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    terminals: Mapped[list[Terminal]] = relationship(back_populates="store", passive_deletes=True)

    @property
    def tag_list(self) -> list[str]:
        return [t for t in self.tags.split(";") if t]


class CheckSettings(Base):
    """Interval, timeout and down/up thresholds set for a region (every monitor of its stores)
    or a network profile (its stores' network monitors); None: not set at this level. A
    store's own settings win over its region's, which win over its profile's."""

    __tablename__ = "check_settings"

    scope: Mapped[str] = mapped_column(String(16), primary_key=True)  # "region" or "profile"
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    interval_s: Mapped[int | None] = mapped_column(Integer)
    timeout_s: Mapped[float | None] = mapped_column(Float)
    down_after: Mapped[int | None] = mapped_column(Integer)
    up_after: Mapped[int | None] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class NetworkProfile(Base):
    """A store network profile: the outbound destinations its stores' networks must reach, each
    {"host", "port", "checks"} (app.inventory.profiles). Stores name it in `network_profile`."""

    __tablename__ = "network_profiles"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str] = mapped_column(String(500), default="")
    destinations: Mapped[list] = mapped_column(JSONData, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Terminal(Base):
    __tablename__ = "terminals"
    __table_args__ = (
        Index("ix_terminals_store_status", "store_id", "status"),
        Index("ix_terminals_status_since", "status", "status_since"),
        Index("ix_terminals_serial", "serial"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    store_id: Mapped[int] = mapped_column(ForeignKey("stores.id", ondelete="RESTRICT"), index=True)
    poiid: Mapped[str] = mapped_column(String(100), unique=True)
    model: Mapped[str] = mapped_column(String(64), default="")
    serial: Mapped[str] = mapped_column(String(64), default="")
    label: Mapped[str] = mapped_column(String(100), default="")
    provider: Mapped[str] = mapped_column(String(32), default="generic")
    provider_terminal_id: Mapped[str | None] = mapped_column(String(100))
    provider_account_id: Mapped[int | None] = mapped_column(
        ForeignKey("provider_accounts.id", ondelete="SET NULL"), index=True
    )
    integration: Mapped[str] = mapped_column(String(8), default="cloud")
    lan_host: Mapped[str | None] = mapped_column(String(255))
    lan_port: Mapped[int | None] = mapped_column(Integer)
    # Its other ports, each checked with a TCP connect (';'-separated, as in the CSV: "2000;5001").
    tcp_ports: Mapped[str] = mapped_column(String(200), default="")
    local_api: Mapped[str | None] = mapped_column(String(32))
    mac: Mapped[str | None] = mapped_column(String(17))
    cloud_enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    epos_token: Mapped[str | None] = mapped_column(String(200))

    status: Mapped[str] = mapped_column(String(16), default=State.UNKNOWN)
    status_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cloud_state: Mapped[str] = mapped_column(String(16), default=CloudState.UNKNOWN)
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    store: Mapped[Store] = relationship(back_populates="terminals")


class TerminalEvent(Base):
    """Things that happened to a terminal outside its checks: moved store, address changed."""

    __tablename__ = "terminal_events"
    __table_args__ = (Index("ix_terminal_events_terminal_at", "terminal_id", "at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    terminal_id: Mapped[int] = mapped_column(ForeignKey("terminals.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    kind: Mapped[str] = mapped_column(String(32))  # moved_store, address_changed
    detail: Mapped[dict] = mapped_column(JSONData, default=dict)
    source: Mapped[str] = mapped_column(Text, default="")


class Monitor(Base):
    """One thing checked on a schedule, for a terminal or for a store's network."""

    __tablename__ = "monitors"
    __table_args__ = (
        # The scheduler's claim query: enabled monitors by due time.
        Index("ix_monitors_due", "enabled", "next_due_at"),
        Index("ix_monitors_terminal", "terminal_id"),
        Index("ix_monitors_store", "store_id", "terminal_id"),
        # Only the monitors that run on a store agent (migration 0017: the writer's update of a
        # central worker's monitor, at every check, skips it).
        Index(
            "ix_monitors_agent_id",
            "agent_id",
            postgresql_where=text("agent_id IS NOT NULL"),
            sqlite_where=text("agent_id IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Stable identity so re-deriving monitors from the inventory updates instead of duplicating.
    key: Mapped[str] = mapped_column(String(300), unique=True)
    store_id: Mapped[int] = mapped_column(ForeignKey("stores.id", ondelete="CASCADE"))
    terminal_id: Mapped[int | None] = mapped_column(ForeignKey("terminals.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    target: Mapped[str] = mapped_column(String(300))  # host:port, name, URL or POIID
    params: Mapped[dict] = mapped_column(JSONData, default=dict)
    interval_s: Mapped[int] = mapped_column(Integer, default=60)
    timeout_s: Mapped[float] = mapped_column(Float, default=5.0)
    fail_threshold: Mapped[int] = mapped_column(Integer, default=2)
    success_threshold: Mapped[int] = mapped_column(Integer, default=1)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # Runs on this store agent (its store's agent; never a cloud monitor); None: central workers.
    agent_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id", ondelete="SET NULL"))
    phase_ms: Mapped[int] = mapped_column(Integer, default=0)  # stable offset within the interval

    next_due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    state: Mapped[str] = mapped_column(String(16), default=State.UNKNOWN)
    state_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    consecutive_successes: Mapped[int] = mapped_column(Integer, default=0)
    last_checked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_latency_ms: Mapped[float | None] = mapped_column(Float)
    last_diagnosis: Mapped[str | None] = mapped_column(String(64))
    last_detail: Mapped[str | None] = mapped_column(Text)


class Agent(Base):
    """A store agent: a process inside one or more stores' network that runs their checks."""

    __tablename__ = "agents"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 hex: the token is shown once
    token_hint: Mapped[str] = mapped_column(String(16))  # its first characters, to tell tokens apart
    state: Mapped[str] = mapped_column(String(16), default=AgentState.NEVER_SEEN)
    state_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # What its heartbeats say.
    last_heard_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    version: Mapped[str | None] = mapped_column(String(32))
    clock_skew_ms: Mapped[float | None] = mapped_column(Float)  # agent clock minus server clock
    queue_length: Mapped[int] = mapped_column(Integer, default=0)
    dropped: Mapped[int] = mapped_column(Integer, default=0)  # results it had to drop, offline too long
    heartbeat_s: Mapped[int] = mapped_column(Integer, default=15)
    # Exactly once: the instance (its local database) and the highest result seq written.
    instance: Mapped[str | None] = mapped_column(String(64))
    last_seq: Mapped[int] = mapped_column(BigId, default=0)
