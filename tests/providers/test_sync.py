"""Inventory sync from the simulated Adyen Management API and Stripe readers: preview, apply, events."""

from __future__ import annotations

from sqlalchemy import func, select

from app.inventory.models import Terminal, TerminalEvent
from app.inventory.schemas import StoreIn, TerminalIn
from app.simulator.providers import AdyenSim, SimTerminal, StripeSim
from tests.html import dom, one, text, texts
from tests.providers.conftest import load_fleet, make_account


async def _count(db, model) -> int:
    async with db.sessionmaker() as session:
        return await session.scalar(select(func.count()).select_from(model))


async def test_adyen_sync_preview_then_apply(db, client):
    stores = [StoreIn(code=f"S-{i}", name=f"Store {i}", adyen_store_id=f"ST{i}") for i in range(3)]
    sim_terminals = [
        SimTerminal(
            poiid=f"S1F2-{i}{j:04d}",
            store_ref=f"ST{i}",
            model="S1F2",
            serial=f"{i}{j:04d}",
            ip=f"10.0.{i}.{j + 10}",
            mac=f"02:00:00:00:{i:02x}:{j:02x}",
        )
        for i in range(3)
        for j in range(90)
    ]  # 270 terminals: 3 pages of 100
    sim_terminals.append(SimTerminal(poiid="S1F2-999", store_ref="ST-unknown", model="S1F2", serial="999"))
    existing = [
        TerminalIn(
            store_code="S-0",
            poiid="S1F2-00000",
            model="S1F2",
            serial="00000",
            provider="adyen",
            lan_host="10.0.0.10",
            mac="02:00:00:00:00:00",
            integration="both",
            lan_port=8443,
            local_api="adyen_local",
            cloud_enabled=True,
        ),
        TerminalIn(
            store_code="S-0",
            poiid="S1F2-00001",
            model="S1F2",
            serial="00001",
            provider="adyen",
            lan_host="10.0.0.99",
            mac="02:00:00:00:00:01",
            cloud_enabled=True,
        ),
    ]
    await load_fleet(db, stores, existing)
    sim = await AdyenSim(sim_terminals).start()
    try:
        account = await make_account(db, sim)
        before = await _count(db, Terminal)
        response = await client.post(f"/api/v1/providers/{account.id}/sync")
        assert response.status_code == 200, response.text
        preview = response.json()
        assert preview["counts"] == {
            "create": 268,
            "update": 1,
            "unchanged": 1,
            "skip": 0,
            "address_changed": 1,
        }
        assert await _count(db, Terminal) == before  # a preview writes nothing
        assert sim.calls["managementTerminals"] == 3  # storeIds of the 3 stores, pages 1..3
        changed = next(r for r in preview["rows"] if r["action"] == "update")
        assert changed["poiid"] == "S1F2-00001" and changed["changes"]["lan_host"] == [
            "10.0.0.99",
            "10.0.0.11",
        ]

        page = await client.get(f"/admin/providers/{account.id}/sync")
        assert page.status_code == 200
        assert "Address changed" in texts(dom(page), "table tbody span.badge")
        assert "would be created" in text(one(dom(page), ".panel"))

        applied = await client.post(
            f"/api/v1/providers/{account.id}/sync", params={"apply": "true", "token": preview["token"]}
        )
        assert applied.status_code == 200 and applied.json()["applied"]
        assert await _count(db, Terminal) == before + 268
        async with db.sessionmaker() as session:
            events = (await session.execute(select(TerminalEvent))).scalars().all()
            moved = (
                await session.execute(select(Terminal).where(Terminal.poiid == "S1F2-00001"))
            ).scalar_one()
            linked = await session.scalar(
                select(func.count()).select_from(Terminal).where(Terminal.provider_account_id == account.id)
            )
        assert [(e.kind, e.detail) for e in events] == [
            ("address_changed", {"lan_host": {"from": "10.0.0.99", "to": "10.0.0.11"}})
        ]
        assert events[0].source == f"sync:{account.name}"
        assert moved.lan_host == "10.0.0.11" and linked == 270

        # Syncing again: everything unchanged; then the terminal's DHCP address changes.
        sim.set_address("S1F2-10005", ip="10.0.1.200")
        page = await client.get(f"/admin/providers/{account.id}/sync")
        token = one(dom(page), 'form input[name="token"]').get("value")
        done = await client.post(f"/admin/providers/{account.id}/sync", data={"token": token})
        assert done.status_code == 200
        [recorded] = [h.getnext() for h in dom(done).cssselect("h2") if text(h) == "Address changes recorded"]
        assert "10.0.1.200" in texts(recorded, "td span.mono")  # the table of the changes recorded
        again = await client.post(f"/admin/providers/{account.id}/sync", data={"token": token})
        assert again.status_code == 409  # a preview is applied once
    finally:
        await sim.stop()


