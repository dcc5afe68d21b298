"""Derived status of terminals and stores, kept on their rows so pages never aggregate.

* A terminal's status combines its own monitors (cloud, LAN) and its store's network
  monitors (DNS/TCP to the processor: a store that cannot reach it leaves its terminals
  unable to pay): ``maintenance`` if any is in maintenance, else ``down`` if any is down,
  else ``up`` if all are up, else ``unknown``; ``paused`` when every monitor is paused or
  disabled. A terminal with no monitor of its own (no cloud connection enabled, no LAN
  address) is ``none``, "not monitored": its store's network checks say nothing about the
  terminal itself, so it is never shown up because of them.
* ``cloud_state`` comes from the terminal's cloud monitor: up -> ``connected``, down ->
  ``disconnected`` (``not_enabled`` when the provider said WebSockets are not enabled),
  otherwise ``unknown``; a terminal without a cloud monitor (cloud not enabled, or a
  local-only terminal) is ``not_enabled``.
* A store's status answers "can we take cards?" (``StoreStatus``, see `store_status`):
  ``cannot_pay`` when its network is down or every monitored terminal is down, ``degraded``
  when some are, ``up``, ``unknown``, ``maintenance``/``paused``, ``none`` (not monitored).

Everything is set-based: the caller passes the ids touched by a batch, a few queries
read their monitors, and only rows whose derived values changed are written (one
executemany each), in id order so concurrent writers lock rows in the same order.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Row, bindparam, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import dialect_of, select_where_in, table_of
from app.inventory.models import Monitor, Store, Terminal
from app.monitoring.changes import note_changes
from app.vocabulary import CloudState, MonitorKind, State, StoreStatus

_ACTIVE = (State.UP, State.DOWN, State.UNKNOWN)


def terminal_status(own: list[str], network: list[str]) -> State:
    """A terminal's status from its own monitors' states and its store network's: not
    monitored (``none``) without any monitor of its own."""
    if not own:
        return State.NONE
    return combine(own + network)


def store_status(network: Iterable[str], terminals: Iterable[str]) -> StoreStatus:
    """Can the store take cards? From its network monitors' states (disabled ones as paused)
    and its terminals' statuses.

    * maintenance when its network checks are in maintenance (a window for the whole store);
    * cannot take cards when a network check is down (the processor cannot be reached), or
      when every terminal that is monitored and active is down;
    * degraded when some of them are down;
    * up when all of them (and every active network check) are up; unknown otherwise;
    * without an active monitored terminal: maintenance / paused when they are, unknown when
      a network check is, else not monitored (``none``): network checks alone never say up."""
    net = [s for s in network if s != State.PAUSED]
    if State.MAINTENANCE in net:
        return StoreStatus.MAINTENANCE
    if State.DOWN in net:
        return StoreStatus.CANNOT_PAY
    monitored = [s for s in terminals if s != State.NONE]
    active = [s for s in monitored if s in _ACTIVE]
    if not active:
        if State.MAINTENANCE in monitored:
            return StoreStatus.MAINTENANCE
        if monitored:
            return StoreStatus.PAUSED
        if State.UNKNOWN in net:
            return StoreStatus.UNKNOWN
        return StoreStatus.NONE
    down = active.count(State.DOWN)
    if down == len(active):
        return StoreStatus.CANNOT_PAY
    if down:
        return StoreStatus.DEGRADED
    if all(s == State.UP for s in active + net):
        return StoreStatus.UP
    return StoreStatus.UNKNOWN


def combine(states: Iterable[str]) -> State:
    states = list(states)
    if not states:
        return State.UNKNOWN
    active = [s for s in states if s != State.PAUSED]
    if not active:
        return State.PAUSED
    if State.MAINTENANCE in active:
        return State.MAINTENANCE
    if State.DOWN in active:
        return State.DOWN
    if all(s == State.UP for s in active):
        return State.UP
    return State.UNKNOWN


def cloud_state_of(state: str | None, diagnosis: str | None) -> CloudState:
    if state is None:
        return CloudState.NOT_ENABLED
    if state == State.UP:
        return CloudState.CONNECTED
    if state == State.DOWN:
        return CloudState.NOT_ENABLED if diagnosis == "cloud_not_enabled" else CloudState.DISCONNECTED
    return CloudState.UNKNOWN


def _monitor_state(enabled: bool, state: str) -> str:
    return state if enabled else State.PAUSED


async def _network_states(session: AsyncSession, store_ids: list[int]) -> dict[int, list[str]]:
    found: dict[int, list[str]] = defaultdict(list)
    query = select(Monitor.store_id, Monitor.state, Monitor.enabled).where(Monitor.terminal_id.is_(None))
    for store_id, state, enabled in await select_where_in(session, query, Monitor.store_id, store_ids):
        found[store_id].append(_monitor_state(enabled, state))
    return found


async def refresh_status(
    session: AsyncSession,
    now: datetime,
    *,
    terminal_ids: Iterable[int] = (),
    store_ids: Iterable[int] = (),
    network_changed_store_ids: Iterable[int] = (),
) -> dict[str, int]:
    """Recompute the derived status of these terminals and stores.

    `network_changed_store_ids`: stores whose *network* monitors changed; all their
    terminals are refreshed too. Stores of refreshed terminals are refreshed after them.
    Returns how many terminal and store rows changed."""
    terminal_ids = set(terminal_ids)
    net_stores = sorted(set(network_changed_store_ids))
    store_ids = set(store_ids) | set(net_stores)

    # The terminals to refresh: those named, plus every terminal of a store whose network changed.
    terminals: dict[int, Row[int, int, str, str]] = {}
    cols = (Terminal.id, Terminal.store_id, Terminal.status, Terminal.cloud_state)
    for row in await select_where_in(session, select(*cols), Terminal.id, sorted(terminal_ids)):
        terminals[row.id] = row
    for row in await select_where_in(session, select(*cols), Terminal.store_id, net_stores):
        terminals[row.id] = row

    changed_terminals = 0
    if terminals:
        own: dict[int, list[str]] = defaultdict(list)
        cloud: dict[int, tuple[str, str | None]] = {}
        query = select(
            Monitor.terminal_id, Monitor.kind, Monitor.state, Monitor.enabled, Monitor.last_diagnosis
        )
        for terminal_id, kind, state, enabled, diagnosis in await select_where_in(
            session, query, Monitor.terminal_id, sorted(terminals)
        ):
            if terminal_id is None:  # the query selects by terminal id: never
                continue
            own[terminal_id].append(_monitor_state(enabled, state))
            if kind == MonitorKind.CLOUD and enabled:
                cloud[terminal_id] = (state, diagnosis)
        network = await _network_states(session, sorted({t.store_id for t in terminals.values()}))
        updates: list[dict[str, Any]] = []
        for tid in sorted(terminals):
            t = terminals[tid]
            status = terminal_status(own[tid], network.get(t.store_id, []))
            cstate = cloud_state_of(*cloud.get(tid, (None, None)))
            if status != t.status or cstate != t.cloud_state:
                since = now if status != t.status else None
                updates.append({"b_id": tid, "status": status, "cloud_state": cstate, "status_since": since})
            if status != t.status:
                store_ids.add(t.store_id)
        if updates:
            await _update_terminals(session, updates)
        changed_terminals = len(updates)

    changed_stores = await _refresh_stores(session, sorted(store_ids), now)
    # Open dashboards show these rows: published when the transaction commits.
    note_changes(session, terminals, store_ids)
    return {"terminals": changed_terminals, "stores": changed_stores}


_PG_UPDATE_TERMINALS = text("""
UPDATE terminals AS t SET status = v.status, cloud_state = v.cloud_state,
    status_since = COALESCE(v.status_since, t.status_since)
