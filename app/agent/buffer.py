"""The agent's local queue: one SQLite file in its state directory (`agent.db`).

It holds:

* the **instance** id (random, made once: a reinstalled agent, i.e. a new state directory,
  gets a new one and starts its sequence afresh) and the **next seq**;
* the **last config** (JSON and ETag), so an agent restarted while the server is down keeps
  checking;
* the **pending results** in seq order, until the server acknowledges them (`ack`: every
  seq <= the server's `last_seq` is deleted);
* the **dropped** count: results removed unsent because the queue was full (`max_count`,
  oldest first) or too old (`max_age_s`), or refused by the server one by one. The agent
  reports it in its heartbeats. It only grows, for the life of the instance.

SQLite runs on one thread of its own (the event loop never waits on the disk), in WAL mode
with synchronous=NORMAL: a power cut may lose the last few results, never corrupt the file.
A second agent on the same state directory is refused (an flock on `agent.lock`, released by
the kernel however the process ends).
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_AGE_S = 24 * 3600
MAX_COUNT = 100_000
_AGE_PRUNE_EVERY_S = 60.0  # the age bound is enforced at most this often (a full scan)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS results (
    seq INTEGER PRIMARY KEY,
    monitor_id INTEGER NOT NULL,
    made_at REAL NOT NULL,
    body TEXT NOT NULL
);
"""


class StateDirBusy(RuntimeError):
    """Another agent process holds this state directory."""


@dataclass(frozen=True, slots=True)
class Pending:
    """One buffered result: its seq and its JSON text with the seq in it."""

    seq: int
    monitor_id: int
    json: str


