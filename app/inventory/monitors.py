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
from app.inventory.models import CheckSettings, Monitor, NetworkProfile, Store
from app.inventory.profiles import TORGSOFT_WEBSOCKET_PORT, Destination
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
    @property
    def tcp_ports(self) -> str: ...


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
    if t.integration in ("local", "both") and t.lan_host:
        # Its other ports (the Torgsoft set's BPOS and PosApi beside its main one): a TCP connect each.
        for port in sorted(set(parse_ports(t.tcp_ports or "")) - {t.lan_port}):
            target = f"{t.lan_host}:{port}"
            specs.append(MonitorSpec(f"t{t.id}:tcp:{port}", t.store_id, t.id, MonitorKind.TCP, target, {}))
    return specs


def parse_ports(text: str) -> list[int]:
    """A stored port list ("2000;5001", validated on input) as numbers."""
    return [int(p) for p in text.split(";") if p.strip()]


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def store_monitor_specs(s: StoreLike, destinations: Sequence[Destination]) -> list[MonitorSpec]:
    """The network monitors of a store whose profile lists these destinations."""
    # Keys name kind, host and port: a check added to a destination later (tls) leaves the keys,
    # and so the history, of the existing ones as they were. by_name: the target guard allows a
    # profile's host wherever it resolves (only admins write profiles).
    specs: list[MonitorSpec] = []
    for d in destinations:
        hostport = _host_port(d.host, d.port)
        scheme = "wss" if MonitorKind.TLS in d.checks else "ws"
        targets = {
            MonitorKind.DNS: (d.host, d.host),
            MonitorKind.TCP: (hostport, hostport),
            MonitorKind.TLS: (hostport, hostport),
            MonitorKind.HTTPS: (hostport, f"https://{hostport}/"),
            MonitorKind.WEBSOCKET: (hostport, f"{scheme}://{hostport}/"),
            MonitorKind.PING: (d.host, d.host),
        }
        for check in d.checks:
            named, target = targets[MonitorKind(check)]
            params: dict[str, Any] = {"by_name": True}
            if check == MonitorKind.HTTPS:
                # Any answer but a server error: the host was reached through a verified TLS
                # session (a processor's "/" may well be a 404); a 5xx is the host failing.
                params["expect_status"] = ["2xx", "3xx", "4xx"]
            key = f"s{s.id}:{check}:{named}"
            specs.append(MonitorSpec(key, s.id, None, check, target, params))
    return specs


async def profile_destinations(session: AsyncSession) -> dict[str, tuple[Destination, ...]]:
    """Every network profile's destinations, by profile name (a handful of small rows)."""
    rows = await session.execute(select(NetworkProfile.name, NetworkProfile.destinations))
    return {name: tuple(Destination.from_json(d) for d in dests) for name, dests in rows}


async def sync_monitors(
    session: AsyncSession, *, stores: Sequence[StoreLike] = (), terminals: Sequence[TerminalLike] = ()
) -> dict[str, int]:
    """Make the monitors of these stores (network) and terminals match what they need."""
    wanted = {s.key: s for t in terminals for s in terminal_monitor_specs(t)}
    if stores:
        profiles = await profile_destinations(session)
        for st in stores:
            destinations = profiles.get(st.network_profile or "", ())
            wanted |= {s.key: s for s in store_monitor_specs(st, destinations)}
    existing = await _existing(session, [s.id for s in stores], [t.id for t in terminals])

    now = utcnow()
    new_rows: list[dict[str, Any]] = []
    changed: list[dict[str, Any]] = []
    new_keys = [key for key in wanted if key not in existing]
    levels = await check_settings_of(session, {wanted[k].store_id for k in new_keys}) if new_keys else {}
    for key, spec in wanted.items():
        current = existing.get(key)
        if current is None:
            chosen = levels[spec.store_id].of(spec.terminal_id is None)
            interval = chosen.interval_s
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
                    "timeout_s": chosen.timeout_s,
                    "fail_threshold": chosen.down_after,
                    "success_threshold": chosen.up_after,
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
    existing_store = {m.id: m.store_id for m in existing.values()}

    if new_rows:
        await bulk_insert(session, table_of(Monitor), new_rows)
    if changed:
        await session.execute(update(Monitor), changed)
        moved = {c["store_id"] for c in changed if c["store_id"] != existing_store.get(c["id"])}
        await apply_check_settings(session, moved)  # a moved terminal takes its new store's values
    if obsolete:
        await session.execute(delete(Monitor).where(Monitor.id.in_(obsolete)))
    await assign_agents(session, {s.id for s in stores} | {t.store_id for t in terminals})
    return {"created": len(new_rows), "updated": len(changed), "deleted": len(obsolete)}


