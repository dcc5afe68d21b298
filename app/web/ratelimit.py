"""Rate limits kept in this process's memory (one server process; see the README)."""

from __future__ import annotations

import time
from collections import deque


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
