"""Rate limits: in this process's memory (SQLite: one server process), or in the database
(PostgreSQL: every process and host serving the app counts the same hits).

`limiter(database, name, limit, window_s)` picks the one that fits; both answer `hit(key)`
(count a call if the limit lets it in) and `wait_s(key)` (would it?), with None for "go on" or
the seconds to wait.

In the database (the table rate_limit_counters): one row per key, the calls of its current
window, which starts with the first call after the last one ended (the lockout of an account
lasts its window from the first failure, as the message says); a call is one statement (an
upsert that counts it only while the window has room), a refusal one more (to say how long).
Ended windows are deleted at most once a minute per process. At most `limit` calls per window;
across a window's end, up to twice that within `window_s` (the in-memory MovingWindow is
exact). (The `limits` library keeps shared counters in Redis, Memcached, MongoDB or etcd only:
a service this app does not otherwise need.)
"""

from __future__ import annotations

import hashlib
import time
from collections import deque
from typing import Any, Protocol

from sqlalchemy import Float, Integer, String, delete, select, text
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, Database


class MovingWindow:
    """At most `limit` calls per key in any `window_s` seconds; a refused call is not counted.

    In memory, pruned as it goes: limits' MemoryStorage sweeps every key from a thread every
    10 ms, which with thousands of agents costs more than serving them."""

    def __init__(self, limit: int, window_s: float) -> None:
        self.limit = limit
        self.window_s = window_s
        self._calls: dict[str, deque[float]] = {}
        self._pruned = time.monotonic()

    def wait_s(self, key: str) -> float | None:
        """What `hit` would answer, without counting a call."""
        calls = self._calls.get(key)
        if not calls:
            return None
        now = time.monotonic()
        live = [t for t in calls if t > now - self.window_s]
        return live[0] + self.window_s - now if len(live) >= self.limit else None

    def hit(self, key: str) -> float | None:
        """None if the call may go on, else the seconds until the window lets one more in."""
        now = time.monotonic()
        cut = now - self.window_s
        calls = self._calls.get(key)
        if calls is None:
            calls = self._calls[key] = deque()
        while calls and calls[0] <= cut:
            calls.popleft()
        if len(calls) >= self.limit:
            return calls[0] + self.window_s - now
        calls.append(now)
        if now - self._pruned > self.window_s:  # forget the keys gone quiet
            self._pruned = now
            self._calls = {k: q for k, q in self._calls.items() if q and q[-1] > cut}
        return None


class Limiter(Protocol):
    limit: int
    window_s: float

    async def hit(self, key: str) -> float | None: ...

    async def wait_s(self, key: str) -> float | None: ...


class InProcess:
    """A MovingWindow behind the Limiter interface."""

    def __init__(self, limit: int, window_s: float) -> None:
        self.limit = limit
        self.window_s = window_s
        self.window = MovingWindow(limit, window_s)

    async def hit(self, key: str) -> float | None:
        return self.window.hit(key)

    async def wait_s(self, key: str) -> float | None:
        return self.window.wait_s(key)


class RateLimitCounter(Base):
    """One key's calls (a limit's name and what it counts) in its current window."""

    __tablename__ = "rate_limit_counters"

    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    hits: Mapped[int] = mapped_column(Integer)
    resets_at: Mapped[float] = mapped_column(Float)  # epoch seconds: the window's end


# Counts the call if the key's window has room (a window past its end starts again with this
# call); no row comes back for a refused call, which is not counted.
_HIT = text(
    """
    INSERT INTO rate_limit_counters AS c (key, hits, resets_at) VALUES (:key, 1, :resets_at)
    ON CONFLICT (key) DO UPDATE SET
        hits = CASE WHEN c.resets_at <= :now THEN 1 ELSE c.hits + 1 END,
        resets_at = CASE WHEN c.resets_at <= :now THEN :resets_at ELSE c.resets_at END
    WHERE c.resets_at <= :now OR c.hits < :limit
    RETURNING c.hits
    """
)
PRUNE_EVERY_S = 60.0


class InDatabase:
    """A window counter per key shared through the database (see the module)."""

    def __init__(self, database: Database, name: str, limit: int, window_s: float) -> None:
        # One statement, one round trip: no BEGIN/COMMIT around it (the upsert is atomic).
        self.engine = database.engine.execution_options(isolation_level="AUTOCOMMIT")
        self.name = name
        self.limit = limit
        self.window_s = window_s
        self._pruned = 0.0

    async def hit(self, key: str) -> float | None:
        now, key = time.time(), self._key(key)
        params = {"key": key, "now": now, "resets_at": now + self.window_s, "limit": self.limit}
        async with self.engine.connect() as connection:
            counted = (await connection.execute(_HIT, params)).first()
        await self._prune(now)
        if counted is not None:
            return None
        return await self._wait(now, key) or 0.1  # (the window ended meanwhile: soon)

    async def wait_s(self, key: str) -> float | None:
        return await self._wait(time.time(), self._key(key))

    async def _wait(self, now: float, key: str) -> float | None:
        query = select(RateLimitCounter.hits, RateLimitCounter.resets_at).where(RateLimitCounter.key == key)
        async with self.engine.connect() as connection:
            row = (await connection.execute(query)).first()
        if row is None or row.resets_at <= now or row.hits < self.limit:
            return None
        return float(row.resets_at - now)

    def _key(self, key: str) -> str:
        whole = f"{self.name}:{key}"
        if len(whole) <= 100:
            return whole
        return f"{self.name[:30]}:#{hashlib.sha256(key.encode()).hexdigest()}"  # a long key

    async def _prune(self, now: float) -> None:
        """Delete the windows that ended (at most once a minute per process)."""
        if now - self._pruned < PRUNE_EVERY_S:
            return
        self._pruned = now
        async with self.engine.connect() as connection:
            await connection.execute(delete(RateLimitCounter).where(RateLimitCounter.resets_at < now))


def limiter(database: Database | None, name: str, limit: int, window_s: float) -> Limiter:
    """Shared through PostgreSQL; in this process's memory on SQLite (one process serves it)."""
    if database is not None and database.dialect == "postgresql":
        return InDatabase(database, name, limit, window_s)
    return InProcess(limit, window_s)


def app_limiter(state: Any, name: str, limit: int, window_s: float) -> Limiter:
    """The app's limiter `name` (kept on app.state, made on first use over its database)."""
    limiters: dict[str, Limiter] | None = getattr(state, "rate_limiters", None)
    if limiters is None:
        limiters = state.rate_limiters = {}
    if name not in limiters:
        limiters[name] = limiter(getattr(state, "db", None), name, limit, window_s)
    return limiters[name]
