"""Scheduled results, folded: a row per monitor and UTC day instead of a row per check.

A plain success (ok, no state change, no warning, not a manual check) is most of what a
monitor produces and nobody opens one. The writer stores it here (`fold`), not in
check_results: per 5-minute bucket of the day, how many plain successes there were, how
many of them measured a latency and their mean latency (half floats, zlib: a few hundred
bytes a day), and the last `RECENT` of them as they were (time and latency) for the
terminal page's recent checks.

Any other scheduled result (a failure, error or warning, the result that changed the state)
is kept whole in its day's `kept` list (`Kept`: time, outcome, latency, diagnosis, detail,
steps as compact JSON, zlib), until the raw results' retention clears it (`forget_kept`): a
row each cost ~370 bytes with its indexes, an entry costs tens. An entry that repeats the one
before it (same outcome, diagnosis, detail and steps but for their timings: a monitor failing
the same way check after check) is stored as its time and timings only, and read back whole.
A day keeps at most MAX_KEPT (new entries are spliced into the packed text): past that, a day's
further results are rows. Manual checks stay raw check_results rows.

Readers: `plain_buckets` (the latency chart, the rollups), `kept_results` (the latency chart,
the rollups) and `recent_folded` (the terminal page). The writer holds the monitors' row
locks while it folds, so two batches never fold into the same row at once.
"""

from __future__ import annotations

import bisect
import json
import math
import struct
import zlib
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from itertools import chain
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.checks.result import pack_steps, unpack_steps
from app.config import get_settings
from app.db import dialect_of, driver_of, select_where_in, table_of
from app.monitoring.models import LatencyDay
from app.vocabulary import Outcome

