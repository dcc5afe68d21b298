"""Plain successes, folded: a row per monitor and UTC day instead of a row per check.

A plain success (ok, no state change, no warning, not a manual check) is most of what a
monitor produces and nobody opens one. The writer stores it here (`fold_plain`), not in
check_results: per 5-minute bucket of the day, how many plain successes there were, how
many of them measured a latency and their mean latency (half floats, zlib: a few hundred
bytes a day), and the last `RECENT` of them as they were (time and latency) for the
terminal page's recent checks. Everything else stays a raw check_results row.

Readers: `plain_buckets` (the latency chart, the hour rollups) and `recent_plain` (the
terminal page). The writer holds the monitors' row locks while it folds, so two batches
never fold into the same row at once.
"""

from __future__ import annotations

import bisect
import math
import struct
import zlib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from itertools import chain
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import get_settings
from app.db import dialect_of, select_where_in, table_of
from app.monitoring.models import LatencyDay

BUCKET_S = 300
BUCKETS = 86400 // BUCKET_S
RECENT = 20  # plain successes kept as they were, per monitor and day
RECENT_DAYS = 2  # days whose `recent` is kept (the retention job clears older ones)
_MAX_MS = 65504.0  # the largest half float
_DAY = struct.Struct(f"<{BUCKETS}H{BUCKETS}H{BUCKETS}e")  # count, with latency, mean latency
_ENTRY = struct.Struct("<df")  # checked_at (epoch seconds), latency (NaN: none)


_COUNT = struct.Struct("<H")
_MEAN = struct.Struct("<e")
_TIMED_AT, _MEANS_AT = 2 * BUCKETS, 4 * BUCKETS  # byte offsets of the second and third arrays


class Day:
    """One monitor's folded day: its buckets as the packed bytes (a success changes its bucket
    in place: the writer folds every plain success, so it never unpacks the whole day) and its
    recent plain successes (epoch seconds, latency ms or NaN), oldest first."""

    def __init__(self, raw: bytearray, recent: list[tuple[float, float]]) -> None:
        self.raw = raw
        self.recent = recent

    @classmethod
    def empty(cls) -> Day:
        return cls(bytearray(_DAY.size), [])

    @classmethod
    def unpack(cls, buckets: bytes, recent: bytes | None) -> Day:
        return cls(bytearray(zlib.decompress(buckets)), list(_ENTRY.iter_unpack(recent or b"")))

    @property
    def counts(self) -> list[int]:
        return list(struct.unpack_from(f"<{BUCKETS}H", self.raw, 0))

    @property
    def timed(self) -> list[int]:  # how many of them measured a latency
        return list(struct.unpack_from(f"<{BUCKETS}H", self.raw, _TIMED_AT))

    @property
    def means(self) -> list[float]:
        return list(struct.unpack_from(f"<{BUCKETS}e", self.raw, _MEANS_AT))

    def add(self, at: datetime, latency_ms: float | None) -> None:
        at_count = 2 * _bucket(at)
        (count,) = _COUNT.unpack_from(self.raw, at_count)
        _COUNT.pack_into(self.raw, at_count, min(count + 1, 0xFFFF))
        if latency_ms is not None and math.isfinite(latency_ms):
            (n,) = _COUNT.unpack_from(self.raw, _TIMED_AT + at_count)
            (mean,) = _MEAN.unpack_from(self.raw, _MEANS_AT + at_count)
            _MEAN.pack_into(self.raw, _MEANS_AT + at_count, min((mean * n + latency_ms) / (n + 1), _MAX_MS))
            _COUNT.pack_into(self.raw, _TIMED_AT + at_count, min(n + 1, 0xFFFF))
        entry = (at.timestamp(), math.nan if latency_ms is None else latency_ms)
        if self.recent and entry[0] < self.recent[-1][0]:
            bisect.insort(self.recent, entry)  # a late one (an agent's buffer)
        else:
            self.recent.append(entry)
        del self.recent[:-RECENT]

    def packed(self) -> dict[str, bytes]:
        return {
            # Level 1: a day of mostly equal buckets compresses about as well as at level 9, at
            # a tenth of the CPU (the writer packs one day per plain success).
            "buckets": zlib.compress(self.raw, 1),
            "recent": struct.pack("<" + "df" * len(self.recent), *chain.from_iterable(self.recent)),
        }


def _bucket(at: datetime) -> int:
    at = at.astimezone(UTC)
    return (at.hour * 3600 + at.minute * 60 + at.second) // BUCKET_S