FROM unnest(CAST(:b_id AS INTEGER[]), CAST(:status AS VARCHAR[]), CAST(:cloud_state AS VARCHAR[]),
            CAST(:status_since AS TIMESTAMPTZ[])) AS v(id, status, cloud_state, status_since)
WHERE t.id = v.id
""")


async def _update_terminals(session: AsyncSession, updates: list[dict]) -> None:
    if dialect_of(session) == "postgresql":
        await session.execute(_PG_UPDATE_TERMINALS, {k: [u[k] for u in updates] for k in updates[0]})
        return
    table = table_of(Terminal)
    with_since = [u for u in updates if u["status_since"] is not None]
    cloud_only = [
        {"b_id": u["b_id"], "cloud_state": u["cloud_state"]} for u in updates if u["status_since"] is None
    ]
    if with_since:
        await session.execute(
            update(table)
            .where(table.c.id == bindparam("b_id"))
            .values(
                status=bindparam("status"),
                cloud_state=bindparam("cloud_state"),
                status_since=bindparam("status_since"),
            )
            .execution_options(synchronize_session=False),
            with_since,
        )
    if cloud_only:
        await session.execute(
            update(table)
            .where(table.c.id == bindparam("b_id"))
            .values(cloud_state=bindparam("cloud_state"))
            .execution_options(synchronize_session=False),
            cloud_only,
        )


async def _refresh_stores(session: AsyncSession, store_ids: list[int], now: datetime) -> int:
    if not store_ids:
        return 0
    current: dict[int, str] = {}
    terminal_states: dict[int, list[str]] = defaultdict(list)
    for sid, status in await select_where_in(session, select(Store.id, Store.status), Store.id, store_ids):
        current[sid] = status
    query = select(Terminal.store_id, Terminal.status)
    for sid, status in await select_where_in(session, query, Terminal.store_id, store_ids):
        terminal_states[sid].append(status)
    network = await _network_states(session, store_ids)
    updates = []
    for sid in sorted(current):
        status = store_status(network.get(sid, []), terminal_states.get(sid, []))
        if status != current[sid]:
            updates.append({"b_id": sid, "status": status, "status_since": now})
    if updates:
        table = table_of(Store)
        await session.execute(
            update(table)
            .where(table.c.id == bindparam("b_id"))
            .values(
                status=bindparam("status"),
                status_since=bindparam("status_since"),
            )
            .execution_options(synchronize_session=False),
            updates,
        )
    return len(updates)


async def reconcile_status(session: AsyncSession, now: datetime, limit: int = 5000) -> dict[str, int]:
    """Rows whose derived status cannot be right any more, refreshed: terminals marked not
    monitored that have monitors now, or the other way round (added or edited in the
    inventory, which does not derive status), and stores whose status is not a store status
    (written before stores had their own). A periodic job and the worker's start run it;
    an index probe per terminal, nothing written when all is well."""
    has_monitor = select(Monitor.id).where(Monitor.terminal_id == Terminal.id).exists()
    wrong = (
        select(Terminal.id)
        .where(
            ((Terminal.status == State.NONE) & has_monitor) | ((Terminal.status != State.NONE) & ~has_monitor)
        )
        .order_by(Terminal.id)
        .limit(limit)
    )
    terminal_ids = list(await session.scalars(wrong))
    stale_stores = list(
        await session.scalars(
            select(Store.id).where(Store.status.not_in(list(StoreStatus))).order_by(Store.id).limit(limit)
        )
    )
    if not terminal_ids and not stale_stores:
        return {"terminals": 0, "stores": 0}
    return await refresh_status(
        session, now, terminal_ids=terminal_ids, network_changed_store_ids=stale_stores
    )
