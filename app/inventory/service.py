"""Writing stores and terminals: one path for the import, the API and the forms."""

from __future__ import annotations

from dataclasses import dataclass, field
from operator import itemgetter
from types import SimpleNamespace
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from app.auth.audit import note_changes
from app.db import bulk_insert, select_where_in, table_of, utcnow
from app.errors import Conflict, InvalidInput, NameTaken, NotFound
from app.inventory.models import CheckSettings, Store, Terminal, TerminalEvent
from app.inventory.monitors import apply_check_settings, sync_monitors
from app.inventory.profile_service import check_profile_names, profile_names
from app.inventory.schemas import NO_CONTROL, CheckSettingsIn, StoreIn, TerminalIn, has_control
from app.poiid import normalise_poiid
from app.relay import notify_in
from app.vocabulary import CloudState

STORE_FIELDS = tuple(f for f in StoreIn.model_fields)
TERMINAL_FIELDS = tuple(f for f in TerminalIn.model_fields if f != "store_code")
# Columns the monitors are derived from: a change re-derives the terminal's monitors.
_MONITOR_INPUTS = (
    "store_id",
    "tcp_ports",
    "poiid",
    "provider",
    "integration",
    "lan_host",
    "lan_port",
    "local_api",
    "cloud_enabled",
    "epos_token",
)


# Store columns the check values come from: a change re-applies them to the store's monitors.
_CHECK_INPUTS = frozenset(
    {"region", "network_profile", "check_interval_s", "check_timeout_s", "down_after", "up_after"}
)


@dataclass
class Counts:
    created: int = 0
    updated: int = 0
    unchanged: int = 0

    def __str__(self) -> str:
        return f"{self.created} created, {self.updated} updated, {self.unchanged} unchanged"


@dataclass
class UpsertSummary:
    stores: Counts = field(default_factory=Counts)
    terminals: Counts = field(default_factory=Counts)
    monitors: dict = field(default_factory=dict)
    events: int = 0


async def upsert_inventory(
    session: AsyncSession, stores: list[StoreIn], terminals: list[TerminalIn], *, source: str = "import"
) -> UpsertSummary:
    """Create or update by store code and POIID. The caller owns the transaction."""
    summary = UpsertSummary()
    await check_profile_names(session, {s.network_profile for s in stores})
    store_rows, resettle = await _upsert_stores(session, stores, summary.stores)
    touched_terminals = await _upsert_terminals(session, terminals, summary, source)
    summary.monitors = await sync_monitors(session, stores=store_rows, terminals=touched_terminals)
    await apply_check_settings(session, resettle)
    await inventory_changed(session)
    return summary


# Told to every process when an inventory change commits: the pages' caches (regions, models,
# the overview's rows) are dropped everywhere at once, not when they expire.
INVENTORY_CHANNEL = "termpulse_inventory"


async def inventory_changed(session: AsyncSession) -> None:
    await notify_in(session, INVENTORY_CHANNEL, {})


async def _upsert_stores(
    session: AsyncSession, stores: list[StoreIn], counts: Counts
) -> tuple[list, set[int]]:
    """Returns the created and changed stores (their network monitors need deriving) and the
    stores whose check settings may have changed (their own, their region or profile)."""
    existing = await _stores_by_code(session, [s.code for s in stores])
    new, changed, touched = [], [], []
    resettle: set[int] = set()
    for item in stores:
        values = item.model_dump(include=item.model_fields_set | {"code"})
        row = existing.get(item.code)
        if row is None:
            new.append(item.model_dump())
        elif any(getattr(row, k) != v for k, v in values.items()):
            changed.append({"id": row.id, **values, "updated_at": utcnow()})
            note_changes(session, item.code, row._asdict(), values)
            if values.get("network_profile", row.network_profile) != row.network_profile:
                touched.append(SimpleNamespace(id=row.id, network_profile=values["network_profile"]))
            if any(k in _CHECK_INPUTS and getattr(row, k) != v for k, v in values.items()):
                resettle.add(row.id)
        else:
            counts.unchanged += 1
    if new:
        # COPY on PostgreSQL, then the new ids in one read (INSERT ... RETURNING in pages was
        # most of a first import's time).
        await bulk_insert(session, table_of(Store), new)
        query = select(Store.id, Store.network_profile)
        result = await select_where_in(session, query, Store.code, [n["code"] for n in new])
        touched += [SimpleNamespace(id=r.id, network_profile=r.network_profile) for r in result]
    if changed:
        await session.execute(update(Store), changed)
    counts.created, counts.updated = len(new), len(changed)
    return touched, resettle


