"""The cloud poller against the Adyen and Stripe simulators, over real HTTP on loopback."""

from __future__ import annotations

from sqlalchemy import select

from app.inventory.models import Terminal
from app.providers.poller import CloudPoller
from tests.providers.conftest import SECRET, cloud_states, load_fleet, make_account, make_due


def _settings(db):
    from app.config import Settings

    return Settings(database_url=db.url, secret_key=SECRET, allowed_networks=["127.0.0.0/8"])


async def _sweep(db, poller, times: int = 1):
    for _ in range(times):
        await make_due(db)
        await poller.sweep()


async def test_one_call_per_store_updates_every_terminal(db, adyen_sim):
    stores, terminals = adyen_sim.fleet
    await load_fleet(db, stores, terminals)
    await make_account(db, adyen_sim)
    adyen_sim.set_connected(terminals[0].poiid, False)
    poller = CloudPoller(db, _settings(db), backoff_s=0.01)
    try:
        await _sweep(db, poller, times=2)
    finally:
        await poller.close()
    assert adyen_sim.calls["connectedDevices"] == 2 * len(stores)  # never one per terminal
    assert poller.stats.calls["total"] == 2 * len(stores)
    states = await cloud_states(db)
    assert states[terminals[0].poiid] == ("down", "cloud_disconnected")
    assert all(states[t.poiid][0] == "up" for t in terminals[1:])
    async with db.sessionmaker() as session:
        rows = {t.poiid: t for t in (await session.execute(select(Terminal))).scalars()}
    assert rows[terminals[0].poiid].cloud_state == "disconnected"
    assert rows[terminals[1].poiid].cloud_state == "connected"
    assert rows[terminals[1].poiid].last_seen_at is not None
