"""Presets: the Stripe Terminal network profile and the Torgsoft bank-terminal integration
(its protocol port, the JSON WebSocket service on 3000, ping), applied through the API and
checked for real against simulated services on loopback."""

from types import SimpleNamespace

import pytest
from sqlalchemy import select

from app.inventory import monitors as derive
from app.inventory.models import Monitor
from app.inventory.profiles import PRESETS
from app.monitoring.manual import check_terminal_now
from tests.checks.test_ping import may_ping

STRIPE = ("api.stripe.com", "armada.stripe.com", "gator.stripe.com", "api.emms.bbpos.com")


def test_the_stripe_terminal_profile_checks_dns_tcp_and_tls_of_each_stripe_host():
    specs = derive.store_monitor_specs(SimpleNamespace(id=3), PRESETS["stripe-terminal"][1])
    assert sorted((s.kind, s.target) for s in specs) == sorted(
        [("dns", h) for h in STRIPE] + [(k, f"{h}:443") for h in STRIPE for k in ("tcp", "tls")]
    )


async def test_a_store_takes_the_stripe_preset_through_the_api(client, db):
    r = await client.post(
        "/api/v1/stores", json={"code": "S-STR", "name": "Stripe", "network_profile": "stripe-terminal"}
    )
    assert r.status_code == 201, r.text
    async with db.sessionmaker() as s:
        kinds = sorted((await s.scalars(select(Monitor.kind).where(Monitor.terminal_id.is_(None)))).all())
    assert kinds == ["dns"] * 4 + ["tcp"] * 4 + ["tls"] * 4


async def torgsoft_terminal(client, poiid, host, port):
    await client.post("/api/v1/stores", json={"code": "S-TRG", "name": "Torgsoft shop"})
    body = {
        "store_code": "S-TRG",
        "poiid": poiid,
        "integration": "local",
        "provider": "generic",
        "lan_host": host,
        "lan_port": port,
        "local_api": "torgsoft",
    }
    r = await client.post("/api/v1/terminals", json=body)
    assert r.status_code == 201, r.text


async def kinds_of(db):
    async with db.sessionmaker() as s:
        rows = (
            await s.execute(select(Monitor.kind, Monitor.target).where(Monitor.terminal_id.is_not(None)))
        ).all()
    return sorted(tuple(r) for r in rows)


async def test_torgsoft_on_its_json_websocket_port(client, db, settings, ctx, terminal):
    t = await terminal("websocket", port=3000)
    await torgsoft_terminal(client, "TRG-0001", t.host, 3000)
    assert await kinds_of(db) == [
        ("ping", t.host),
        ("tcp", f"{t.host}:3000"),
        ("websocket", f"ws://{t.host}:3000/"),
    ]
    report = await check_terminal_now(db, settings, "TRG-0001", probe_context=ctx)
    by_kind = {c.kind: c for c in report.checks}
    assert by_kind["websocket"].outcome == "ok" and by_kind["tcp"].outcome == "ok", report
    if may_ping():
        assert by_kind["ping"].outcome == "ok" and report.verdict == "connected", report


async def test_torgsoft_on_a_bpos_port_and_a_printer_on_3000(client, db, settings, ctx, terminal):
    t = await terminal("tcp", port=2000)
    await torgsoft_terminal(client, "TRG-0002", t.host, 2000)
    assert await kinds_of(db) == [("ping", t.host), ("tcp", f"{t.host}:2000")]  # no WebSocket on BPOS

    printer = await terminal("http", port=3000)
    await torgsoft_terminal(client, "TRG-0003", printer.host, 3000)
    report = await check_terminal_now(db, settings, "TRG-0003", probe_context=ctx)
    assert report.verdict == "disconnected" and report.diagnosis.code == "ws_rejected", report


@pytest.mark.parametrize("api", ["torgsoft"])
async def test_the_terminal_form_offers_the_preset(client, api):
    page = await client.get("/admin/terminals/new")
    assert f'value="{api}"' in page.text
    page = await client.get("/admin/stores/new")
    assert 'value="stripe-terminal"' in page.text
