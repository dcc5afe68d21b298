"""The cloud poller against the Adyen and Stripe simulators, over real HTTP on loopback."""

from __future__ import annotations

from datetime import UTC

from sqlalchemy import select

from app.inventory.models import Terminal
from app.monitoring.cloud import CloudPoller
from tests.providers.conftest import SECRET, cloud_states, load_fleet, make_account, make_due


def _settings(db):
    from app.config import Settings

    return Settings(
        database_url=db.url, secret_key=SECRET, allowed_networks=["127.0.0.0/8"], provider_hosts=["127.0.0.1"]
    )


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


async def _account_error(db) -> str | None:
    from app.providers.models import ProviderAccount

    async with db.sessionmaker() as session:
        return (await session.execute(select(ProviderAccount.last_error))).scalar_one()


async def _up_then(db, sim, poller, failure: dict):
    await _sweep(db, poller)
    assert {s for s, _ in (await cloud_states(db)).values()} == {"up"}
    sim.fail(**failure)
    await _sweep(db, poller)
    return await cloud_states(db)


async def test_credentials_rejected_is_unknown_and_shown_to_admins(db, adyen_sim):
    stores, terminals = adyen_sim.fleet
    await load_fleet(db, stores, terminals)
    await make_account(db, adyen_sim)
    poller = CloudPoller(db, _settings(db), backoff_s=0.01, concurrency=1)
    try:
        states = await _up_then(db, adyen_sim, poller, {"status": 401, "times": 1})
        assert {v for v in states.values()} == {("unknown", "provider_auth_rejected")}  # never down
        assert "401" in await _account_error(db)
        calls = adyen_sim.calls["connectedDevices"]
        await _sweep(db, poller)  # paused: the rejected key is not hammered
        assert adyen_sim.calls["connectedDevices"] == calls
        assert {v for v in (await cloud_states(db)).values()} == {("unknown", "provider_auth_rejected")}
    finally:
        await poller.close()


async def test_forbidden_merchant_is_credentials_rejected(db, adyen_sim):
    stores, terminals = adyen_sim.fleet
    await load_fleet(db, stores, terminals)
    await make_account(db, adyen_sim, merchant_account="SomeoneElse")
    poller = CloudPoller(db, _settings(db), backoff_s=0.01)
    try:
        await _sweep(db, poller)
    finally:
        await poller.close()
    assert {v for v in (await cloud_states(db)).values()} == {("unknown", "provider_auth_rejected")}
    assert "403" in await _account_error(db)


async def test_new_key_resumes_polling(db, adyen_sim):
    from app.providers.models import ProviderAccount
    from app.providers.service import replace_key

    stores, terminals = adyen_sim.fleet
    await load_fleet(db, stores, terminals)
    await make_account(db, adyen_sim, key="AQE-wrong-key-123456")
    poller = CloudPoller(db, _settings(db), backoff_s=0.01)
    try:
        await _sweep(db, poller)
        assert {s for s, _ in (await cloud_states(db)).values()} == {"unknown"}
        async with db.sessionmaker() as session:
            account = (await session.execute(select(ProviderAccount))).scalar_one()
            await replace_key(session, SECRET, account, adyen_sim.api_key)
        await poller._load_accounts(force=True)
        await _sweep(db, poller)
    finally:
        await poller.close()
    assert {s for s, _ in (await cloud_states(db)).values()} == {"up"}
    assert await _account_error(db) is None