# --- interval, timeout and down/up thresholds: the store's, else its region's, else (network
# monitors) its network profile's, else the defaults. Applied to the monitors as they are: the
# keys, and so the history, stay.

CHECK_SETTING_FIELDS = ("interval_s", "timeout_s", "down_after", "up_after")
DEFAULT_DOWN_AFTER, DEFAULT_UP_AFTER = 2, 1


@dataclass(frozen=True)
class CheckValues:
    interval_s: int
    timeout_s: float
    down_after: int
    up_after: int


@dataclass(frozen=True)
class StoreCheckValues:
    network: CheckValues  # its network monitors' (the profile counts)
    terminals: CheckValues  # its terminals' monitors'

    def of(self, network: bool) -> CheckValues:
        return self.network if network else self.terminals


def _choose(defaults: CheckValues, *levels: dict[str, Any]) -> CheckValues:
    """Each value from the first level (most specific first) that sets it, else the default."""
    values = {
        f: next((level[f] for level in levels if level.get(f) is not None), getattr(defaults, f))
        for f in CHECK_SETTING_FIELDS
    }
    return CheckValues(
        int(values["interval_s"]),
        float(values["timeout_s"]),
        *map(int, (values["down_after"], values["up_after"])),
    )


async def check_settings_of(session: AsyncSession, store_ids: set[int]) -> dict[int, StoreCheckValues]:
    """The check values each of these stores' monitors take."""
    settings = get_settings()
    defaults = CheckValues(
        settings.check_interval_s, settings.check_timeout_s, DEFAULT_DOWN_AFTER, DEFAULT_UP_AFTER
    )
    levels = {
        (c.scope, c.name): {f: getattr(c, f) for f in CHECK_SETTING_FIELDS}
        for c in await session.scalars(select(CheckSettings))
    }
    query = select(
        Store.id,
        Store.region,
        Store.network_profile,
        Store.check_interval_s,
        Store.check_timeout_s,
        Store.down_after,
        Store.up_after,
    )
    chosen = {}
    for row in await select_where_in(session, query, Store.id, store_ids):
        own = {
            "interval_s": row.check_interval_s,
            "timeout_s": row.check_timeout_s,
            "down_after": row.down_after,
            "up_after": row.up_after,
        }
        region = levels.get(("region", row.region), {}) if row.region else {}
        profile = levels.get(("profile", row.network_profile or ""), {})
        chosen[row.id] = StoreCheckValues(
            _choose(defaults, own, region, profile), _choose(defaults, own, region)
        )
    return chosen


async def apply_check_settings(session: AsyncSession, store_ids: set[int]) -> int:
    """Give these stores' monitors the check values they should have now (after a change of the
    store's, its region's or its profile's settings); returns the monitors changed. A monitor
    whose interval changes is placed on its new interval's phase from now."""
    if not store_ids:
        return 0
    chosen = await check_settings_of(session, store_ids)
    query = select(
        Monitor.id,
        Monitor.key,
        Monitor.store_id,
        Monitor.terminal_id,
        Monitor.interval_s,
        Monitor.timeout_s,
        Monitor.fail_threshold,
        Monitor.success_threshold,
    )
    now, changes = utcnow(), []
    for m in await select_where_in(session, query, Monitor.store_id, store_ids):
        want = chosen[m.store_id].of(m.terminal_id is None)
        have = (m.interval_s, m.timeout_s, m.fail_threshold, m.success_threshold)
        if have == (want.interval_s, want.timeout_s, want.down_after, want.up_after):
            continue
        change: dict[str, Any] = {
            "id": m.id,
            "interval_s": want.interval_s,
            "timeout_s": want.timeout_s,
            "fail_threshold": want.down_after,
            "success_threshold": want.up_after,
        }
        if m.interval_s != want.interval_s:
            phase = phase_ms(m.key, want.interval_s)
            change |= {"phase_ms": phase, "next_due_at": first_due_at(now, want.interval_s, phase)}
        changes.append(change)
    for keys in {tuple(c) for c in changes}:  # one bulk update per set of columns
        await session.execute(update(Monitor), [c for c in changes if tuple(c) == keys])
    return len(changes)


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
