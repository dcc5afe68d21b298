"""Messages between the processes of one TermPulse (several web processes, `serve --workers N`
or several servers behind a proxy): nothing that one process knows and another needs is kept
in memory only.

PostgreSQL: NOTIFY, heard by one LISTEN connection per process (every process hears every
message, its own too). SQLite has one process: messages go to this process's relays directly.
A message is a JSON object; one longer than a NOTIFY may carry is sent in parts, in one
transaction (PostgreSQL delivers them together, in order).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import weakref
from collections.abc import Callable
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from app.db import Database

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], None]

PART_CHARS = 7000  # NOTIFY payloads stop at 8,000 bytes
RECONNECT_S = 1.0
APPLICATION_NAME = "termpulse relay"
_NOTIFY = text("SELECT pg_notify(:channel, :payload)")
_relays: weakref.WeakSet[Relay] = weakref.WeakSet()  # this process's, for in-process delivery


class Relay:
    """One process's end: `publish` sends to every process of this database, `subscribe`
    hears a channel. On PostgreSQL `start` opens the LISTEN connection (again after it is
    lost: `on_reconnect` handlers then run, as messages may have been missed meanwhile)."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self.url = str(database.engine.url)
        self.postgres = database.dialect == "postgresql"
        self._handlers: dict[str, list[Handler]] = {}
        self._on_reconnect: list[Callable[[], None]] = []
        self._parts: dict[str, list[str]] = {}
        self._task: asyncio.Task[None] | None = None
        self._listening: asyncio.Event | None = None
        self._conn: Any = None  # the LISTEN connection, while it is open
        self.reconnects = 0
        _relays.add(self)

    @property
    def listening(self) -> bool:
        return self._listening is not None and self._listening.is_set()

    def subscribe(self, channel: str, handler: Handler) -> None:
        new = channel not in self._handlers
        self._handlers.setdefault(channel, []).append(handler)
        if new and self._conn is not None and not self._conn.is_closed():  # listening already
            asyncio.get_running_loop().create_task(self._conn.add_listener(channel, self._on_notify))

    def on_reconnect(self, handler: Callable[[], None]) -> None:
        self._on_reconnect.append(handler)

    async def start(self) -> None:
        """Listening before it returns (PostgreSQL); nothing to do on SQLite. Idempotent."""
        if not self.postgres:
            return
        if self._task is None or self._task.done():
            self._listening = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._listen(), name="termpulse-relay")
        assert self._listening is not None
        await self._listening.wait()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def publish(self, channel: str, message: dict[str, Any]) -> None:
        """Send now, in a transaction of its own."""
        if not self.postgres:
            _deliver_here(self.url, channel, message)
            return
        async with self.database.engine.begin() as conn:
            for payload in _payloads(message):
                await conn.execute(_NOTIFY, {"channel": channel, "payload": payload})

    def _hear(self, channel: str, payload: str) -> None:
        data = json.loads(payload)
        if "part" in data:  # one of a long message's parts
            parts = self._parts.setdefault(data["id"], [])
            parts.append(data["text"])
            if len(parts) < data["of"]:
                return
            data = json.loads("".join(self._parts.pop(data["id"])))
        self.deliver(channel, data)

    def deliver(self, channel: str, message: dict[str, Any]) -> None:
        for handler in self._handlers.get(channel, ()):
            try:
                handler(message)
            except Exception:
                log.exception("relay handler of %s failed", channel)

    def _on_notify(self, _conn: Any, _pid: int, channel: str, payload: str) -> None:
        try:
            self._hear(channel, payload)
        except (ValueError, KeyError, TypeError):
            log.warning("relay: a notification on %s that is not ours: %.100s", channel, payload)

    async def _listen(self) -> None:
        import asyncpg

        url = self.database.engine.url
        first, retry_s = True, 0.0
        while True:
            try:
                conn = await asyncpg.connect(
                    host=url.host,
                    port=url.port or 5432,
                    user=url.username,
                    password=url.password,
                    database=url.database,
                    timeout=10,
                    server_settings={"application_name": APPLICATION_NAME},  # told apart in pg_stat_activity
                )
            except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
                retry_s = min(max(retry_s * 2, RECONNECT_S / 2), 5.0)
                log.warning("relay: cannot listen (%s): trying again in %.1f s", exc, retry_s)
                await asyncio.sleep(retry_s)
                continue
            retry_s = 0.0
            try:
                await self._hold(conn, first)
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("relay: the LISTEN connection was lost (%s): listening again", type(exc).__name__)
            finally:
                self._conn = None
                if self._listening is not None:
                    self._listening.clear()
                with contextlib.suppress(Exception):
                    await conn.close(timeout=2)
            first = False
            self.reconnects += 1

    async def _hold(self, conn: Any, first: bool) -> None:
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _conn: lost.set())
        for channel in list(self._handlers):
            await conn.add_listener(channel, self._on_notify)
        self._conn = conn
        self._parts.clear()
        if not first:  # messages sent while we were away are lost: say so to who cares
            for handler in self._on_reconnect:
                handler()
        assert self._listening is not None
        self._listening.set()
        while not conn.is_closed():
            # A connection can die without a word (a dropped route): ask it every 10 s.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(10):
                    await lost.wait()
            if lost.is_set():
                return
            await conn.fetchval("SELECT 1", timeout=5)


async def notify_in(session: AsyncSession, channel: str, message: dict[str, Any]) -> None:
    """Send when the session's transaction commits, and only then: on PostgreSQL a NOTIFY in the
    transaction; this process's relays also get it at once on commit (its next request must not
    race the NOTIFY coming back)."""
    await session.run_sync(notify_at_commit, channel, message)


def notify_at_commit(
    session: Session, channel: str, message: dict[str, Any], *, here_at_once: bool = True
) -> None:
    """`notify_in` for a synchronous session (e.g. in a before_commit hook). `here_at_once`
    False: on PostgreSQL this process hears it only when the NOTIFY comes back, like the others
    (for a message whose every delivery costs work)."""
    bind = session.get_bind()
    postgres = bind.dialect.name == "postgresql"
    if postgres:
        for payload in _payloads(message):
            session.execute(_NOTIFY, {"channel": channel, "payload": payload})
    if here_at_once or not postgres:
        session.info.setdefault(_PENDING, []).append((str(bind.engine.url), channel, message))


_PENDING = "termpulse_relay_pending"


@event.listens_for(Session, "after_commit")
def _committed(session: Session) -> None:
    for url, channel, message in session.info.pop(_PENDING, ()):
        _deliver_here(url, channel, message)


@event.listens_for(Session, "after_rollback")
def _rolled_back(session: Session) -> None:
    session.info.pop(_PENDING, None)


def _deliver_here(url: str, channel: str, message: dict[str, Any]) -> None:
    for relay in list(_relays):
        if relay.url == url:
            relay.deliver(channel, message)


def _payloads(message: dict[str, Any]) -> list[str]:
    whole = json.dumps(message, separators=(",", ":"))
    if len(whole.encode()) <= PART_CHARS:
        return [whole]
    # `whole` is ASCII (json.dumps escapes the rest): quoted again, a part at most doubles.
    size = PART_CHARS // 2
    pieces = [whole[i : i + size] for i in range(0, len(whole), size)]
    mid = secrets.token_hex(8)
    return [json.dumps({"id": mid, "part": n, "of": len(pieces), "text": p}) for n, p in enumerate(pieces)]
