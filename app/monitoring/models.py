"""What the checks found: results, state changes, rollups (the monitors themselves are
inventory: app.inventory.models.Monitor)."""

from __future__ import annotations

import json
from datetime import date, datetime
from typing import Any

from sqlalchemy import Boolean, Date, Dialect, Float, ForeignKey, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from app.checks.result import Step, pack_steps, unpack_steps
from app.db import Base, BigId, JSONData, UTCDateTime


class PackedSteps(TypeDecorator[list[Step]]):
    """A result's steps as compact JSON text (app.checks.result.pack_steps: no spaces, no
    keys), read back as Steps; JSONB spelled every key in every row."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: list[Any] | None, dialect: Dialect) -> str | None:
        return None if value is None else dump_steps(value)

    def process_result_value(self, value: str | None, dialect: Dialect) -> list[Step]:
        return unpack_steps(json.loads(value)) if value else []


def dump_steps(steps: list[Any]) -> str:
    return json.dumps(pack_steps(steps), separators=(",", ":"))


class CheckResult(Base):
    """A manual check, or a scheduled result past what its day keeps folded (a scheduled result
    is folded into `LatencyDay`, app.monitoring.compact). Raw rows are kept for
    the retention period only. On PostgreSQL the table is partitioned by day on checked_at
    (app.monitoring.partitions; the primary key there is (id, checked_at))."""

    __tablename__ = "check_results"
    __table_args__ = (
        Index("ix_check_results_monitor_at", "monitor_id", "checked_at"),
        # On PostgreSQL a BRIN: rows come in time order, and a day's partition is read by time
        # range (the rollups) only; a b-tree cost ~23 bytes per row, a BRIN almost nothing.
        Index("ix_check_results_at", "checked_at", postgresql_using="brin"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    monitor_id: Mapped[int] = mapped_column(ForeignKey("monitors.id", ondelete="CASCADE"))
    due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    checked_at: Mapped[datetime] = mapped_column(UTCDateTime)
    outcome: Mapped[str] = mapped_column(String(8))  # ok, fail, error (error = our side)
    latency_ms: Mapped[float | None] = mapped_column(Float)
    steps: Mapped[list] = mapped_column(PackedSteps, default=list)
    diagnosis: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[str | None] = mapped_column(Text)
    manual: Mapped[bool] = mapped_column(Boolean, default=False)


class LatencyDay(Base):
    """A monitor's scheduled results of one UTC day, folded (app.monitoring.compact): of its
    plain successes, per 5-minute bucket how many there were and their mean latency
    (`buckets`), and the last few of them as they were (`recent`, for the terminal page's
    recent checks; cleared after two days); its other results (failures, errors, warnings,
    state changes) whole (`kept`; cleared after the raw results' retention). The buckets are kept forever: a
    few hundred bytes per monitor and day instead of a row per check."""

    __tablename__ = "latency_days"

    monitor_id: Mapped[int] = mapped_column(ForeignKey("monitors.id", ondelete="CASCADE"), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    buckets: Mapped[bytes] = mapped_column(LargeBinary)
    recent: Mapped[bytes | None] = mapped_column(LargeBinary)
    kept: Mapped[bytes | None] = mapped_column(LargeBinary)


class StateChange(Base):
    """Every transition of a monitor's state, kept forever: uptime is computed from these."""

    __tablename__ = "state_changes"
    __table_args__ = (
        Index("ix_state_changes_monitor_at", "monitor_id", "at"),
        Index("ix_state_changes_terminal_at", "terminal_id", "at"),
        Index("ix_state_changes_at", "at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    monitor_id: Mapped[int] = mapped_column(ForeignKey("monitors.id", ondelete="CASCADE"))
    store_id: Mapped[int] = mapped_column(Integer)
    terminal_id: Mapped[int | None] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    from_state: Mapped[str] = mapped_column(String(16))
    to_state: Mapped[str] = mapped_column(String(16))
    diagnosis: Mapped[str | None] = mapped_column(String(64))


class Rollup(Base):
    """Per monitor and hour (period 'hour') or day ('day'): what charts and reports read."""

    __tablename__ = "rollups"

    monitor_id: Mapped[int] = mapped_column(ForeignKey("monitors.id", ondelete="CASCADE"), primary_key=True)
    period: Mapped[str] = mapped_column(String(4), primary_key=True)
    bucket_start: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    count: Mapped[int] = mapped_column(Integer, default=0)
    ok_count: Mapped[int] = mapped_column(Integer, default=0)
    latency_sum_ms: Mapped[float] = mapped_column(Float, default=0.0)
    latency_min_ms: Mapped[float | None] = mapped_column(Float)
    latency_max_ms: Mapped[float | None] = mapped_column(Float)
    seconds_down: Mapped[float] = mapped_column(Float, default=0.0)
    seconds_unknown: Mapped[float] = mapped_column(Float, default=0.0)


class RolledUpHour(Base):
    """An hour whose rollups are done. An hour row exists only for a monitor that was down or
    unknown in it, so this says how far the rollups go (app.history.uptime reads whole hours
    from them up to here)."""

    __tablename__ = "rolled_up_hours"

    bucket_start: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)


class RollupRedo(Base):
    """An hour whose rollups must be computed again: results arrived after it was rolled up
    (a store agent's buffer, replayed after it was offline)."""

    __tablename__ = "rollup_redo"

    bucket_start: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)


class UptimeRedo(Base):
    """State changes dated `since` arrived late (an agent's replay, a back-dated maintenance
    window): the stored days of this terminal (or, without one, of every terminal of the
    store) from the local day of `since` on are computed again (app.history.daily)."""

    __tablename__ = "uptime_redo"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    store_id: Mapped[int] = mapped_column(Integer)
    terminal_id: Mapped[int | None] = mapped_column(Integer)
    since: Mapped[datetime] = mapped_column(UTCDateTime)


class WorkerBeat(Base):
    """A checking worker's heartbeat and figures, for the status page: written by each
    worker every few seconds; a worker silent for long is shown as stopped, then forgotten."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(100), primary_key=True)  # the worker's lease owner
    host: Mapped[str] = mapped_column(String(200))
    pid: Mapped[int] = mapped_column(Integer)
    version: Mapped[str] = mapped_column(String(32))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime)
    stopped_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    figures: Mapped[dict] = mapped_column(JSONData, default=dict)
