"""Stored daily uptime: each terminal's figures per local day (its store's midnight), made
by the exact computation (app.history.uptime) for closed days, so long reports and exports
add up days instead of replaying every state change (app.history.daily)."""

from __future__ import annotations

from datetime import date

from sqlalchemy import Date, Float, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, JSONData


class DailyUptime(Base):
    """One terminal's closed local day, as `uptime.terminal_uptime` counts it: seconds up,
    down, unknown, paused or maintenance (one figure, as the history module counts them), not
    monitored (the rest of the day), outages and the longest, the down spells (epoch seconds,
    clipped to the day) that make store outages and outages across midnight, and running
    totals of the seconds."""

    __tablename__ = "daily_uptime"
    __table_args__ = (
        Index("ix_daily_uptime_store_id_day", "store_id", "day"),
        # The days with an outage (a few a year): their down spells are what totals read, from
        # the index alone on PostgreSQL (it carries them: ~40 MB for 50,000 terminals a year).
        Index(
            "ix_daily_uptime_outage_days",
            "terminal_id",
            "day",
            postgresql_include=["downs"],
            postgresql_where=text("outages > 0"),
            sqlite_where=text("outages > 0"),
        ),
    )

    terminal_id: Mapped[int] = mapped_column(ForeignKey("terminals.id", ondelete="CASCADE"), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    store_id: Mapped[int] = mapped_column(Integer)
    up_s: Mapped[float] = mapped_column(Float)
    down_s: Mapped[float] = mapped_column(Float)
    unknown_s: Mapped[float] = mapped_column(Float)
    paused_s: Mapped[float] = mapped_column(Float)  # paused or maintenance
    not_monitored_s: Mapped[float] = mapped_column(Float)
    span_s: Mapped[float] = mapped_column(Float)  # the day's length: 23 h, 24 h or 25 h
    outages: Mapped[int] = mapped_column(Integer)
    longest_outage_s: Mapped[float] = mapped_column(Float)
    downs: Mapped[list] = mapped_column(JSONData, default=list)
    # Running totals over the terminal's stored days up to this one (its days are one unbroken
    # run from daily_uptime_fill.filled_from): any range's seconds from the rows at its ends.
    run_up_s: Mapped[float] = mapped_column(Float, server_default=text("0"))
    run_down_s: Mapped[float] = mapped_column(Float, server_default=text("0"))
    run_unknown_s: Mapped[float] = mapped_column(Float, server_default=text("0"))
    run_paused_s: Mapped[float] = mapped_column(Float, server_default=text("0"))
    run_days: Mapped[int] = mapped_column(Integer, server_default=text("0"))  # days stored up to this one


class DailyUptimeFill(Base):
    """How far a terminal's days are stored, and what they were computed under: its store,
    that store's time zone and the monitors watching it. When any of these differ from now
    (moved, zone edited, a monitor added or removed) its days are computed again."""

    __tablename__ = "daily_uptime_fill"

    terminal_id: Mapped[int] = mapped_column(ForeignKey("terminals.id", ondelete="CASCADE"), primary_key=True)
    store_id: Mapped[int] = mapped_column(Integer)
    tz: Mapped[str] = mapped_column(String(64))
    monitors: Mapped[str] = mapped_column(Text)  # the watching monitors' ids, sorted
    filled_from: Mapped[date | None] = mapped_column(Date)  # the first stored day
    filled_until: Mapped[date | None] = mapped_column(Date)  # the last stored day
    # The running totals at filled_until (as its day row has them): a period up to the last
    # stored day needs no day row at its end.
    run_up_s: Mapped[float] = mapped_column(Float, server_default=text("0"))
    run_down_s: Mapped[float] = mapped_column(Float, server_default=text("0"))
    run_unknown_s: Mapped[float] = mapped_column(Float, server_default=text("0"))
    run_paused_s: Mapped[float] = mapped_column(Float, server_default=text("0"))
    run_days: Mapped[int] = mapped_column(Integer, server_default=text("0"))
