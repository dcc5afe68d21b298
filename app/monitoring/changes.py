"""Live updates: which terminals and stores a transaction changed, published once at commit.

`refresh_status` (where every state change ends: the writer, the stale and maintenance jobs,
the agents' silences) notes the terminals and stores it touched on the session. When the
transaction commits they are published once, batched per transaction, through the relay
(app.relay, channel `CHANNEL`):

* PostgreSQL: ``NOTIFY termpulse_changes`` sent inside the transaction (delivered at commit,
  never on rollback), ids only, split so each message fits one NOTIFY;
* SQLite: in process, after the commit (one process serves and checks).

Each web process hears them on its relay's one LISTEN connection (which reconnects after an
outage, and then a `resync` says what happened meanwhile was not heard), or on the in-process
bus. Nothing is shared in memory between processes, so any number of web processes each get
every change.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from app.relay import PART_CHARS, Relay, notify_at_commit

CHANNEL = "termpulse_changes"
MAX_PAYLOAD = PART_CHARS  # bytes of a message as JSON: one NOTIFY each (the limit is 8000)
_LIST_BUDGET = (MAX_PAYLOAD - len('{"t":,"s":}')) // 2  # bytes for each list of ids
_PENDING = "termpulse_changes"  # session.info key: (terminal ids, store ids) of this transaction


@dataclass(frozen=True)
class Changes:
    """Terminals and stores whose derived state may have changed. `resync`: changes may
    have been missed (the listener was reconnecting): anything on screen may be out of date."""

    terminals: frozenset[int] = frozenset()
    stores: frozenset[int] = frozenset()
    resync: bool = False

    def messages(self) -> list[dict[str, list[int]]]:
        """Messages of at most MAX_PAYLOAD bytes as compact JSON, ids only."""
        out: list[dict[str, list[int]]] = []
        t_left, s_left = sorted(self.terminals), sorted(self.stores)
        while t_left or s_left or not out:
            t_part, t_left = _fit(t_left, _LIST_BUDGET)
            s_part, s_left = _fit(s_left, _LIST_BUDGET)
            out.append({"t": t_part, "s": s_part})
        return out

    @classmethod
    def of(cls, message: dict[str, Any]) -> Changes:
        return cls(frozenset(message.get("t", ())), frozenset(message.get("s", ())))

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


@event.listens_for(Session, "before_commit")
def _publish_at_commit(session: Session) -> None:
    """Once per transaction, with everything it noted: delivered at commit, never on rollback."""
    changes = _pending(session)
    session.info.pop(_PENDING, None)
    if changes is not None:
        postgres = session.get_bind().dialect.name == "postgresql"
        # In process (SQLite) the batch goes whole; a NOTIFY takes a bounded payload.
        whole = {"t": sorted(changes.terminals), "s": sorted(changes.stores)}
        for message in changes.messages() if postgres else [whole]:
            # Each delivery renders pages: this process hears it when the NOTIFY comes back.
            notify_at_commit(session, CHANNEL, message, here_at_once=False)


@event.listens_for(Session, "after_rollback")
def _forget(session: Session) -> None:
    session.info.pop(_PENDING, None)


def listen(relay: Relay, deliver: Callable[[Changes], None]) -> None:
    """Hear every published batch of changes through this process's relay; after its LISTEN
    connection was lost and is back, a `resync` (what happened meanwhile was not heard)."""
    relay.subscribe(CHANNEL, lambda message: deliver(Changes.of(message)))
    relay.on_reconnect(lambda: deliver(Changes(resync=True)))