async def _upsert_terminals(
    session: AsyncSession, terminals: list[TerminalIn], summary: UpsertSummary, source: str
) -> list:
    codes = sorted({t.store_code for t in terminals})
    store_ids = {code: row.id for code, row in (await _stores_by_code(session, codes)).items()}
    missing = [c for c in codes if c not in store_ids]
    if missing:
        raise Conflict(f"unknown store code(s): {', '.join(missing[:10])}", field="store_code")

    existing = await _terminals_by_poiid(session, [t.poiid for t in terminals])
    stored = _SameAsStored(_TERMINAL_COLUMNS)
    new, changed, events, touched = [], [], [], []
    for item in terminals:
        store_id = store_ids[item.store_code]
        row = existing.get(item.poiid)
        if row is not None and row.store_id == store_id and stored.holds(item, row):
            summary.terminals.unchanged += 1
            continue
        values = item.model_dump(include=item.model_fields_set - {"store_code"} | {"poiid"})
        values["store_id"] = store_id
        if row is None:
            new.append(
                {
                    **item.model_dump(exclude={"store_code"}),
                    "store_id": values["store_id"],
                    "cloud_state": _cloud_state(item.integration, item.cloud_enabled),
                }
            )
            continue
        diff = {k: v for k, v in values.items() if getattr(row, k) != v}
        if not diff:
            summary.terminals.unchanged += 1
            continue
        changed.append({"id": row.id, **diff, "updated_at": utcnow()})
        note_changes(session, item.poiid, row._asdict(), diff)
        if {"integration", "cloud_enabled"} & diff.keys():
            merged = {**row._asdict(), **diff}
            changed[-1]["cloud_state"] = _cloud_state(merged["integration"], merged["cloud_enabled"])
        events += _events_for(row, diff, source)
        if any(k in _MONITOR_INPUTS for k in diff):
            touched.append(SimpleNamespace(**{**row._asdict(), **diff}))
    if new:
        await bulk_insert(session, table_of(Terminal), new)
        query = select(Terminal.poiid, Terminal.id)
        ids = dict(await select_where_in(session, query, Terminal.poiid, [n["poiid"] for n in new]))
        touched += [SimpleNamespace(**n, id=ids[n["poiid"]]) for n in new]
    if changed:
        await session.execute(update(Terminal), changed)
    if events:
        await session.execute(insert(TerminalEvent), events)
    summary.terminals.created, summary.terminals.updated = len(new), len(changed)
    summary.events += len(events)
    return touched


def _cloud_state(integration: str, cloud_enabled: bool) -> CloudState:
    """Until the provider answers: unknown if a cloud connection is expected, else the minus sign."""
    if integration in ("cloud", "both") and cloud_enabled:
        return CloudState.UNKNOWN
    return CloudState.NOT_ENABLED


def _events_for(row: Any, diff: dict, source: str) -> list[dict]:
    """A move keeps the terminal's history; an address change is a classic cause of trouble."""
    now, events = utcnow(), []
    if "store_id" in diff:
        events.append(
            {
                "terminal_id": row.id,
                "at": now,
                "kind": "moved_store",
                "source": source,
                "detail": {"from_store_id": row.store_id, "to_store_id": diff["store_id"]},
            }
        )
    moved = {
        k: {"from": getattr(row, k), "to": diff[k]} for k in ("lan_host", "lan_port", "mac") if k in diff
    }
    if moved:
        events.append(
            {"terminal_id": row.id, "at": now, "kind": "address_changed", "source": source, "detail": moved}
        )
    return events


async def _stores_by_code(session: AsyncSession, codes: list[str]) -> dict:
    cols = [Store.id, *(getattr(Store, f) for f in STORE_FIELDS)]
    return {r.code: r for r in await select_where_in(session, select(*cols), Store.code, codes)}


class _SameAsStored:
    """Does a row already hold what the input gives (the fields it gives)? An unchanged
    re-import asks it 50,000 times: one tuple comparison each, not a diff field by field."""

    def __init__(self, columns: tuple[str, ...]) -> None:
        self._index = {name: i for i, name in enumerate(columns)}
        self._getters: dict[frozenset[str], tuple[itemgetter[Any], itemgetter[Any]]] = {}

    def holds(self, item: TerminalIn, row: Any) -> bool:
        given = frozenset(item.model_fields_set)
        getters = self._getters.get(given)
        if getters is None:
            names = sorted(given - {"store_code"} | {"poiid"})
            getters = itemgetter(*names), itemgetter(*(self._index[n] for n in names))
            self._getters[given] = getters
        from_item, from_row = getters
        return bool(from_item(vars(item)) == from_row(row))


_TERMINAL_COLUMNS = ("id", "store_id", *TERMINAL_FIELDS)


async def _terminals_by_poiid(session: AsyncSession, poiids: list[str]) -> dict:
    cols = [getattr(Terminal, c) for c in _TERMINAL_COLUMNS]
    return {r.poiid: r for r in await select_where_in(session, select(*cols), Terminal.poiid, poiids)}


