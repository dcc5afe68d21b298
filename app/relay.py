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
        _relays.add(self)

    def subscribe(self, channel: str, handler: Handler) -> None:
        self._handlers.setdefault(channel, []).append(handler)

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

    async def _listen(self) -> None:
        import asyncpg

        url = self.database.engine.url
        first = True
        while True:
            try:
                conn = await asyncpg.connect(
                    host=url.host,
                    port=url.port or 5432,
                    user=url.username,
                    password=url.password,
                    database=url.database,
                )
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("relay: cannot listen (%s): trying again in %.0f s", exc, RECONNECT_S)
                await asyncio.sleep(RECONNECT_S)
                continue
            lost = asyncio.Event()
            conn.add_termination_listener(lambda _conn, lost=lost: lost.set())
            try:
                for channel in self._handlers:
                    await conn.add_listener(channel, lambda _c, _pid, ch, payload: self._hear(ch, payload))
                self._parts.clear()
                if not first:  # messages sent while we were away are lost: say so to who cares
                    for handler in self._on_reconnect:
                        handler()
                first = False
                assert self._listening is not None
                self._listening.set()
                await lost.wait()
                log.warning("relay: the LISTEN connection was lost: listening again")
            finally:
                with contextlib.suppress(Exception):
                    await conn.close(timeout=2)


async def notify_in(session: AsyncSession, channel: str, message: dict[str, Any]) -> None:
    """Send when the session's transaction commits, and only then: on PostgreSQL a NOTIFY in the
    transaction; this process's relays also get it at once on commit (its next request must not
    race the NOTIFY coming back)."""
    bind = session.get_bind()
    if bind.dialect.name == "postgresql":
        for payload in _payloads(message):
            await session.execute(_NOTIFY, {"channel": channel, "payload": payload})
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