BUCKET_S = 300
BUCKETS = 86400 // BUCKET_S
RECENT = 20  # plain successes kept as they were, per monitor and day
RECENT_DAYS = 2  # days whose `recent` is kept (the retention job clears older ones)
# Results kept per monitor and day (2 hours of failing at 60 s, ~2 KB packed): the list is read
# and compressed again at each batch, so past this a day's further results are rows, as they were.
MAX_KEPT = 120
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

    def __init__(self, raw: bytearray, recent: list[tuple[float, float]], kept: bytes | None = None) -> None:
        self.raw = raw
        self.recent = recent
        self.kept = kept  # the day's kept results, packed (`Kept.unpack` when read)

    @classmethod
    def empty(cls) -> Day:
        return cls(bytearray(_DAY.size), [])

    @classmethod
    def unpack(cls, buckets: bytes, recent: bytes | None, kept: bytes | None = None) -> Day:
        return cls(bytearray(zlib.decompress(buckets)), list(_ENTRY.iter_unpack(recent or b"")), kept)

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
        epoch = at.timestamp()
        at_count = 2 * (int(epoch % 86400) // BUCKET_S)  # its UTC day's bucket
        (count,) = _COUNT.unpack_from(self.raw, at_count)
        _COUNT.pack_into(self.raw, at_count, min(count + 1, 0xFFFF))
        if latency_ms is not None and math.isfinite(latency_ms):
            (n,) = _COUNT.unpack_from(self.raw, _TIMED_AT + at_count)
            (mean,) = _MEAN.unpack_from(self.raw, _MEANS_AT + at_count)
            _MEAN.pack_into(self.raw, _MEANS_AT + at_count, min((mean * n + latency_ms) / (n + 1), _MAX_MS))
            _COUNT.pack_into(self.raw, _TIMED_AT + at_count, min(n + 1, 0xFFFF))
        entry = (epoch, math.nan if latency_ms is None else latency_ms)
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


_KEPT_FIELDS = ("outcome", "diagnosis", "detail")


def _shape(entry: dict[str, Any]) -> tuple[Any, ...] | None:
    """What a repeat shares with the entry before it: all but the time and the timings (None:
    steps this encoding does not know, never compacted)."""
    steps = entry["steps"]
    if not all(isinstance(s, dict) and set(s) == {"step", "ok", "ms", "detail"} for s in steps):
        return None
    return (*(entry[k] for k in _KEPT_FIELDS), tuple((s["step"], s["ok"], s["detail"]) for s in steps))


class Kept:
    """A monitor's kept results of one day (dicts: checked_at as epoch seconds, outcome,
    latency_ms, diagnosis, detail, steps), oldest first. Packed as compact JSON, zlib: an entry
    [t, outcome, latency, diagnosis, detail, steps], or [t, latency, [step ms ...]] for one that
    repeats the entry before it."""

    def __init__(self, entries: list[dict[str, Any]]) -> None:
        self.entries = entries

    @classmethod
    def unpack(cls, raw: bytes | None) -> Kept:
        entries: list[dict[str, Any]] = []
        for e in json.loads(zlib.decompress(raw)) if raw else []:
            if len(e) == 3:  # a repeat: the one before with these times
                before = entries[-1]
                steps = [s | {"ms": ms} for s, ms in zip(before["steps"], e[2], strict=True)]
                entries.append(before | {"checked_at": e[0], "latency_ms": e[1], "steps": steps})
            else:
                t, outcome, latency, diagnosis, detail, steps = e
                entries.append(
                    {
                        "checked_at": t,
                        "outcome": outcome,
                        "latency_ms": latency,
                        "diagnosis": diagnosis,
                        "detail": detail,
                        "steps": unpack_steps(steps),
                    }
                )
        return cls(entries)

    @staticmethod
    def between(raw: bytes | None, t0: float, t1: float) -> Iterator[tuple[float, Any, Any, Any, Any]]:
        """(checked_at, outcome, latency, diagnosis, detail) of the entries checked in [t0, t1)
        (epoch seconds), without their steps and without a dict each: for who reads only
        outcomes and latencies (the hour rollups read every monitor's day each hour)."""
        outcome = diagnosis = detail = None
        for e in json.loads(zlib.decompress(raw)) if raw else []:
            if len(e) == 3:  # a repeat: the one before with these times
                t, latency = e[0], e[1]
            else:
                t, outcome, latency, diagnosis, detail, _steps = e
            if t0 <= t < t1:
                yield t, outcome, latency, diagnosis, detail

    @classmethod
    def append(
        cls, packed: bytes | None, results: list[dict[str, Any]], limit: int
    ) -> tuple[bytes | None, list[dict[str, Any]]]:
        """`packed` with these results (writer dicts, oldest first) added, up to `limit`
        entries; returns it and the results that did not fit. Results that come after the
        day's last entry (all but an agent's late buffer) are appended to the packed list
        itself, as text: the day's entries are neither made into dicts nor formatted again
        (at 119 entries, 67 us instead of 384 us a result)."""
        text = zlib.decompress(packed) if packed else b"[]"
        out: list[list[Any]] = json.loads(text)
        room = max(limit - len(out), 0)
        fits, rest = results[:room], results[room:]
        if not fits:
            return packed, rest
        if out and fits[0]["checked_at"].timestamp() < out[-1][0]:  # late: inserted in order
            day = cls.unpack(packed)
            for r in fits:
                day.add(r)
            return day.packed(), rest
        shape = _last_shape(out)
        added = []
        for r in fits:
            entry = _entry(r)
            mine = _shape(entry)
            added.append(_packed_entry(entry, repeat=mine is not None and mine == shape))
            shape = mine
        # The list's text with the new entries' text spliced in before its "]": the same bytes
        # as dumping the whole list, without formatting its entries again.
        tail = json.dumps(added, separators=(",", ":")).encode()[1:]
        return zlib.compress(text[:-1] + (b"," if out else b"") + tail, 6), rest

    def add(self, r: dict[str, Any]) -> None:
        entry = _entry(r)
        if self.entries and entry["checked_at"] < self.entries[-1]["checked_at"]:
            bisect.insort(self.entries, entry, key=lambda e: e["checked_at"])  # a late one
        else:
            self.entries.append(entry)

    def packed(self) -> bytes | None:
        if not self.entries:
            return None
        out: list[list[Any]] = []
        shape = None
        for e in self.entries:
            mine = _shape(e)
            out.append(_packed_entry(e, repeat=mine is not None and mine == shape))
            shape = mine
        return zlib.compress(json.dumps(out, separators=(",", ":")).encode(), 6)


def _entry(r: dict[str, Any]) -> dict[str, Any]:
    """A kept entry of a writer's result dict."""
    return {
        "checked_at": round(r["checked_at"].timestamp(), 6),
        "outcome": str(Outcome(r["outcome"])),
        "latency_ms": r["latency_ms"],
        "diagnosis": r["diagnosis"],
        "detail": r["detail"],
        "steps": [dict(s) for s in r["steps"]],
    }


def _packed_entry(e: dict[str, Any], *, repeat: bool) -> list[Any]:
    if repeat:
        return [e["checked_at"], e["latency_ms"], [s["ms"] for s in e["steps"]]]
    return [
        e["checked_at"],
        e["outcome"],
        e["latency_ms"],
        e["diagnosis"],
        e["detail"],
        pack_steps(e["steps"]),
    ]


def _last_shape(out: list[list[Any]]) -> tuple[Any, ...] | None:
    """The shape of a packed list's last entry: its last whole entry's (a repeat has the shape
    of the entry it repeats)."""
    for e in reversed(out):
        if len(e) != 3:
            return _shape({"outcome": e[1], "diagnosis": e[3], "detail": e[4], "steps": unpack_steps(e[5])})
    return None


def _day_start(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


async def store_folded(
    session: AsyncSession, results: list[dict[str, Any]], plain: list[int], kept: list[int]
) -> list[dict[str, Any]]:
    """The writer's results (dicts of check_results columns) minus those folded: the plain
    successes (indexes `plain`) and the other scheduled results (`kept`); the rest (manual
    checks) are stored as rows. With keep_plain_results every result stays a row, a plain success
    without its steps (same every time)."""
    if get_settings().keep_plain_results:
        chosen = set(plain)
        return [{**r, "steps": []} if i in chosen else r for i, r in enumerate(results)]
    overflow = await fold(session, [results[i] for i in plain], [results[i] for i in kept])
    folded = set(plain) | set(kept)
    return [r for i, r in enumerate(results) if i not in folded] + overflow


async def fold(
    session: AsyncSession, plain: list[dict[str, Any]], kept: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Fold these plain successes (monitor_id, checked_at, latency_ms) and these other results
    (every check_results column) into their days' rows. Returns those of
    the latter whose day holds MAX_KEPT already (to be stored as rows)."""
    by_day: dict[tuple[int, date], tuple[list[dict[str, Any]], list[dict[str, Any]]]] = defaultdict(
        lambda: ([], [])
    )
    for which, results in enumerate((plain, kept)):
        for r in results:
            by_day[(r["monitor_id"], r["checked_at"].astimezone(UTC).date())][which].append(r)
    if not by_day:
        return []
    if dialect_of(session) == "postgresql":
        return await _fold_pg(session, by_day)
    t = table_of(LatencyDay)
    days = {d for _m, d in by_day}
    query = select(t.c.monitor_id, t.c.day, t.c.buckets, t.c.recent, t.c.kept).where(t.c.day.in_(days))
    stored = {
        (row.monitor_id, row.day): row
        for row in await select_where_in(session, query, t.c.monitor_id, {m for m, _d in by_day})
    }
    rows, overflow = [], []
    for (monitor_id, day), (plain_here, kept_here) in sorted(by_day.items()):
        row = stored.get((monitor_id, day))
        folded = Day.unpack(row.buckets, row.recent) if row is not None else Day.empty()
        for r in plain_here:
            folded.add(r["checked_at"], r["latency_ms"])
        packed_kept = row.kept if row is not None else None
        if kept_here:
            packed_kept, over = Kept.append(packed_kept, kept_here, MAX_KEPT)
            overflow += over
        rows.append({"monitor_id": monitor_id, "day": day, **folded.packed(), "kept": packed_kept})
    stmt = sqlite_insert(t)
    stmt = stmt.on_conflict_do_update(
        index_elements=["monitor_id", "day"],
        set_={"buckets": stmt.excluded.buckets, "recent": stmt.excluded.recent, "kept": stmt.excluded.kept},
    )
    await session.execute(stmt, rows)
    return overflow


# PostgreSQL: the days are read and written in one statement each, whatever the batch's size
# (the upsert was one execution per day: most of the database's work per check). `kept` is
# read only for the days that get kept results, and written only when it changed (NULL in
# the upsert: the stored one stays; the writer never clears it).
_PG_READ_DAYS = """
SELECT monitor_id, day, buckets, recent, CASE WHEN monitor_id = ANY($3::integer[]) THEN kept END
FROM latency_days WHERE monitor_id = ANY($1::integer[]) AND day = ANY($2::date[])
"""
_PG_WRITE_DAYS = """
INSERT INTO latency_days (monitor_id, day, buckets, recent, kept)
SELECT * FROM unnest($1::integer[], $2::date[], $3::bytea[], $4::bytea[], $5::bytea[])
ON CONFLICT (monitor_id, day) DO UPDATE SET
    buckets = EXCLUDED.buckets, recent = EXCLUDED.recent, kept = COALESCE(EXCLUDED.kept, latency_days.kept)
"""


async def _fold_pg(
    session: AsyncSession, by_day: dict[tuple[int, date], tuple[list[dict[str, Any]], list[dict[str, Any]]]]
) -> list[dict[str, Any]]:
    driver = await driver_of(session)
    with_kept = sorted({m for (m, _d), (_p, k) in by_day.items() if k})
    found = await driver.fetch(
        _PG_READ_DAYS, sorted({m for m, _d in by_day}), sorted({d for _m, d in by_day}), with_kept
    )
    stored = {(row[0], row[1]): row for row in found}
    ids: list[int] = []
    days: list[date] = []
    buckets: list[bytes] = []
    recents: list[bytes] = []
    kepts: list[bytes | None] = []
    overflow: list[dict[str, Any]] = []
    for key, (plain_here, kept_here) in sorted(by_day.items()):
        row = stored.get(key)
        folded = Day.unpack(row[2], row[3]) if row is not None else Day.empty()
        for r in plain_here:
            folded.add(r["checked_at"], r["latency_ms"])
        packed_kept = None
        if kept_here:
            packed_kept, over = Kept.append(row[4] if row is not None else None, kept_here, MAX_KEPT)
            overflow += over
        ids.append(key[0])
        days.append(key[1])
        packed = folded.packed()
        buckets.append(packed["buckets"])
        recents.append(packed["recent"])
        kepts.append(packed_kept)
    await driver.execute(_PG_WRITE_DAYS, ids, days, buckets, recents, kepts)
    return overflow


Days = dict[tuple[int, date], "Day"]  # folded days by (monitor, day)


async def _days(session: AsyncSession, monitor_ids: list[int] | None, first: date, last: date) -> Days:
    """The folded days of these monitors (None: of every monitor) from `first` to `last`, with
    their kept results still packed."""
    t = table_of(LatencyDay)
    query = select(t.c.monitor_id, t.c.day, t.c.buckets, t.c.recent, t.c.kept).where(
        t.c.day >= first, t.c.day <= last
    )
    rows = (
        (await session.execute(query)).all()
        if monitor_ids is None
        else await select_where_in(session, query, t.c.monitor_id, monitor_ids)
    )
    return {(row.monitor_id, row.day): Day.unpack(row.buckets, row.recent, row.kept) for row in rows}


def _unpacked_kept(days: Days) -> dict[tuple[int, date], Kept]:
    return {key: Kept.unpack(day.kept) for key, day in days.items() if day.kept is not None}


async def _kept_days(
    session: AsyncSession, monitor_ids: list[int] | None, first: date, last: date
) -> dict[tuple[int, date], bytes]:
    """The kept results of these monitors (None: of every monitor) from `first` to `last`,
    packed."""
    t = table_of(LatencyDay)
    query = select(t.c.monitor_id, t.c.day, t.c.kept).where(
        t.c.day >= first, t.c.day <= last, t.c.kept.is_not(None)
    )
    rows = (
        (await session.execute(query)).all()
        if monitor_ids is None
        else await select_where_in(session, query, t.c.monitor_id, monitor_ids)
    )
    return {(row.monitor_id, row.day): row.kept for row in rows}


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


async def plain_days(session: AsyncSession, monitor_ids: list[int] | None, first: date, last: date) -> Days:
    """The folded days of these monitors (None: of every monitor) from `first` to `last`, read
    once for several of `plain_buckets`, `kept_results` and `recent_folded` (the terminal page's,
    the hour rollups')."""
    return await _days(session, monitor_ids, first, last) if monitor_ids != [] else {}


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
    step = timedelta(seconds=BUCKET_S)
    for (monitor_id, day), folded in sorted(
        (days if days is not None else await _days(session, monitor_ids, first, last)).items()
    ):
        base = _day_start(day)
        # Only the buckets starting in [start, end): an hour's rollup reads 12 of a day's 288
        # (of every monitor, for every hour it rolls up).
        lo = max(0, -((base - start) // step))
        hi = min(len(folded.counts), -((base - end) // step))
        counts, timed, means = folded.counts, folded.timed, folded.means
        for b in range(lo, hi):
            if count := counts[b]:
                found.append(PlainBucket(monitor_id, base + b * step, count, timed[b], means[b]))
    return sorted(found, key=lambda p: (p.start, p.monitor_id))


async def first_day(session: AsyncSession) -> datetime | None:
    """The start of the first day with a folded success (where rollups begin, with raw rows)."""
    day = await session.scalar(select(func.min(table_of(LatencyDay).c.day)))
    return _day_start(day) if day is not None else None


@dataclass
class FoldedResult:
    """A folded result as the terminal page lists it (the attributes of a CheckResult it reads)."""

    monitor_id: int
    checked_at: datetime
    latency_ms: float | None
    outcome: str = "ok"
    diagnosis: str | None = None
    detail: str | None = None
    steps: list[Any] = field(default_factory=list)  # a plain success's are not kept
    manual: bool = False
    due_at: datetime | None = None


def _result(monitor_id: int, e: dict[str, Any]) -> FoldedResult:
    return FoldedResult(
        monitor_id,
        datetime.fromtimestamp(e["checked_at"], UTC),
        e["latency_ms"],
        e["outcome"],
        e["diagnosis"],
        e["detail"],
        e["steps"],
    )


async def kept_results(
    session: AsyncSession,
    monitor_ids: list[int] | None,
    start: datetime,
    end: datetime,
    days: Days | None = None,
) -> list[FoldedResult]:
    """The kept results checked in [start, end) of these monitors (None: of every monitor),
    without their steps (who asks reads outcomes and latencies); from `days` when they were
    read (`plain_days`, covering the period)."""
    if monitor_ids == [] or end <= start:
        return []
    first, last = start.astimezone(UTC).date(), end.astimezone(UTC).date()
    if days is None:
        packed = await _kept_days(session, monitor_ids, first, last)
    else:
        within = _within(days, monitor_ids, first, last).items()
        packed = {key: day.kept for key, day in within if day.kept is not None}
    t0, t1 = start.timestamp(), end.timestamp()
    found = [
        FoldedResult(monitor_id, datetime.fromtimestamp(t, UTC), latency, outcome, diagnosis, detail)
        for (monitor_id, _day), raw in packed.items()
        for t, outcome, latency, diagnosis, detail in Kept.between(raw, t0, t1)
    ]
    return sorted(found, key=lambda r: (r.checked_at, r.monitor_id))


async def recent_folded(
    session: AsyncSession,
    monitor_ids: list[int],
    now: datetime,
    limit: int = RECENT,
    days: Days | None = None,
) -> list[FoldedResult]:
    """The newest folded results of these monitors (up to `limit`) of the last RECENT_DAYS
    days, newest first: plain successes as they were (from `days` when they were read:
    `plain_days`, covering the last RECENT_DAYS), and kept results."""
    if not monitor_ids:
        return []
    today = now.astimezone(UTC).date()
    first = today - timedelta(days=RECENT_DAYS - 1)
    if days is None:
        days = await _days(session, monitor_ids, first, today)
    else:
        days = _within(days, monitor_ids, first, today)
    found = [
        FoldedResult(monitor_id, datetime.fromtimestamp(t, UTC), None if math.isnan(ms) else ms)
        for (monitor_id, _day), folded in days.items()
        for t, ms in folded.recent
    ]
    for (monitor_id, _day), kept in _unpacked_kept(days).items():
        found += [_result(monitor_id, e) for e in kept.entries[-limit:]]
    return sorted(found, key=lambda r: r.checked_at, reverse=True)[:limit]


async def forget_recent(session: AsyncSession, today: date) -> None:
    """Clear the `recent` of days the terminal page no longer reads (they were its bytes)."""
    t = table_of(LatencyDay)
    await session.execute(
        update(t)
        .where(t.c.day <= today - timedelta(days=RECENT_DAYS), t.c.recent.is_not(None))
        .values(recent=None)
    )


async def forget_kept(session: AsyncSession, older_than: datetime) -> None:
    """Clear the kept results of the days wholly before `older_than` (the raw results'
    retention: they are raw results)."""
    t = table_of(LatencyDay)
    last = older_than.astimezone(UTC).date() - timedelta(days=1)
    await session.execute(update(t).where(t.c.day <= last, t.c.kept.is_not(None)).values(kept=None))