async def _claim_key(
    session: AsyncSession,
    model: type[Store] | type[Terminal],
    column: InstrumentedAttribute[str],
    new: str,
    current: str | None,
    what: str,
    field: str,
) -> None:
    """Check that `new` is free, and rename the `current` row to it when they differ."""
    taken = await session.scalar(select(model.id).where(column == new))
    if current is None:
        if taken:
            raise NameTaken(f"{what} {new} already exists", field=field)
        return
    row = await session.scalar(select(model).where(column == current))
    if row is None:
        raise NotFound(what, current)
    if new != current:
        if taken:
            raise NameTaken(f"{what} {new} already exists", field=field)
        setattr(row, field, new)
        await session.flush()


async def save_store(session: AsyncSession, data: StoreIn, current_code: str | None = None) -> Store:
    """Create (current_code None) or edit a store, renaming its code if asked. Commits."""
    await _claim_key(session, Store, Store.code, data.code, current_code, "store", "code")
    await upsert_inventory(session, [data], [], source="edit")
    await session.commit()
    stored = select(Store).where(Store.code == data.code).execution_options(populate_existing=True)
    return (await session.scalars(stored)).one()


async def save_terminal(
    session: AsyncSession, data: TerminalIn, current_poiid: str | None = None
) -> Terminal:
    """Create or edit a terminal (a new store keeps its history, a new POIID too). Commits."""
    current = normalise_poiid(current_poiid) if current_poiid else None
    await _claim_key(session, Terminal, Terminal.poiid, data.poiid, current, "terminal", "poiid")
    try:
        await upsert_inventory(session, [], [data], source="edit")
    except Conflict:
        await session.rollback()
        raise Conflict(f"no store {data.store_code}", field="store_code") from None
    await session.commit()
    stored = select(Terminal).where(Terminal.poiid == data.poiid).execution_options(populate_existing=True)
    return (await session.scalars(stored)).one()


async def delete_store(session: AsyncSession, code: str) -> None:
    store = await session.scalar(select(Store).where(Store.code == code))
    if store is None:
        raise NotFound("store", code)
    count = await session.scalar(select(func.count()).where(Terminal.store_id == store.id))
    if count:
        raise Conflict(f"store {code} still has {count} terminal(s): move or delete them first", field="code")
    await session.delete(store)
    await inventory_changed(session)
    await session.commit()


async def delete_terminal(session: AsyncSession, poiid: str) -> None:
    terminal = await session.scalar(select(Terminal).where(Terminal.poiid == normalise_poiid(poiid)))
    if terminal is None:
        raise NotFound("terminal", poiid)
    await session.delete(terminal)
    await inventory_changed(session)
    await session.commit()


# --- a region's or a network profile's check settings -----------------------------------------

CHECK_SCOPES = ("region", "profile")


async def check_scope_problems(session: AsyncSession, scope: str, name: str) -> dict[str, str]:
    """What is wrong with a check settings entry's scope and name, by field (empty: nothing)."""
    name = name.strip()
    if scope not in CHECK_SCOPES:
        return {"scope": f"must be one of: {', '.join(CHECK_SCOPES)}"}
    if not name or len(name) > 100:
        return {"name": "a region or profile name of 1 to 100 characters"}
    if has_control(name):  # a path parameter: no input model's validator saw it
        return {"name": NO_CONTROL}
    if scope == "profile" and name not in (names := await profile_names(session)):
        return {"name": f"unknown network profile (one of: {', '.join(names)})"}
    return {}


async def save_check_settings(session: AsyncSession, scope: str, name: str, data: CheckSettingsIn) -> int:
    """Set a region's or a network profile's interval, timeout and down/up thresholds (None
    leaves each to the next level; all None removes the entry) and apply them to the monitors
    of its stores at once (keys and history kept). Returns the monitors changed. Commits."""
    name = name.strip()
    if problems := await check_scope_problems(session, scope, name):
        raise InvalidInput(problems)
    values = {
        "interval_s": data.check_interval_s,
        "timeout_s": data.check_timeout_s,
        "down_after": data.down_after,
        "up_after": data.up_after,
    }
    row = await session.get(CheckSettings, (scope, name))
    if all(v is None for v in values.values()):
        if row is not None:
            await session.delete(row)
    elif row is None:
        session.add(CheckSettings(scope=scope, name=name, **values))
    else:
        for key, value in values.items():
            setattr(row, key, value)
    await session.flush()
    column = Store.region if scope == "region" else Store.network_profile
    store_ids = set(await session.scalars(select(Store.id).where(column == name)))
    changed = await apply_check_settings(session, store_ids)
    await session.commit()
    return changed


async def check_settings_list(session: AsyncSession) -> list[CheckSettings]:
    return list(
        await session.scalars(select(CheckSettings).order_by(CheckSettings.scope, CheckSettings.name))
    )
