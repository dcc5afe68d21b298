"""The time arithmetic of maintenance windows and trading hours, as pure functions.

Local times are wall-clock times in a store's time zone (zoneinfo):

* a weekly window starts on each of its weekdays at its local start time and lasts its
  duration: "Sunday 22:00 for 8 hours" is 8 hours, ending at 06:00 local time on Monday
  (07:00 or 05:00 on the night the clocks change: the work takes as long that night);
* a local time the clocks skip (02:30 on the spring-forward night) is read with the offset
  before the change, i.e. it falls that much later (03:30 summer time); a local time the
  clocks repeat (02:30 on the fall-back night) is its first occurrence;
* trading hours: open from ``opens`` to ``closes`` on that weekday; ``closes`` at or before
  ``opens`` closes after midnight (18:00-02:00: the night into the next day); equal times
  are open round the clock; a weekday without hours is closed all day.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
WEEKDAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MINUTES_PER_DAY = 24 * 60
MAX_DURATION_MIN = 7 * MINUTES_PER_DAY
_HHMM = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")

Span = tuple[datetime, datetime]  # [start, end) in UTC
# Per weekday (0 = Monday): (opens, closes) in minutes after local midnight; None: closed all day.
Hours = Mapping[int, tuple[int, int] | None]


def zone(name: str) -> ZoneInfo:
    """The time zone called `name`; ValueError naming it when there is none."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r} (use an IANA name such as Europe/Amsterdam)") from None


def safe_zone(name: str | None) -> ZoneInfo:
    """A stored store's zone; UTC when it is missing or no longer known."""
    try:
        return zone(name or "UTC")
    except ValueError:
        return ZoneInfo("UTC")


def parse_hhmm(value: str) -> int:
    """'HH:MM' (24-hour) -> minutes after midnight; ValueError otherwise."""
    m = _HHMM.match(value.strip())
    if m is None:
        raise ValueError(f"{value!r} is not a time of day as HH:MM (00:00 to 23:59)")
    return int(m.group(1)) * 60 + int(m.group(2))


def hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def weekday_index(value: str | int) -> int:
    """'mon'/'Monday'/0 -> 0; ValueError for anything else."""
    if isinstance(value, int):
        if 0 <= value <= 6:
            return value
        raise ValueError(f"weekday {value} is not 0 (Monday) to 6 (Sunday)")
    key = value.strip().lower()[:3]
    if key in WEEKDAYS and WEEKDAY_NAMES[WEEKDAYS.index(key)].lower().startswith(value.strip().lower()):
        return WEEKDAYS.index(key)
    raise ValueError(f"unknown weekday {value!r} (use mon, tue, wed, thu, fri, sat, sun)")


def weekday_mask(days: Iterable[str | int]) -> int:
    mask = 0
    for day in days:
        mask |= 1 << weekday_index(day)
    return mask


def mask_days(mask: int) -> list[str]:
    return [WEEKDAYS[i] for i in range(7) if mask & (1 << i)]


def local_instant(day: date, minute: int, tz: ZoneInfo) -> datetime:
    """The UTC instant of `minute` minutes after midnight on `day`, wall-clock in `tz`.

    `minute` may exceed a day (an end time past midnight). Skipped local times take the
    offset before the change, repeated ones their first occurrence (fold=0)."""
    naive = datetime(day.year, day.month, day.day) + timedelta(minutes=minute)
    return naive.replace(tzinfo=tz, fold=0).astimezone(UTC)


def weekly_span(day: date, start_min: int, duration_min: int, tz: ZoneInfo) -> Span:
    """The occurrence of a weekly window starting on local `day`."""
    start = local_instant(day, start_min, tz)
    return start, start + timedelta(minutes=duration_min)


def weekly_occurrence(
    at: datetime, tz: ZoneInfo, weekdays: int, start_min: int, duration_min: int
) -> Span | None:
    """The occurrence of a weekly window covering instant `at` (the one ending last when
    several overlap), or None."""
    if duration_min <= 0 or not weekdays:
        return None
    today = at.astimezone(tz).date()
    best: Span | None = None
    # An occurrence covering `at` started today or up to its duration (+1 day for DST) ago.
    for back in range(duration_min // MINUTES_PER_DAY + 2):
        day = today - timedelta(days=back)
        if not weekdays & (1 << day.weekday()):
            continue
        start, end = weekly_span(day, start_min, duration_min, tz)
        if start <= at < end and (best is None or end > best[1]):
            best = (start, end)
    return best


def next_weekly_start(
    after: datetime, tz: ZoneInfo, weekdays: int, start_min: int, duration_min: int
) -> Span | None:
    """The first occurrence starting at or after `after`, or None (no weekdays)."""
    if not weekdays:
        return None
    today = after.astimezone(tz).date()
    for ahead in range(-1, 9):
        day = today + timedelta(days=ahead)
        if weekdays & (1 << day.weekday()):
            span = weekly_span(day, start_min, duration_min, tz)
            if span[0] >= after:
                return span
    return None


def clip(
    span: Span | None, bounds_start: datetime | None, bounds_end: datetime | None, at: datetime
) -> Span | None:
    """`span` cut to a series' bounds, if it still covers `at`."""
    if span is None:
        return None
    start = max(span[0], bounds_start) if bounds_start else span[0]
    end = min(span[1], bounds_end) if bounds_end else span[1]
    return (start, end) if start <= at < end else None


def is_trading(at: datetime, tz: ZoneInfo, hours: Hours) -> bool:
    """Whether a store with these trading hours is open at `at` (empty hours: always)."""
    if not hours:
        return True
    local = at.astimezone(tz)
    minute = local.hour * 60 + local.minute
    today = hours.get(local.weekday())
    if today is not None:
        opens, closes = today
        if opens == closes:
            return True
        if opens < closes and opens <= minute < closes:
            return True
        if closes < opens and minute >= opens:
            return True
    yesterday = hours.get((local.weekday() - 1) % 7)
    if yesterday is not None:
        opens, closes = yesterday
        if closes < opens and minute < closes:
            return True
    return False
