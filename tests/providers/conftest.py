"""Fixtures: a small fleet in the database and the provider simulators on loopback."""

from __future__ import annotations

import pytest
from sqlalchemy import select, update

from app.db import utcnow
from app.inventory.models import Monitor
from app.inventory.schemas import StoreIn, TerminalIn
from app.inventory.service import upsert_inventory
from app.providers.hosts import ProviderHosts
from app.providers.schemas import AccountIn
from app.providers.service import create_account
from app.simulator.providers import AdyenSim, SimTerminal, StripeSim

SECRET = "test-secret-key"


def adyen_fleet(stores: int = 3, per_store: int = 4) -> tuple[list[StoreIn], list[TerminalIn]]:
    store_rows = [
        StoreIn(code=f"S-{i:03d}", name=f"Store {i}", adyen_store_id=f"ST{i:03d}") for i in range(stores)
    ]
    terminals = [
        TerminalIn(
            store_code=f"S-{i:03d}",
            poiid=f"V400m-{i:03d}{j:03d}",
            model="V400m",
            serial=f"{i:03d}{j:03d}",
            provider="adyen",
            integration="cloud",
            cloud_enabled=True,
        )
        for i in range(stores)
        for j in range(per_store)
    ]
    return store_rows, terminals


def sim_from(terminals: list[TerminalIn], stores: list[StoreIn], *, kind: str = "adyen") -> list[SimTerminal]:
    refs = {s.code: (s.adyen_store_id if kind == "adyen" else s.stripe_location_id) for s in stores}
    return [
        SimTerminal(
            poiid=t.poiid,
            store_ref=refs[t.store_code],
            model=t.model,
            serial=t.serial,
            ip=t.lan_host,
            mac=t.mac,
        )
        for t in terminals
        if t.provider == kind
    ]


async def load_fleet(db, stores, terminals) -> None:
    async with db.sessionmaker() as session:
        await upsert_inventory(session, stores, terminals, source="test")
        await session.commit()


async def make_account(db, sim, *, kind: str = "adyen", key: str | None = None, **extra):
    base = sim.device_api_url if kind == "adyen" and not extra.get("use_legacy_api") else sim.url
    data = {
        "name": f"{kind} sim",
        "kind": kind,
        "merchant_account": getattr(sim, "merchant_account", ""),
        "api_base_url": base,
        "management_base_url": sim.url,
        "api_key": key or sim.api_key,
        "requests_per_second": 1000,
        **extra,
    }
    async with db.sessionmaker() as session:
        return await create_account(session, SECRET, AccountIn(**data), hosts=ProviderHosts(["127.0.0.1"]))


async def make_due(db) -> None:
    async with db.sessionmaker() as session:
        await session.execute(update(Monitor).where(Monitor.kind == "cloud").values(next_due_at=utcnow()))
        await session.commit()


async def cloud_states(db) -> dict[str, tuple[str, str | None]]:
    """POIID -> (monitor state, last diagnosis) of the cloud monitors."""
    async with db.sessionmaker() as session:
        rows = await session.execute(
            select(Monitor.target, Monitor.state, Monitor.last_diagnosis).where(Monitor.kind == "cloud")
        )
        return {r.target: (r.state, r.last_diagnosis) for r in rows}


@pytest.fixture
async def adyen_sim():
    stores, terminals = adyen_fleet()
    sim = await AdyenSim(sim_from(terminals, stores)).start()
    sim.fleet = (stores, terminals)
    yield sim
    await sim.stop()


@pytest.fixture
async def stripe_sim():
    sim = await StripeSim([]).start()
    yield sim
    await sim.stop()
