"""The identity of the device at a terminal's address, learned and re-learned.

A terminal's LAN checks report what identifies the device that answered (an "identity" step:
its certificate's fingerprint and subject, the POIID or serial its API reports; see
app.checks.identity). The first healthy check's identity is kept in the monitor's
params["identity"], where every later check (central worker or store agent) compares it.
An admin re-learns it after a real replacement; both are terminal events.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.checks.identity import STEP, parse_step
from app.db import select_where_in, utcnow
from app.errors import NotFound
from app.inventory.models import Monitor, Terminal, TerminalEvent
from app.poiid import normalise_poiid

LEARNED = "identity_learned"
RELEARN = "identity_relearn"
RENEWED = "identity_renewed"  # the same terminal (its API reports the learned POIID), a new certificate


def identity_from_steps(steps: Sequence[Any]) -> dict[str, str] | None:
    for s in steps:
        if isinstance(s, dict) and s.get("step") == STEP and s.get("ok"):
            return parse_step(str(s.get("detail", "")))
    return None


async def learn_identities(session: AsyncSession, results: Iterable[tuple[int, Sequence[Any]]]) -> int:
    """Keep the identity of healthy results (monitor id, steps) whose monitor has none yet.

    Called by the result writer inside its transaction; returns the monitors that learned."""
    found: dict[int, dict[str, str]] = {}
    for monitor_id, steps in results:
        if monitor_id not in found and (ident := identity_from_steps(steps)) is not None:
            found[monitor_id] = ident
    if not found:
        return 0
    query = select(Monitor.id, Monitor.terminal_id, Monitor.params)
    rows = await select_where_in(session, query, Monitor.id, list(found))
    learned = 0
    for row in rows:
        params = dict(row.params or {})
        ident = dict(found[row.id])
        renewal = ident.pop("renewed", None) is not None
        current = params.get("identity") or {}
        if row.terminal_id is None:
            continue
        if current and not (renewal and current.get("device") == ident.get("device") and current != ident):
            continue  # learned already; only the same terminal's renewed certificate replaces it
        params["identity"] = ident
        await session.execute(update(Monitor).where(Monitor.id == row.id).values(params=params))
        detail = {"monitor_id": row.id, **ident}
        if current:
            detail["previous_fingerprint"] = current.get("fingerprint", "")
        session.add(
            TerminalEvent(
                terminal_id=row.terminal_id,
                at=utcnow(),
                kind=RENEWED if current else LEARNED,
                detail=detail,
                source="its API reported the learned POIID" if current else "first healthy check",
            )
        )
        learned += 1
    return learned


async def relearn_identity(session: AsyncSession, terminal_id: int, source: str) -> int:
    """Forget the terminal's learned identity (a real replacement): its next healthy check
    learns the new device. Returns the monitors that forgot one."""
    rows = (
        await session.execute(select(Monitor.id, Monitor.params).where(Monitor.terminal_id == terminal_id))
    ).all()
    forgotten: list[dict[str, Any]] = []
    for row in rows:
        params = dict(row.params or {})
        old = params.pop("identity", None)
        if old is not None:
            await session.execute(update(Monitor).where(Monitor.id == row.id).values(params=params))
            forgotten.append({"monitor_id": row.id, **old})
    session.add(
        TerminalEvent(
            terminal_id=terminal_id,
            at=utcnow(),
            kind=RELEARN,
            detail={"forgotten": forgotten},
            source=source,
        )
    )
    return len(forgotten)


async def relearn_terminal(session: AsyncSession, poiid: str, username: str) -> int:
    """An admin's re-learn (after replacing the terminal at this address); commits."""
    terminal_id = await session.scalar(select(Terminal.id).where(Terminal.poiid == normalise_poiid(poiid)))
    if terminal_id is None:
        raise NotFound("terminal", poiid)
    forgotten = await relearn_identity(session, terminal_id, f"re-learn by {username}")
    await session.commit()
    return forgotten


async def learned_identities(session: AsyncSession, terminal_id: int) -> list[dict[str, Any]]:
    """What the terminal's monitors learned: [{kind, target, fingerprint, subject[, device]}]."""
    rows = await session.execute(
        select(Monitor.kind, Monitor.target, Monitor.params).where(Monitor.terminal_id == terminal_id)
    )
    return [
        {"kind": r.kind, "target": r.target, **r.params["identity"]}
        for r in rows
        if isinstance(r.params, dict) and r.params.get("identity")
    ]


async def identity_events(session: AsyncSession, terminal_id: int, limit: int = 5) -> list[TerminalEvent]:
    """The terminal's latest identity events (learned, re-learned), newest first."""
    query = (
        select(TerminalEvent)
        .where(TerminalEvent.terminal_id == terminal_id, TerminalEvent.kind.in_((LEARNED, RELEARN, RENEWED)))
        .order_by(TerminalEvent.at.desc(), TerminalEvent.id.desc())
        .limit(limit)
    )
    return list((await session.scalars(query)).all())


def without_learned(params: dict[str, Any] | None) -> dict[str, Any]:
    """A monitor's params as the inventory derives them (the learned identity left out)."""
    return {k: v for k, v in (params or {}).items() if k != "identity"}