class Buffer:
    """The queue. Open it, use it from one event loop, close it."""

    def __init__(
        self,
        state_dir: Path,
        *,
        max_age_s: float = MAX_AGE_S,
        max_count: int = MAX_COUNT,
        clock: Callable[[], float] = time.time,
    ):
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / "agent.db"
        self.max_age_s = max_age_s
        self.max_count = max_count
        self.clock = clock
        self.instance = ""
        self.next_seq = 1
        self.pending = 0  # results waiting for the server
        self.dropped = 0
        self._conn: sqlite3.Connection | None = None
        self._lock_fd: int | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._last_age_prune = 0.0

    # --- running on the buffer's own thread

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            raise RuntimeError("the buffer is not open")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("the buffer is not open")
        return self._conn

    def _write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            value = work(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return value

    @staticmethod
    def _set_meta(conn: sqlite3.Connection, **values: object) -> None:
        conn.executemany(
            "INSERT INTO meta (key, value) VALUES (?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [(k, str(v)) for k, v in values.items()],
        )

    # --- open and close

    async def open(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="agent-buffer")
        try:
            await self._run(self._open)
        except BaseException:
            self._executor.shutdown(wait=True)
            self._executor = None
            raise

    def _open(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.state_dir / "agent.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StateDirBusy(
                f"another termpulse agent is using {self.state_dir}: stop it, or give this one "
                "its own --state-dir"
            ) from None
        self._lock_fd = fd
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._conn = conn
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.executescript(_SCHEMA)
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        instance = meta.get("instance") or secrets.token_hex(16)
        highest = conn.execute("SELECT MAX(seq) FROM results").fetchone()[0] or 0
        self.next_seq = max(int(meta.get("next_seq", "1")), highest + 1)
        self.dropped = int(meta.get("dropped", "0"))
        self.pending = conn.execute("SELECT COUNT(*) FROM results").fetchone()[0]
        if "instance" not in meta:
            self._write(lambda c: self._set_meta(c, instance=instance, next_seq=self.next_seq, dropped=0))
            log.info("agent instance %s created in %s", instance, self.state_dir)
        self.instance = instance

    async def close(self) -> None:
        if self._executor is None:
            return
        await self._run(self._close)
        self._executor.shutdown(wait=True)
        self._executor = None

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    # --- results

    async def add(self, results: Sequence[dict[str, Any]]) -> list[int]:
        """Give each result the next seq and keep it; returns the seqs. Enforces the bounds."""
        return await self._run(self._add, list(results))

    def _add(self, results: list[dict[str, Any]]) -> list[int]:
        now = self.clock()
        first = self.next_seq
        rows = [
            (first + i, int(r["monitor_id"]), now, json.dumps(r, separators=(",", ":")))
            for i, r in enumerate(results)
        ]
        over = max(0, self.pending + len(rows) - self.max_count)

        def work(conn: sqlite3.Connection) -> int:
            conn.executemany("INSERT INTO results (seq, monitor_id, made_at, body) VALUES (?, ?, ?, ?)", rows)
            removed = 0
            if over:
                removed = conn.execute(
                    "DELETE FROM results WHERE seq IN (SELECT seq FROM results ORDER BY seq LIMIT ?)", (over,)
                ).rowcount
            self._set_meta(conn, next_seq=first + len(rows), dropped=self.dropped + removed)
            return removed

        removed = self._write(work)
        self.next_seq = first + len(rows)
        self.pending += len(rows) - removed
        self._count_dropped(removed, "the queue is full")
        if now - self._last_age_prune >= _AGE_PRUNE_EVERY_S:
            self._prune_age(now)
        return [row[0] for row in rows]

    def _count_dropped(self, n: int, why: str) -> None:
        if n:
            self.dropped += n
            log.warning("dropped the %d oldest unsent results: %s (%d dropped in all)", n, why, self.dropped)

    async def prune_age(self) -> int:
        """Drop results older than max_age_s now (add() does it at most once a minute)."""
        return await self._run(self._prune_age, self.clock())

    def _prune_age(self, now: float) -> int:
        self._last_age_prune = now
        cutoff = now - self.max_age_s

        def work(conn: sqlite3.Connection) -> int:
            removed = conn.execute("DELETE FROM results WHERE made_at < ?", (cutoff,)).rowcount
            if removed:
                self._set_meta(conn, dropped=self.dropped + removed)
            return removed

        removed = self._write(work)
        self.pending -= removed
        self._count_dropped(removed, f"older than {self.max_age_s:g} s")
        return removed

    async def batch(self, limit: int, max_bytes: int) -> list[Pending]:
        """The oldest pending results, at most `limit` and about `max_bytes` of JSON (at least one)."""
        return await self._run(self._batch, limit, max_bytes)

    def _batch(self, limit: int, max_bytes: int) -> list[Pending]:
        out: list[Pending] = []
        size = 0
        cursor = self.conn.execute("SELECT seq, monitor_id, body FROM results ORDER BY seq LIMIT ?", (limit,))
        for seq, monitor_id, body in cursor:
            text = f'{{"seq":{seq},{body[1:]}' if body != "{}" else f'{{"seq":{seq}}}'
            size += len(text) + 1
            if out and size > max_bytes:
                break
            out.append(Pending(seq, monitor_id, text))
        cursor.close()
        return out

    async def ack(self, last_seq: int) -> int:
        """The server has every result up to `last_seq`: delete them. Returns how many."""
        return await self._run(self._ack, last_seq)

    def _ack(self, last_seq: int) -> int:
        bump = last_seq >= self.next_seq

        def work(conn: sqlite3.Connection) -> int:
            deleted = conn.execute("DELETE FROM results WHERE seq <= ?", (last_seq,)).rowcount
            if bump:
                self._set_meta(conn, next_seq=last_seq + 1)
            return deleted

        deleted = self._write(work)
        self.pending -= deleted
        if bump:
            # The server has seen seqs this queue never gave (its state directory was restored
            # from an older copy): continue above them, or the server would take new results
            # for duplicates.
            log.warning(
                "the server has results up to seq %d but this agent was at %d: continuing from %d",
                last_seq,
                self.next_seq - 1,
                last_seq + 1,
            )
            self.next_seq = last_seq + 1
        return deleted

    async def drop(self, seqs: Iterable[int], why: str) -> int:
        """Remove these results unsent (the server refuses them), counting them as dropped."""
        return await self._run(self._drop_where, "seq", sorted(set(seqs)), why)

    async def drop_monitors_except(self, keep: Iterable[int], why: str) -> int:
        """Remove unsent results of every monitor not in `keep`, counting them as dropped."""
        return await self._run(self._drop_monitors_except, set(keep), why)

    def _drop_monitors_except(self, keep: set[int], why: str) -> int:
        present = [
            m for (m,) in self.conn.execute("SELECT DISTINCT monitor_id FROM results") if m not in keep
        ]
        return self._drop_where("monitor_id", present, why)

    def _drop_where(self, column: str, values: list[int], why: str) -> int:
        if not values:
            return 0

        def work(conn: sqlite3.Connection) -> int:
            removed = 0
            for i in range(0, len(values), 500):
                chunk = values[i : i + 500]
                marks = ",".join("?" * len(chunk))
                removed += conn.execute(f"DELETE FROM results WHERE {column} IN ({marks})", chunk).rowcount
            if removed:
                self._set_meta(conn, dropped=self.dropped + removed)
            return removed

        removed = self._write(work)
        self.pending -= removed
        if removed:
            self.dropped += removed
            log.warning("dropped %d unsent results: %s (%d dropped in all)", removed, why, self.dropped)
        return removed

    # --- the last config

    async def save_config(self, config: dict[str, Any], etag: str | None) -> None:
        text = json.dumps(config, separators=(",", ":"))
        await self._run(self._write, lambda c: self._set_meta(c, config=text, config_etag=etag or ""))

    async def load_config(self) -> tuple[dict[str, Any], str | None] | None:
        return await self._run(self._load_config)

    def _load_config(self) -> tuple[dict[str, Any], str | None] | None:
        meta = dict(
            self.conn.execute("SELECT key, value FROM meta WHERE key IN ('config', 'config_etag')").fetchall()
        )
        if "config" not in meta:
            return None
        try:
            config = json.loads(meta["config"])
        except ValueError:
            log.warning("the saved config in %s is unreadable: waiting for the server's", self.path)
            return None
        return config, meta.get("config_etag") or None
