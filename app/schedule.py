"""Due times: a stable phase per monitor within its interval, so a fleet imported at once does
not fire together, and a next due time taken from the due time, not from "now" (no drift).

Pure functions with no database: the central scheduler (through app.inventory.monitors and
app.monitoring) and the store agent (app.agent) share them.
"""

from __future__ import annotations

import zlib
from datetime import UTC, datetime, timedelta

_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


def phase_ms(key: str, interval_s: int) -> int:
    return zlib.crc32(key.encode()) % (interval_s * 1000)


def first_due_at(now: datetime, interval_s: int, phase: int) -> datetime:
    """The first instant >= now that sits on this monitor's phase within its interval."""
    period_ms = interval_s * 1000
    elapsed_ms = int((now - _EPOCH).total_seconds() * 1000)
    slot = elapsed_ms - elapsed_ms % period_ms + phase
    if slot < elapsed_ms:
        slot += period_ms
    return _EPOCH + timedelta(milliseconds=slot)


def next_due_at(due: datetime, interval_s: int, phase: int, now: datetime) -> datetime:
    """The next due time after a run that was due at `due` (not after "now": no drift).

    Normally due + interval. A monitor that fell behind by more than an interval (worker
    down, overload) skips forward to its first slot after now, on its own phase, so a
    backlog never turns into a burst."""
    nxt = due + timedelta(seconds=interval_s)
    if nxt > now:
        return nxt
    return first_due_at(now + timedelta(milliseconds=1), interval_s, phase % (interval_s * 1000))
