"""Monitors follow the inventory, and when each is due: a terminal's integration and a
store's network profile say what to check. Deriving is idempotent (monitors are keyed),
so import and edit both call it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import Row, bindparam, delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import get_settings
from app.db import bulk_insert, select_where_in, table_of, utcnow
from app.inventory.identity import without_learned
from app.inventory.models import Monitor, Store
from app.inventory.profiles import NETWORK_PROFILES, TORGSOFT_WEBSOCKET_PORT
from app.schedule import first_due_at, phase_ms
from app.vocabulary import MonitorKind, State


# What deriving reads: Store and Terminal rows, or the lighter rows the import builds.
class StoreLike(Protocol):
    @property
    def id(self) -> int: ...
    @property
    def network_profile(self) -> str | None: ...


class TerminalLike(Protocol):
    @property
    def id(self) -> int: ...
    @property
    def store_id(self) -> int: ...
    @property
    def poiid(self) -> str: ...
    @property
    def provider(self) -> str: ...
    @property
    def integration(self) -> str: ...
    @property
    def cloud_enabled(self) -> bool: ...
    @property
    def lan_host(self) -> str | None: ...
    @property
    def lan_port(self) -> int | None: ...
    @property
    def local_api(self) -> str | None: ...
    @property
    def epos_token(self) -> str | None: ...


# --- what to check


@dataclass(frozen=True)
class MonitorSpec:
    key: str
    store_id: int
    terminal_id: int | None
    kind: str
    target: str
    params: dict[str, Any] = field(default_factory=dict, hash=False)


def terminal_monitor_specs(t: TerminalLike) -> list[MonitorSpec]:
    # The key leaves out store and address: a moved or re-addressed terminal keeps its history.
    def spec(kind: str, target: str, **params: object) -> MonitorSpec:
        return MonitorSpec(f"t{t.id}:{kind}", t.store_id, t.id, kind, target, params)

    specs = []
    if t.integration in ("cloud", "both") and t.cloud_enabled:
        specs.append(spec(MonitorKind.CLOUD, t.poiid, provider=t.provider))
    if t.integration in ("local", "both") and t.lan_host and t.lan_port:
        lan = f"{t.lan_host}:{t.lan_port}"
        specs.append(spec(MonitorKind.TCP, lan))
        # poiid: the checks compare the device at the address with the terminal (app.checks.identity).
        if t.local_api == "paynt_epos":
            specs.append(spec(MonitorKind.PAYNT_EPOS, lan, token=t.epos_token, poiid=t.poiid))
        elif t.local_api == "adyen_local":
            specs.append(
                spec(MonitorKind.TLS, lan, accept_self_signed=True, poiid=t.poiid, local_api="adyen_local")
            )
        elif t.local_api == "torgsoft":
            # The Torgsoft guide's checks: the protocol's port (above), its WebSocket service, ping.
            if t.lan_port == TORGSOFT_WEBSOCKET_PORT:
                specs.append(spec(MonitorKind.WEBSOCKET, f"ws://{lan}/"))
            specs.append(spec(MonitorKind.PING, t.lan_host))
    return specs


def store_monitor_specs(s: StoreLike) -> list[MonitorSpec]:
    # Keys name kind, host and port: a monitor added to a profile later (tls) leaves the keys,
    # and so the history, of the existing ones as they were.
    specs = []
    for d in NETWORK_PROFILES.get(s.network_profile or "", ()):
        name, target = d.host, f"{d.host}:{d.port}"
        specs.append(MonitorSpec(f"s{s.id}:dns:{name}", s.id, None, MonitorKind.DNS, name))
        specs.append(MonitorSpec(f"s{s.id}:tcp:{target}", s.id, None, MonitorKind.TCP, target))
        if d.tls:
            specs.append(MonitorSpec(f"s{s.id}:tls:{target}", s.id, None, MonitorKind.TLS, target))
    return specs


async def sync_monitors(
    session: AsyncSession, *, stores: Sequence[StoreLike] = (), terminals: Sequence[TerminalLike] = ()
) -> dict[str, int]:
    """Make the monitors of these stores (network) and terminals match what they need."""
    wanted = {s.key: s for t in terminals for s in terminal_monitor_specs(t)}
    wanted |= {s.key: s for st in stores for s in store_monitor_specs(st)}
    existing = await _existing(session, [s.id for s in stores], [t.id for t in terminals])

    settings, now = get_settings(), utcnow()
    new_rows: list[dict[str, Any]] = []
    changed: list[dict[str, Any]] = []
    for key, spec in wanted.items():
        current = existing.get(key)
        if current is None:
            interval = settings.check_interval_s
            phase = phase_ms(key, interval)
            new_rows.append(
                {
                    "key": key,
                    "store_id": spec.store_id,
                    "terminal_id": spec.terminal_id,
                    "kind": spec.kind,
                    "target": spec.target,
                    "params": spec.params,
                    "interval_s": interval,
                    "timeout_s": settings.check_timeout_s,
                    "phase_ms": phase,
                    "next_due_at": first_due_at(now, interval, phase),
                    "state": State.UNKNOWN,
                    "state_since": now,
                }
            )
        elif (current.store_id, current.target, without_learned(current.params)) != (
            spec.store_id,
            spec.target,
            spec.params,
        ):
            # The identity a check learned stays (app.inventory.identity): same terminal.
            params = spec.params | {k: v for k, v in (current.params or {}).items() if k == "identity"}
            changed.append(
                {"id": current.id, "store_id": spec.store_id, "target": spec.target, "params": params}
            )
    obsolete = [m.id for key, m in existing.items() if key not in wanted]

    if new_rows:
        await bulk_insert(session, table_of(Monitor), new_rows)
    if changed:
        await session.execute(update(Monitor), changed)
    if obsolete:
        await session.execute(delete(Monitor).where(Monitor.id.in_(obsolete)))
    await assign_agents(session, {s.id for s in stores} | {t.store_id for t in terminals})
    return {"created": len(new_rows), "updated": len(changed), "deleted": len(obsolete)}


async def assign_agents(session: AsyncSession, store_ids: set[int]) -> int:
    """Give these stores' monitors to the store's agent (None: back to the central workers).

    Cloud monitors always stay central: they call the provider's API. The monitors and their
    history stay as they are; only who runs them changes. Returns the stores changed."""
    if not store_ids:
        return 0
    agents: dict[int, int | None] = {
        sid: aid
        for sid, aid in await select_where_in(session, select(Store.id, Store.agent_id), Store.id, store_ids)
    }
    local = select(Monitor.store_id, Monitor.agent_id).where(Monitor.kind != MonitorKind.CLOUD).distinct()
    current: dict[int, set[int | None]] = {}
    for sid, aid in await select_where_in(session, local, Monitor.store_id, store_ids):
        current.setdefault(sid, set()).add(aid)
    changes = [
        {"sid": sid, "aid": agents.get(sid)}
        for sid, held in sorted(current.items())
        if held != {agents.get(sid)}
    ]
    if changes:
        table = table_of(Monitor)
        await session.execute(
            update(table)
            .where(table.c.store_id == bindparam("sid"), table.c.kind != MonitorKind.CLOUD)
            .values(agent_id=bindparam("aid"))
            .execution_options(synchronize_session=False),
            changes,
        )
    return len(changes)


async def _existing(
    session: AsyncSession, store_ids: list[int], terminal_ids: list[int]
) -> dict[str, Row[int, str, int, str, dict[str, Any]]]:
    cols = select(Monitor.id, Monitor.key, Monitor.store_id, Monitor.target, Monitor.params)
    rows = await select_where_in(session, cols, Monitor.terminal_id, terminal_ids)
    rows += await select_where_in(
        session, cols.where(Monitor.terminal_id.is_(None)), Monitor.store_id, store_ids
    )
    return {r.key: r for r in rows}