def _day_start(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


async def store_plain(
    session: AsyncSession, results: list[dict[str, Any]], plain: list[int]
) -> list[dict[str, Any]]:
    """The writer's results (dicts of check_results columns) minus the plain successes among
    them (indexes `plain`), which are folded; the rest are stored as rows. With
    keep_plain_results, plain successes stay rows, without their steps (same every time)."""
    chosen = set(plain)
    if get_settings().keep_plain_results:
        return [{**r, "steps": []} if i in chosen else r for i, r in enumerate(results)]
    await fold_plain(session, (results[i] for i in plain))
    return [r for i, r in enumerate(results) if i not in chosen]


async def fold_plain(session: AsyncSession, plain: Iterable[dict[str, Any]]) -> None:
    """Fold these plain successes (monitor_id, checked_at, latency_ms) into their days' rows."""
    by_day: dict[tuple[int, date], list[dict[str, Any]]] = defaultdict(list)
    for r in plain:
        by_day[(r["monitor_id"], r["checked_at"].astimezone(UTC).date())].append(r)
    if not by_day:
        return
    t = table_of(LatencyDay)
    days = {d for _m, d in by_day}
    query = select(t.c.monitor_id, t.c.day, t.c.buckets, t.c.recent).where(t.c.day.in_(days))
    stored = {
        (row.monitor_id, row.day): Day.unpack(row.buckets, row.recent)
        for row in await select_where_in(session, query, t.c.monitor_id, {m for m, _d in by_day})
    }
    rows = []
    for (monitor_id, day), results in sorted(by_day.items()):
        folded = stored.get((monitor_id, day)) or Day.empty()
        for r in results:
            folded.add(r["checked_at"], r["latency_ms"])
        rows.append({"monitor_id": monitor_id, "day": day, **folded.packed()})
    insert = pg_insert if dialect_of(session) == "postgresql" else sqlite_insert
    stmt = insert(t)
    stmt = stmt.on_conflict_do_update(
        index_elements=["monitor_id", "day"],
        set_={"buckets": stmt.excluded.buckets, "recent": stmt.excluded.recent},
    )
    await session.execute(stmt, rows)


Days = dict[tuple[int, date], "Day"]  # folded days by (monitor, day)


async def _days(session: AsyncSession, monitor_ids: list[int] | None, first: date, last: date) -> Days:
    """The folded days of these monitors (None: of every monitor) from `first` to `last`."""
    t = table_of(LatencyDay)
    query = select(t.c.monitor_id, t.c.day, t.c.buckets, t.c.recent).where(t.c.day >= first, t.c.day <= last)
    rows = (
        (await session.execute(query)).all()
        if monitor_ids is None
        else await select_where_in(session, query, t.c.monitor_id, monitor_ids)
    )
    return {(row.monitor_id, row.day): Day.unpack(row.buckets, row.recent) for row in rows}


@dataclass
class PlainBucket:
    monitor_id: int
    start: datetime
    count: int
    timed: int
    mean_ms: float

    @property
    def latency_sum_ms(self) -> float:
        return self.mean_ms * self.timed


async def plain_days(session: AsyncSession, monitor_ids: list[int], first: date, last: date) -> Days:
    """The folded days of these monitors from `first` to `last`, read once for several of
    `plain_buckets` and `recent_plain` (the terminal page's)."""
    return await _days(session, monitor_ids, first, last) if monitor_ids else {}


def _within(days: Days, monitor_ids: list[int] | None, first: date, last: date) -> Days:
    wanted = None if monitor_ids is None else set(monitor_ids)
    return {(m, d): v for (m, d), v in days.items() if first <= d <= last and (wanted is None or m in wanted)}


async def plain_buckets(
    session: AsyncSession,
    monitor_ids: list[int] | None,
    start: datetime,
    end: datetime,
    days: Days | None = None,
) -> list[PlainBucket]:
    """The non-empty 5-minute buckets of plain successes starting in [start, end) of these
    monitors (None: of every monitor), in time order; from `days` when they were read
    (`plain_days`, covering the period)."""
    if monitor_ids == [] or end <= start:
        return []
    first, last = start.astimezone(UTC).date(), end.astimezone(UTC).date()
    days = _within(days, monitor_ids, first, last) if days is not None else None
    found = []
    for (monitor_id, day), folded in sorted(
        (days if days is not None else await _days(session, monitor_ids, first, last)).items()
    ):
        base = _day_start(day)
        for b, count in enumerate(folded.counts):
            at = base + timedelta(seconds=b * BUCKET_S)
            if count and start <= at < end:
                found.append(PlainBucket(monitor_id, at, count, folded.timed[b], folded.means[b]))
    return sorted(found, key=lambda p: (p.start, p.monitor_id))


async def first_day(session: AsyncSession) -> datetime | None:
    """The start of the first day with a folded success (where rollups begin, with raw rows)."""
    day = await session.scalar(select(func.min(table_of(LatencyDay).c.day)))
    return _day_start(day) if day is not None else None


@dataclass
class PlainResult:
    """A plain success as the terminal page lists it (the attributes of a CheckResult it reads)."""

    monitor_id: int
    checked_at: datetime
    latency_ms: float | None
    outcome: str = "ok"
    diagnosis: str | None = None
    detail: str | None = None
    manual: bool = False
    due_at: datetime | None = None


async def recent_plain(
    session: AsyncSession,
    monitor_ids: list[int],
    now: datetime,
    limit: int = RECENT,
    days: Days | None = None,
) -> list[PlainResult]:
    """The newest plain successes of these monitors (up to `limit`), newest first; from `days`
    when they were read (`plain_days`, covering the last RECENT_DAYS)."""
    if not monitor_ids:
        return []
    today = now.astimezone(UTC).date()
    first = today - timedelta(days=RECENT_DAYS - 1)
    if days is None:
        days = await _days(session, monitor_ids, first, today)
    else:
        days = _within(days, monitor_ids, first, today)
    found = [
        PlainResult(monitor_id, datetime.fromtimestamp(t, UTC), None if math.isnan(ms) else ms)
        for (monitor_id, _day), folded in days.items()
        for t, ms in folded.recent
    ]
    return sorted(found, key=lambda r: r.checked_at, reverse=True)[:limit]


async def forget_recent(session: AsyncSession, today: date) -> None:
    """Clear the `recent` of days the terminal page no longer reads (they were its bytes)."""
    t = table_of(LatencyDay)
    await session.execute(
        update(t)
        .where(t.c.day <= today - timedelta(days=RECENT_DAYS), t.c.recent.is_not(None))
        .values(recent=None)
    )