async def test_rate_limited_backs_off_honouring_retry_after(db, adyen_sim):
    stores, terminals = adyen_sim.fleet
    await load_fleet(db, stores, terminals)
    await make_account(db, adyen_sim)
    poller = CloudPoller(db, _settings(db), backoff_s=0.01, concurrency=1)
    try:
        await _sweep(db, poller)
        adyen_sim.fail(429, times=1, retry_after=30)
        before = adyen_sim.calls["connectedDevices"]
        await _sweep(db, poller)
        # The first store got the 429; the others waited instead of calling.
        assert adyen_sim.calls["connectedDevices"] == before + 1
        states = await cloud_states(db)
        limited = [p for p, v in states.items() if v == ("unknown", "provider_rate_limited")]
        assert len(limited) == 4 and all(s == "up" for p, (s, _) in states.items() if p not in limited)
        async with db.sessionmaker() as session:
            from app.inventory.models import Monitor

            due = (
                await session.execute(select(Monitor.next_due_at).where(Monitor.target.not_in(limited)))
            ).scalars()
            from app.db import utcnow

            assert all((d - utcnow()).total_seconds() > 20 for d in due)  # rescheduled after Retry-After
        assert "429" in await _account_error(db)
    finally:
        await poller.close()


async def test_server_errors_retry_then_unknown(db, adyen_sim):
    stores, terminals = adyen_sim.fleet
    await load_fleet(db, stores, terminals)
    await make_account(db, adyen_sim)
    poller = CloudPoller(db, _settings(db), backoff_s=0.01, concurrency=1)
    try:
        await _sweep(db, poller)
        adyen_sim.fail(500, times=2)  # two failures, then the retry succeeds
        await _sweep(db, poller)
        assert {s for s, _ in (await cloud_states(db)).values()} == {"up"}
        adyen_sim.fail(500, times=3 * len(stores))  # every attempt of every store fails
        await _sweep(db, poller)
        assert {v for v in (await cloud_states(db)).values()} == {("unknown", "provider_unavailable")}
    finally:
        await poller.close()


async def test_timeouts_are_unknown_not_down(db, adyen_sim):
    stores, terminals = adyen_sim.fleet
    await load_fleet(db, stores, terminals)
    await make_account(db, adyen_sim)
    poller = CloudPoller(db, _settings(db), backoff_s=0.01, timeout_s=0.2, retries=1)
    try:
        await _sweep(db, poller)
        adyen_sim.set_slow(0.5)
        await _sweep(db, poller, times=2)
    finally:
        adyen_sim.set_slow(0)
        await poller.close()
    assert {v for v in (await cloud_states(db)).values()} == {("unknown", "provider_unavailable")}


async def test_not_enabled_is_a_minus_not_disconnected(db, adyen_sim):
    stores, terminals = adyen_sim.fleet
    terminals[0] = terminals[0].model_copy(update={"cloud_enabled": False})  # the inventory says: off
    await load_fleet(db, stores, terminals)
    await make_account(db, adyen_sim)
    for t in terminals:
        if t.store_code == stores[1].code:  # WebSockets never switched on at this store
            adyen_sim.set_cloud_enabled(t.poiid, False)
    poller = CloudPoller(db, _settings(db), backoff_s=0.01)
    try:
        await _sweep(db, poller, times=2)
        async with db.sessionmaker() as session:
            rows = {t.poiid: t for t in (await session.execute(select(Terminal))).scalars()}
        assert rows[terminals[0].poiid].cloud_state == "not_enabled"  # no cloud monitor: minus
        store1 = [t.poiid for t in terminals if t.store_code == stores[1].code]
        assert {rows[p].cloud_state for p in store1} == {"not_enabled"}
        states = await cloud_states(db)
        assert {states[p][1] for p in store1} == {"cloud_not_enabled"}
        # A store whose terminals were connected and then all dropped is disconnected, not "not enabled".
        adyen_sim.drop_store(stores[2].adyen_store_id)
        await _sweep(db, poller, times=2)
        async with db.sessionmaker() as session:
            rows = {t.poiid: t for t in (await session.execute(select(Terminal))).scalars()}
        store2 = [t.poiid for t in terminals if t.store_code == stores[2].code]
        assert {rows[p].cloud_state for p in store2} == {"disconnected"}
    finally:
        await poller.close()


