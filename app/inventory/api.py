"""JSON API for stores and terminals: paginated, filterable; 4xx with a reason, never 500."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, ConfigDict, field_validator

from app.auth.sessions import Identity, require_admin
from app.errors import NotFound
from app.inventory import queries
from app.inventory.identity import relearn_terminal
from app.inventory.models import PROVIDERS, Store, Terminal
from app.inventory.profile_service import (
    delete_profile,
    get_profile,
    profiles_with_use,
    save_profile,
    stores_using,
)
from app.inventory.schemas import (
    CheckSettingsIn,
    DestinationIn,
    NetworkProfileIn,
    StoreIn,
    TerminalIn,
    as_stored,
)
from app.inventory.service import (
    check_settings_list,
    delete_store,
    delete_terminal,
    save_check_settings,
    save_store,
    save_terminal,
)
from app.poiid import normalise_poiid
from app.vocabulary import State
from app.web.deps import SessionDep

router = APIRouter(tags=["inventory"])
ADMIN = [Depends(require_admin)]
# Filters with a fixed set of values take only those: an unknown one is a 422 naming the choices,
# not an empty list that reads as "none of them".
Provider = Literal[PROVIDERS]  # type: ignore[valid-type]


class StoreOut(StoreIn):
    model_config = ConfigDict(from_attributes=True)
    _printable = field_validator("*")(as_stored)
    id: int
    status: str
    status_since: datetime | None


class TerminalOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    store_code: str
    poiid: str
    model: str
    serial: str
    label: str
    provider: str
    provider_terminal_id: str | None
    integration: str
    lan_host: str | None
    lan_port: int | None
    tcp_ports: str
    local_api: str | None
    mac: str | None
    cloud_enabled: bool
    status: str
    status_since: datetime | None
    cloud_state: str
    last_seen_at: datetime | None


class StorePage(BaseModel):
    items: list[StoreOut]
    total: int
    page: int
    per_page: int


class TerminalPage(BaseModel):
    items: list[TerminalOut]
    total: int
    page: int
    per_page: int


def _store_out(store: Store) -> StoreOut:
    return StoreOut.model_validate(store)


def _terminal_out(terminal: Terminal, store_code: str) -> TerminalOut:
    return TerminalOut.model_validate({**terminal.__dict__, "store_code": store_code})


@router.get("/stores")
async def list_stores(
    session: SessionDep,
    q: str | None = Query(None, description="code or name contains"),
    region: str | None = None,
    page: int = Query(1, ge=1, le=queries.MAX_PAGE),
    per_page: int = Query(50, ge=1, le=500),
) -> StorePage:
    result = await queries.paginate(session, queries.store_query(q=q, region=region), page, per_page)
    items = [_store_out(s) for s in result.items]
    return StorePage(items=items, total=result.total, page=page, per_page=per_page)


@router.post("/stores", status_code=201, dependencies=ADMIN)
async def create_store(data: StoreIn, session: SessionDep) -> StoreOut:
    return _store_out(await save_store(session, data))


@router.get("/stores/{code}")
async def get_store(code: str, session: SessionDep) -> StoreOut:
    store = await queries.store_by_code(session, code)
    if store is None:
        raise NotFound("store", code)
    return _store_out(store)


@router.put("/stores/{code}", dependencies=ADMIN)
async def update_store(code: str, data: StoreIn, session: SessionDep) -> StoreOut:
    return _store_out(await save_store(session, data, current_code=code))


@router.delete("/stores/{code}", status_code=204, dependencies=ADMIN)
async def remove_store(code: str, session: SessionDep) -> Response:
    await delete_store(session, code)
    return Response(status_code=204)


@router.get("/terminals")
async def list_terminals(
    session: SessionDep,
    q: str | None = Query(None, description="POIID, serial, label or store code contains"),
    store: str | None = Query(None, description="store code"),
    provider: Provider | None = Query(None, description="provider kind"),
    status: State | None = Query(None, description="terminal status"),
    page: int = Query(1, ge=1, le=queries.MAX_PAGE),
    per_page: int = Query(50, ge=1, le=500),
) -> TerminalPage:
    query = queries.terminal_query(q=q, store=store, provider=provider, status=status)
    result = await queries.paginate(session, query, page, per_page)
    items = [_terminal_out(t, code) for t, code in result.items]
    return TerminalPage(items=items, total=result.total, page=page, per_page=per_page)


@router.post("/terminals", status_code=201, dependencies=ADMIN)
async def create_terminal(data: TerminalIn, session: SessionDep) -> TerminalOut:
    terminal = await save_terminal(session, data)
    return _terminal_out(terminal, data.store_code)


@router.get("/terminals/{poiid}")
async def get_terminal(poiid: str, session: SessionDep) -> TerminalOut:
    row = await queries.terminal_with_store_code(session, poiid)
    if row is None:
        raise NotFound("terminal", poiid)
    return _terminal_out(*row)


@router.put("/terminals/{poiid}", dependencies=ADMIN)
async def update_terminal(poiid: str, data: TerminalIn, session: SessionDep) -> TerminalOut:
    terminal = await save_terminal(session, data, current_poiid=poiid)
    return _terminal_out(terminal, data.store_code)


@router.delete("/terminals/{poiid}", status_code=204, dependencies=ADMIN)
async def remove_terminal(poiid: str, session: SessionDep) -> Response:
    await delete_terminal(session, poiid)
    return Response(status_code=204)


class RelearnOut(BaseModel):
    poiid: str
    forgotten: int  # monitors whose learned identity was dropped; the next healthy check learns anew


@router.post("/terminals/{poiid}/identity/relearn", dependencies=ADMIN)
async def relearn_terminal_identity(
    poiid: str, session: SessionDep, admin: Annotated[Identity, Depends(require_admin)]
) -> RelearnOut:
    """After a real replacement: forget the device identity learned at the terminal's address
    (recorded as a terminal event); its next healthy check learns the new device."""
    forgotten = await relearn_terminal(session, poiid, admin.username)
    return RelearnOut(poiid=normalise_poiid(poiid), forgotten=forgotten)


# --- check settings of a region or a network profile ------------------------------------------


class CheckSettingsOut(CheckSettingsIn):
    _printable = field_validator("*")(as_stored)
    scope: Literal["region", "profile"]
    name: str
    monitors_changed: int | None = None  # after a change: the monitors given the new values


@router.get("/check-settings", summary="Check settings of regions and network profiles")
async def list_check_settings(session: SessionDep) -> list[CheckSettingsOut]:
    """Interval, timeout and down/up thresholds set per region (every monitor of its stores)
    and per network profile (its stores' network monitors). A store's own (on the store) win
    over its region's, which win over its profile's; unset values fall through to the next
    level, then to the defaults (TERMPULSE_CHECK_INTERVAL_S, TERMPULSE_CHECK_TIMEOUT_S, down
    after 2 failed checks, up after 1 passed)."""
    return [_settings_out(c.scope, c.name, c) for c in await check_settings_list(session)]


@router.put(
    "/check-settings/{scope}/{name}", dependencies=ADMIN, summary="Set a region's or profile's checks"
)
async def put_check_settings(
    scope: Literal["region", "profile"], name: str, data: CheckSettingsIn, session: SessionDep
) -> CheckSettingsOut:
    """Set them (null leaves a value to the next level; all null removes the entry) and apply
    them to the monitors of the stores concerned now; the monitors keep their keys and history."""
    changed = await save_check_settings(session, scope, name, data)
    return CheckSettingsOut(scope=scope, name=name.strip(), **data.model_dump(), monitors_changed=changed)


def _settings_out(scope: str, name: str, c: Any) -> CheckSettingsOut:
    return CheckSettingsOut.model_validate(
        {
            "scope": scope,
            "name": name,
            "check_interval_s": c.interval_s,
            "check_timeout_s": c.timeout_s,
            "down_after": c.down_after,
            "up_after": c.up_after,
        }
    )


# --- network profiles ------------------------------------------------------------------------


class NetworkProfileOut(BaseModel):
    name: str
    description: str
    destinations: list[DestinationIn]
    stores: int  # stores using it
    monitors: dict[str, int] | None = None  # after a write: the monitors created, updated, deleted


@router.get("/network-profiles", summary="Network profiles")
async def list_network_profiles(session: SessionDep) -> list[NetworkProfileOut]:
    """What each store network profile checks: its destinations (host, port, checks: dns, tcp,
    tls, https, websocket, ping), and how many stores use it."""
    return [_profile_out(p, used) for p, used in await profiles_with_use(session)]


@router.get("/network-profiles/{name}")
async def get_network_profile(name: str, session: SessionDep) -> NetworkProfileOut:
    return _profile_out(await get_profile(session, name), await stores_using(session, name))


@router.post("/network-profiles", status_code=201, dependencies=ADMIN)
async def create_network_profile(data: NetworkProfileIn, session: SessionDep) -> NetworkProfileOut:
    saved = await save_profile(session, data)
    return _profile_out(saved.profile, saved.stores, saved.monitors)


@router.put("/network-profiles/{name}", dependencies=ADMIN)
async def update_network_profile(name: str, data: NetworkProfileIn, session: SessionDep) -> NetworkProfileOut:
    """Replace it (a new name renames it; its stores follow). The monitors of the stores using
    it are re-derived at once: existing checks keep their history, removed ones go."""
    saved = await save_profile(session, data, current=name)
    return _profile_out(saved.profile, saved.stores, saved.monitors)


@router.delete("/network-profiles/{name}", status_code=204, dependencies=ADMIN)
async def remove_network_profile(name: str, session: SessionDep) -> Response:
    """Refused (409) while stores use it."""
    await delete_profile(session, name)
    return Response(status_code=204)


def _profile_out(profile: Any, stores: int, monitors: dict[str, int] | None = None) -> NetworkProfileOut:
    return NetworkProfileOut(
        name=profile.name,
        description=profile.description,
        destinations=[DestinationIn.model_validate(d) for d in profile.destinations],
        stores=stores,
        monitors=monitors,
    )
