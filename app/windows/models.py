"""Maintenance windows (one-off or weekly, per store, region or fleet) and stores' trading hours."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UTCDateTime, utcnow

SCOPES = ("store", "region", "fleet")


class MaintenanceWindow(Base):
    """A time when a store (a region's stores, every store) is in maintenance.

    One-off: ``starts_at`` .. ``ends_at`` (instants). Weekly (``weekdays`` set): on each of
    those weekdays from ``local_start_min`` minutes after local midnight, for
    ``duration_min`` minutes of wall-clock time, in each store's own time zone; then
    ``starts_at``/``ends_at``, when set, bound the series (ending one now sets ``ends_at``).
    """

    __tablename__ = "maintenance_windows"
    __table_args__ = (Index("ix_maintenance_windows_ends_at", "ends_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    scope: Mapped[str] = mapped_column(String(8))  # store, region, fleet
    store_id: Mapped[int | None] = mapped_column(ForeignKey("stores.id", ondelete="CASCADE"), index=True)
    region: Mapped[str | None] = mapped_column(String(100))
    title: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(Text, default="")
    starts_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ends_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Weekly recurrence: a bit per weekday (Monday = 1, Tuesday = 2, ... Sunday = 64); None: one-off.
    weekdays: Mapped[int | None] = mapped_column(Integer)
    local_start_min: Mapped[int | None] = mapped_column(Integer)  # minutes after local midnight
    duration_min: Mapped[int | None] = mapped_column(Integer)
    created_by: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class TradingHours(Base):
    """A store's opening hours on one weekday (0 = Monday), in local minutes after midnight.

    A store without rows has no trading hours set: always trading. With rows, a weekday
    without a row, or with ``opens_min`` None, is closed all day. ``closes_min`` <=
    ``opens_min`` closes after midnight (18:00-02:00); equal is open round the clock.
    """

    __tablename__ = "store_trading_hours"

    store_id: Mapped[int] = mapped_column(ForeignKey("stores.id", ondelete="CASCADE"), primary_key=True)
    weekday: Mapped[int] = mapped_column(Integer, primary_key=True)
    opens_min: Mapped[int | None] = mapped_column(Integer)
    closes_min: Mapped[int | None] = mapped_column(Integer)
