"""Validation of maintenance windows and trading hours: one definition for the API and the form."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from app.inventory.schemas import choice, printable
from app.windows.models import SCOPES
from app.windows.timecalc import MAX_DURATION_MIN, WEEKDAYS, parse_hhmm, weekday_index, zone


def _blank_to_none(value: object) -> object:
    if isinstance(value, str):
        return value.strip() or None
    return value


class WindowIn(BaseModel):
    """A maintenance window to create.

    One-off: ``starts_at`` and ``ends_at``. Weekly: ``weekdays``, ``start_time`` (HH:MM, the
    store's local time) and ``duration_minutes``; ``starts_at``/``ends_at`` then optionally
    bound the series. A time without an offset is local time: the store's zone (a region's
    or the fleet's, when all their stores share one; else UTC)."""

    model_config = ConfigDict(str_strip_whitespace=True, extra="ignore")
    _printable = field_validator("*")(printable)

    scope: str = Field("store", description="store, region or fleet")
    store: str | None = Field(None, description="store code (scope store)")
    region: str | None = Field(None, description="region name (scope region)")
    title: str = Field(min_length=1, max_length=200)
    reason: str = Field("", max_length=2000)
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    weekdays: list[str] | None = Field(None, description="weekly: mon, tue, wed, thu, fri, sat, sun")
    start_time: str | None = Field(None, description="weekly: local start time, HH:MM")
    duration_minutes: int | None = Field(None, ge=1, le=MAX_DURATION_MIN, description="weekly")
    timezone: str | None = Field(
        None,
        description="one-off: the zone of starts_at/ends_at given without an offset (default: the store's)",
    )

    _blanks = field_validator(
        "store", "region", "starts_at", "ends_at", "start_time", "duration_minutes", "timezone", mode="before"
    )(_blank_to_none)

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str | None) -> str | None:
        if value is not None:
            zone(value)  # ValueError names it
        return value

    _scope = field_validator("scope", mode="before")(choice(SCOPES, "store"))

    @field_validator("weekdays", mode="before")
    @classmethod
    def _weekdays(cls, value: object) -> list[str] | None:
        if value is None or value == "":
            return None
        items = value.replace(",", " ").split() if isinstance(value, str) else value
        if not isinstance(items, list):
            raise ValueError("a list of weekdays (mon ... sun)")
        days = {weekday_index(str(item)) for item in items}  # ValueError names a bad one
        return [WEEKDAYS[d] for d in sorted(days)] or None

    @field_validator("start_time")
    @classmethod
    def _start_time(cls, value: str | None) -> str | None:
        if value is not None:
            parse_hhmm(value)
        return value

    @model_validator(mode="after")
    def _shape(self) -> WindowIn:
        if self.scope == "store" and not self.store:
            raise ValueError("store: which store? (its code)")
        if self.scope == "region" and not self.region:
            raise ValueError("region: which region?")
        if self.weekdays:
            if self.start_time is None:
                raise ValueError("start_time: a weekly window needs its local start time (HH:MM)")
            if self.duration_minutes is None:
                raise ValueError("duration_minutes: a weekly window needs its duration in minutes")
        else:
            if self.start_time is not None or self.duration_minutes is not None:
                raise ValueError("weekdays: a weekly window needs at least one weekday")
            if self.starts_at is None:
                raise ValueError("starts_at: when does it start?")
            if self.ends_at is None:
                raise ValueError("ends_at: when does it end?")
        a, b = self.starts_at, self.ends_at
        if a is not None and b is not None and (a.tzinfo is None) == (b.tzinfo is None) and b <= a:
            raise ValueError("ends_at: must be after the start")  # mixed: checked once both are UTC
        return self

    @property
    def weekly(self) -> bool:
        return bool(self.weekdays)

    @classmethod
    def cross_field_problems(cls, raw: Mapping[str, object]) -> dict[str, str]:
        """The order of start and end, when another field failed and the model checks did not run."""
        try:
            a = datetime.fromisoformat(str(raw.get("starts_at") or ""))
            b = datetime.fromisoformat(str(raw.get("ends_at") or ""))
        except ValueError:
            return {}
        if (a.tzinfo is None) == (b.tzinfo is None) and b <= a:
            return {"ends_at": "must be after the start"}
        return {}


class DayHours(BaseModel):
    opens: str = Field(description="HH:MM, local")
    closes: str = Field(description="HH:MM, local; at or before opens: closes after midnight")

    @field_validator("opens", "closes")
    @classmethod
    def _time(cls, value: str) -> str:
        parse_hhmm(value)
        return value


class TradingHoursIn(BaseModel):
    """A store's trading hours per weekday (mon ... sun). A weekday left out, or null, is
    closed all day; ``days`` null clears the trading hours (always trading)."""

    days: dict[str, DayHours | None] | None

    @field_validator("days", mode="before")
    @classmethod
    def _days(cls, value: Any) -> Any:
        if isinstance(value, dict):
            keys = [str(k) for k in value]
            for key in keys:
                weekday_index(key)  # ValueError names a bad one
            return {WEEKDAYS[weekday_index(str(k))]: v for k, v in value.items()}
        return value

    def minutes(self) -> dict[int, tuple[int, int] | None] | None:
        """Per weekday (0 = Monday) (opens, closes) in minutes, None when closed; None: not set."""
        if self.days is None:
            return None
        out: dict[int, tuple[int, int] | None] = {d: None for d in range(7)}
        for key, hours in self.days.items():
            if hours is not None:
                out[weekday_index(key)] = (parse_hhmm(hours.opens), parse_hhmm(hours.closes))
        return out