async def test_stripe_sync_places_readers_by_location(db, client):
    stores = [
        StoreIn(code="S-1", name="One", stripe_location_id="tml_1"),
        StoreIn(code="S-2", name="Two", stripe_location_id="tml_2"),
    ]
    await load_fleet(db, stores, [])
    sim = await StripeSim(
        [
            SimTerminal(
                poiid=f"stripe_s700-{i}",
                store_ref="tml_1" if i % 2 else "tml_2",
                model="stripe_s700",
                serial=str(i),
                label=f"Till {i}",
                ip=f"192.168.1.{i}",
            )
            for i in range(1, 151)
        ]
        + [SimTerminal(poiid="stripe_s700-999", store_ref="tml_elsewhere", model="stripe_s700", serial="999")]
    ).start()
    try:
        account = await make_account(db, sim, kind="stripe")
        preview = (await client.post(f"/api/v1/providers/{account.id}/sync")).json()
        assert preview["counts"]["create"] == 150 and preview["counts"]["skip"] == 1
        assert sim.calls["readers"] == 2  # 151 readers, 100 a page
        await client.post(
            f"/api/v1/providers/{account.id}/sync", params={"apply": "true", "token": preview["token"]}
        )
        async with db.sessionmaker() as session:
            t = (await session.execute(select(Terminal).where(Terminal.serial == "3"))).scalar_one()
        assert (t.poiid, t.provider, t.provider_terminal_id, t.label, t.lan_host) == (
            "stripe_s700-3",
            "stripe",
            "tmr_3",
            "Till 3",
            "192.168.1.3",
        )
    finally:
        await sim.stop()


async def test_sync_reports_rejected_key(db, client, adyen_sim):
    stores, _terminals = adyen_sim.fleet
    await load_fleet(db, stores, [])
    account = await make_account(db, adyen_sim, key="AQE-not-the-key-0000")
    response = await client.post(f"/api/v1/providers/{account.id}/sync")
    assert response.status_code == 502 and "401" in response.json()["detail"]
    page = await client.get(f"/admin/providers/{account.id}/sync")
    assert page.status_code == 502 and "401" in text(dom(page))


async def test_a_preview_applies_through_another_web_process_unless_it_changed_meanwhile(
    db, client, settings
):
    # The preview is kept nowhere: its token is what it shows. Another app on the database (as
    # another web process) applies it; a provider that changed since the preview is a 409.
    import httpx

    from app.main import create_app
    from tests.conftest import csrf_header_hook

    await load_fleet(db, [StoreIn(code="S-0", name="Store 0", adyen_store_id="ST0")], [])
    sim = await AdyenSim(
        [
            SimTerminal(poiid=f"S1F2-{j:04d}", store_ref="ST0", model="S1F2", serial=f"{j:04d}")
            for j in range(5)
        ]
    ).start()
    other = create_app(settings, database=db)
    try:
        account = await make_account(db, sim)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=other), base_url="http://other") as b:
            b.event_hooks["request"].append(csrf_header_hook(settings))
            preview = (await client.post(f"/api/v1/providers/{account.id}/sync")).json()
            sim.add(SimTerminal(poiid="S1F2-0099", store_ref="ST0", model="S1F2", serial="0099"))
            stale = await b.post(
                f"/api/v1/providers/{account.id}/sync", params={"apply": "true", "token": preview["token"]}
            )
            assert stale.status_code == 409 and await _count(db, Terminal) == 0

            preview = (await client.post(f"/api/v1/providers/{account.id}/sync")).json()
            applied = await b.post(
                f"/api/v1/providers/{account.id}/sync", params={"apply": "true", "token": preview["token"]}
            )
            assert applied.status_code == 200, applied.text
            assert applied.json()["counts"]["create"] == 6 and await _count(db, Terminal) == 6
    finally:
        await other.state.relay.close()
        await sim.stop()
