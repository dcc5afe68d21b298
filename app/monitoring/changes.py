"""Live updates: which terminals and stores a transaction changed, published once at commit.

`refresh_status` (where every state change ends: the writer, the stale and maintenance jobs,
the agents' silences) notes the terminals and stores it touched on the session. When the
transaction commits they are published once, batched per transaction:

* PostgreSQL: ``NOTIFY termpulse_changes`` sent inside the transaction (delivered at commit,
  never on rollback), ids only, split so each payload stays under NOTIFY's 8000 bytes;
* SQLite: in process, after the commit (one process serves and checks).

Each web process listens itself (`ChangeFeed`): a LISTEN on a dedicated asyncpg connection
that reconnects after an outage, or the in-process bus. Nothing is shared in memory between
processes, so any number of web processes each get every change.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import asyncpg
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from app.db import Database

log = logging.getLogger(__name__)

CHANNEL = "termpulse_changes"
MAX_PAYLOAD = 7900  # bytes: PostgreSQL refuses a NOTIFY payload of 8000 or more
_LIST_BUDGET = (MAX_PAYLOAD - len('{"t":,"s":}')) // 2  # bytes for each list of ids
_PENDING = "termpulse_changes"  # session.info key: (terminal ids, store ids) of this transaction


@dataclass(frozen=True)
class Changes:
    """Terminals and stores whose derived state may have changed. `resync`: changes may
    have been missed (the listener was reconnecting): anything on screen may be out of date."""

    terminals: frozenset[int] = frozenset()
    stores: frozenset[int] = frozenset()
    resync: bool = False

    def payloads(self) -> list[str]:
        """JSON payloads of at most MAX_PAYLOAD bytes, ids only (digits and commas: ASCII)."""
        out: list[str] = []
        t_left, s_left = sorted(self.terminals), sorted(self.stores)
        while t_left or s_left or not out:
            t_part, t_left = _fit(t_left, _LIST_BUDGET)
            s_part, s_left = _fit(s_left, _LIST_BUDGET)
            out.append(json.dumps({"t": t_part, "s": s_part}, separators=(",", ":")))
        return out

    @classmethod
    def decode(cls, payload: str) -> Changes:
        data = json.loads(payload)
        return cls(frozenset(data.get("t", ())), frozenset(data.get("s", ())))

    def __or__(self, other: Changes) -> Changes:
        return Changes(
            self.terminals | other.terminals, self.stores | other.stores, self.resync or other.resync
        )


def _fit(ids: list[int], budget: int) -> tuple[list[int], list[int]]:
    """The first ids whose JSON list fits in `budget` bytes, and the rest."""
    used = 2
    for n, i in enumerate(ids):
        used += len(str(i)) + 1
        if used > budget:
            return ids[:n], ids[n:]
    return ids, []


def note_changes(session: AsyncSession, terminals: Iterable[int], stores: Iterable[int]) -> None:
    """Publish these ids when the session's transaction commits (once, with the others noted)."""
    pending = session.sync_session.info.setdefault(_PENDING, (set(), set()))
    pending[0].update(terminals)
    pending[1].update(stores)


def _pending(session: Session) -> Changes | None:
    noted = session.info.get(_PENDING)
    if not noted or not (noted[0] or noted[1]):
        return None
    return Changes(frozenset(noted[0]), frozenset(noted[1]))


_NOTIFY = text("SELECT pg_notify(:channel, :payload)")


@event.listens_for(Session, "before_commit")
def _notify_in_transaction(session: Session) -> None:
    """PostgreSQL: NOTIFY inside the transaction, so it goes out with the commit or not at all."""
    changes = _pending(session)
    if changes is None or session.get_bind().dialect.name != "postgresql":
        return
    for payload in changes.payloads():
        session.execute(_NOTIFY, {"channel": CHANNEL, "payload": payload})


@event.listens_for(Session, "after_commit")
def _publish_committed(session: Session) -> None:
    changes = _pending(session)
    session.info.pop(_PENDING, None)
    bind = session.get_bind()
    if changes is not None and bind.dialect.name != "postgresql":
        for deliver in list(_LOCAL.get(str(bind.engine.url), ())):
            deliver(changes)


@event.listens_for(Session, "after_rollback")
def _forget(session: Session) -> None:
    session.info.pop(_PENDING, None)


# SQLite: this process's listeners per database URL (its only writer runs in this process).
_LOCAL: dict[str, set[Callable[[Changes], None]]] = {}


class ChangeFeed:
    """This process's one listener: calls `deliver` with every published batch of changes.

    PostgreSQL: LISTEN on its own connection (not the pool's); when that connection is lost
    (the server restarted, the backend was terminated) it connects again, 0.5 s doubling to
    5 s, and then delivers a `resync` (what happened meanwhile was not heard)."""

    def __init__(self, database: Database, deliver: Callable[[Changes], None]) -> None:
        self.database = database
        self.deliver = deliver
        self.connected = asyncio.Event()
        self.reconnects = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.database.dialect != "postgresql":
            _LOCAL.setdefault(str(self.database.engine.url), set()).add(self.deliver)
            self.connected.set()
        elif self._task is None:
            self._task = asyncio.create_task(self._listen(), name="termpulse-change-listener")

    async def stop(self) -> None:
        _LOCAL.get(str(self.database.engine.url), set()).discard(self.deliver)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _listen(self) -> None:
        dsn = self.database.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        retry_s, outage = 0.0, False
        while True:
            try:
                conn = await asyncpg.connect(dsn, timeout=10)
            except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
                if not outage:
                    log.warning("live updates: cannot LISTEN (%s); trying again", type(exc).__name__)
                    outage = True
                retry_s = min(max(retry_s * 2, 0.5), 5.0)
                await asyncio.sleep(retry_s)
                continue
            try:
                await self._hold(conn, resync=outage or self.reconnects > 0)
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("live updates: the LISTEN connection was lost (%s)", type(exc).__name__)
            finally:
                self.connected.clear()
                conn.terminate()
            outage, retry_s = True, 0.0
            self.reconnects += 1

    async def _hold(self, conn: Any, *, resync: bool) -> None:
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _conn: lost.set())
        await conn.add_listener(CHANNEL, self._heard)
        if resync:
            log.warning("live updates: listening again")
            self.deliver(Changes(resync=True))
        self.connected.set()
        while not conn.is_closed():
            # A connection can die without a word (a dropped route): ask it every 10 s.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(10):
                    await lost.wait()
            if lost.is_set():
                return
            await conn.fetchval("SELECT 1", timeout=5)

    def _heard(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        try:
            changes = Changes.decode(payload)
        except (ValueError, AttributeError, TypeError):
            log.warning("live updates: a notification that is not ours: %.100s", payload)
            return
        self.deliver(changes)