async def test_legacy_connected_terminals(db, adyen_sim):
    stores, terminals = adyen_sim.fleet
    await load_fleet(db, stores, terminals)
    await make_account(db, adyen_sim, use_legacy_api=True)
    adyen_sim.set_connected(terminals[-1].poiid, False)
    poller = CloudPoller(db, _settings(db), backoff_s=0.01)
    try:
        await _sweep(db, poller, times=2)
    finally:
        await poller.close()
    assert adyen_sim.calls["connectedTerminals"] == 2 * len(stores)
    assert adyen_sim.calls["connectedDevices"] == 0
    states = await cloud_states(db)
    assert states[terminals[-1].poiid][0] == "down"
    assert all(states[t.poiid][0] == "up" for t in terminals[:-1])


async def test_stripe_readers_paged_with_last_seen(db, stripe_sim):
    from datetime import datetime

    from app.inventory.schemas import StoreIn, TerminalIn
    from app.simulator.providers import SimTerminal

    stores = [StoreIn(code="S-100", name="Big store", stripe_location_id="tml_100")]
    terminals = [
        TerminalIn(
            store_code="S-100",
            poiid=f"bbpos_wisepos_e-{i:05d}",
            model="bbpos_wisepos_e",
            serial=f"{i:05d}",
            provider="stripe",
            cloud_enabled=True,
        )
        for i in range(230)
    ]
    for t in terminals:
        stripe_sim.add(SimTerminal(poiid=t.poiid, store_ref="tml_100", model=t.model, serial=t.serial))
    stripe_sim.add(SimTerminal(poiid="stripe_s700-1", store_ref="tml_other", model="stripe_s700", serial="1"))
    await load_fleet(db, stores, terminals)
    await make_account(db, stripe_sim, kind="stripe")
    offline = stripe_sim.terminals[terminals[7].poiid]
    offline.connected, offline.last_seen_ms = False, 1_700_000_000_000
    poller = CloudPoller(db, _settings(db), backoff_s=0.01)
    try:
        await _sweep(db, poller, times=2)
    finally:
        await poller.close()
    assert stripe_sim.calls["readers"] == 2 * 3  # 230 readers: 3 pages of 100, one store, two sweeps
    states = await cloud_states(db)
    assert states[terminals[7].poiid] == ("down", "cloud_disconnected")
    assert sum(1 for s, _ in states.values() if s == "up") == 229
    async with db.sessionmaker() as session:
        seen = (
            await session.execute(select(Terminal.last_seen_at).where(Terminal.poiid == terminals[7].poiid))
        ).scalar()
    assert seen == datetime.fromtimestamp(1_700_000_000, UTC)


async def test_stripe_key_rejected(db, stripe_sim):
    from app.inventory.schemas import StoreIn, TerminalIn
    from app.simulator.providers import SimTerminal

    await load_fleet(
        db,
        [StoreIn(code="S-1", name="One", stripe_location_id="tml_1")],
        [
            TerminalIn(
                store_code="S-1",
                poiid="stripe_s700-9",
                model="stripe_s700",
                serial="9",
                provider="stripe",
                cloud_enabled=True,
            )
        ],
    )
    stripe_sim.add(SimTerminal(poiid="stripe_s700-9", store_ref="tml_1", model="stripe_s700", serial="9"))
    await make_account(db, stripe_sim, kind="stripe", key="sk_test_not_the_right_one")
    poller = CloudPoller(db, _settings(db), backoff_s=0.01)
    try:
        await _sweep(db, poller)
    finally:
        await poller.close()
    assert await cloud_states(db) == {"stripe_s700-9": ("unknown", "provider_auth_rejected")}


async def test_budget_limits_the_call_rate(db, adyen_sim):
    import time

    stores, terminals = adyen_sim.fleet
    await load_fleet(db, stores, terminals)
    await make_account(db, adyen_sim, requests_per_second=4)
    poller = CloudPoller(db, _settings(db))
    try:
        await _sweep(db, poller)  # bucket starts full (burst 4)
        started = time.perf_counter()
        await _sweep(db, poller)  # 3 calls at 4/s with ~1 token refilled meanwhile
        await _sweep(db, poller)
        elapsed = time.perf_counter() - started
    finally:
        await poller.close()
    assert elapsed >= 0.5
