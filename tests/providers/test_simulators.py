"""The provider simulators as the demo uses them: the sample fleet, registered accounts, the story."""

from __future__ import annotations

import csv

import httpx
from sqlalchemy import select

from app.inventory.csvimport import SAMPLE_FLEET, import_fleet
from app.inventory.models import Store, Terminal
from app.monitoring.cloud import CloudPoller
from app.simulator.providers import register_simulator_accounts, start_provider_simulators
from tests.providers.conftest import SECRET, make_due


def _rows(name: str) -> list[dict]:
    with (SAMPLE_FLEET / name).open(newline="") as f:
        return list(csv.DictReader(f))


async def test_sample_fleet_story_drop_and_return(db):
    from app.config import Settings

    files = [(n, (SAMPLE_FLEET / n).read_bytes()) for n in ("stores.csv", "terminals.csv")]
    async with db.sessionmaker() as session:
        await import_fleet(session, files)
    sims = await start_provider_simulators(_rows("terminals.csv"), _rows("stores.csv"))
    try:
        await register_simulator_accounts(db, SECRET, sims)
        await register_simulator_accounts(db, SECRET, sims)  # idempotent
        poller = CloudPoller(
            db, Settings(database_url=db.url, secret_key=SECRET, provider_hosts=sims.hosts()), backoff_s=0.01
        )

        async def cloud_of(store_ref: str) -> set[str]:
            async with db.sessionmaker() as session:
                return set(
                    (
                        await session.execute(
                            select(Terminal.cloud_state)
                            .join(Store)
                            .where(Store.adyen_store_id == store_ref, Terminal.cloud_enabled.is_(True))
                        )
                    ).scalars()
                )

        async def sweep(times: int) -> None:
            for _ in range(times):
                await make_due(db)
                await poller.sweep()

        try:
            await sweep(1)
            store = sims.start_demo_story(up_s=3600, down_s=3600, drift=False)
            assert await cloud_of(store) == {"connected"}
            sims.adyen.drop_store(store)  # what the story does after up_s
            await sweep(2)
            assert await cloud_of(store) == {"disconnected"}
            sims.adyen.restore_store(store)
            await sweep(1)
            assert await cloud_of(store) == {"connected"}
            stores_with_cloud = len(
                {t.store_ref for t in sims.adyen.terminals.values() if t.cloud_enabled}
                | {t.store_ref for t in sims.stripe.terminals.values() if t.cloud_enabled}
            )
            assert poller.stats.calls["total"] <= 4 * stores_with_cloud + 4
        finally:
            await poller.close()
        # Control endpoints drive a simulator running in another process.
        async with httpx.AsyncClient(base_url=sims.adyen.url) as control:
            assert (await control.post("/_sim/drop_store", json={"store": store})).status_code == 200
            assert (await control.get("/_sim/calls")).json()["connectedDevices"] >= 1
        assert not any(t.connected for t in sims.adyen.by_store[store])
    finally:
        await sims.stop()


async def test_drift_returns_terminals_to_healthy_and_leaves_the_story_alone(caplog):
    """The demo's drift: a few terminals drop for one period and always come back (it never piles
    up), never in the story's store; logs name stores by their codes."""
    import asyncio
    import logging

    sims = await start_provider_simulators(_rows("terminals.csv"), _rows("stores.csv"))
    try:
        adyen = sims.adyen
        pool = [t for t in adyen.terminals.values() if t.cloud_enabled]
        caplog.set_level(logging.INFO, logger="app.simulator.providers")
        store = sims.start_demo_story(up_s=0.01, down_s=3600, drift=False)  # the story drops its store
        adyen.start_drift(period_s=0.02, fraction=0.1, seed=1)
        most, periods = 0, 0
        async with asyncio.timeout(120):  # a drift that stopped would hang here
            while periods < 20:
                await asyncio.sleep(0.01)
                down = [t for t in pool if not t.connected and t.store_ref != store]
                most = max(most, len(down))
                periods = sum("simulator drift" in r.getMessage() for r in caplog.records)
        assert 0 < most <= max(1, int(len(pool) * 0.1))  # one period's drift at most, never more
        assert all(not t.connected for t in adyen.by_store[store])  # the story's, not the drift's
        code = adyen.store_name(store)
        assert code.startswith("S-") and code != store
        assert any(f"store {code} loses" in r.getMessage() for r in caplog.records)
        assert all(f"({code})" not in r.getMessage() for r in caplog.records if "drift" in r.getMessage())
    finally:
        await sims.stop()
