"""Check store: every network and terminal check of a store at once, one report (its network
first, then each terminal's verdict, cause and fix), through check_store_now, the store page
(htmx), the API and `termpulse check --store`, on both databases, against simulated terminals
and processor hosts on loopback; one store's port 7003 is blocked (only from that store)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
from sqlalchemy import func, select, update

from app.config import Settings
from app.inventory.models import Monitor, Store
from app.monitoring.manual import check_store_now
from app.monitoring.models import CheckResult
from app.simulator.network import endpoint_key
from tests.checks.conftest import OCTET
from tests.cli import termpulse_async
from tests.html import dom, one, text, texts

HX = {"HX-Request": "true"}
INGENICO = "temterminalsnar01.icloud.ingenico.com"
HEALTHY, BLOCKED = (f"S-{OCTET * 100 + n}" for n in (31, 32))


@pytest.fixture
def settings(db, network, tmp_path):
    ca = tmp_path / "sim-ca.pem"
    ca.write_text(network.ca_pem)
    return Settings(
        database_url=db.url,
        secret_key="test-secret-key",
        allowed_networks=["127.0.0.0/8"],
        basic_auth=True,
        dns_nameservers=[network.dns.host],
        dns_port=network.dns.port,
        trusted_ca_file=ca,
    )


@dataclass
class Fleet:
    healthy: list[str]  # POIIDs at HEALTHY (two answering, one with no LAN address)
    blocked: list[str]  # POIIDs at BLOCKED (one answering, one refusing)


@pytest.fixture
async def fleet(client, db, network, terminal):
    """Two stores on the fullsteam-ingenico profile, checked from each store's own source
    address (as the demo does); BLOCKED cannot reach port 7003 of the Ingenico host."""
    made = Fleet([], [])
    for code in (HEALTHY, BLOCKED):
        r = await client.post(
            "/api/v1/stores",
            json={"code": code, "name": f"Shop {code}", "network_profile": "fullsteam-ingenico"},
        )
        assert r.status_code == 201, r.text

    async def add(code, poiid, host=None, port=None):
        body = {
            "store_code": code,
            "poiid": poiid,
            "integration": "local",
            "lan_host": host,
            "lan_port": port,
        }
        r = await client.post("/api/v1/terminals", json=body)
        assert r.status_code == 201, r.text
        (made.healthy if code == HEALTHY else made.blocked).append(poiid)

    for i in range(2):
        t = await terminal("tcp")
        await add(HEALTHY, f"CS-OK-{i}", t.host, t.port)
    await add(HEALTHY, "CS-NOLAN")
    t = await terminal("tcp")
    await add(BLOCKED, "CS-B-OK", t.host, t.port)
    await add(BLOCKED, "CS-B-REFUSED", t.host, 9)  # the terminal's address, a port nothing listens on

    async with db.sessionmaker() as s:
        for code in (HEALTHY, BLOCKED):
            sid = await s.scalar(select(Store.id).where(Store.code == code))
            for m in await s.scalars(
                select(Monitor).where(Monitor.store_id == sid, Monitor.terminal_id.is_(None))
            ):
                m.params = {**m.params, "source": network.store_source(code)}
        # one deadline per check: a lookup and a connect on a loaded machine fit in 1.5 s
        await s.execute(update(Monitor).values(timeout_s=1.5))
        await s.commit()
    await network.block_port_for_store(BLOCKED, INGENICO, 7003)
    yield made
    await network.heal_store(BLOCKED)
    await network.sim.set_behaviour(endpoint_key(INGENICO, 7003, BLOCKED), "healthy")  # blockable again


def _by_poiid(report):
    return {t.poiid: t for t in report.terminals}


async def test_check_store_now_network_first_then_each_terminal(db, settings, ctx, fleet):
    report = await check_store_now(db, settings, BLOCKED, probe_context=ctx)
    assert report.store_code == BLOCKED and report.network_verdict == "disconnected"
    assert report.network_diagnosis.code == "tcp_timeout" and "7003" in report.network_diagnosis.cause
    assert {c.scope for c in report.network} == {"store network"}
    blocked = [c for c in report.network if c.outcome != "ok"]
    assert [(c.kind, c.target) for c in blocked] == [("tcp", f"{INGENICO}:7003")], report.network
    terminals = _by_poiid(report)
    assert sorted(terminals) == sorted(fleet.blocked)
    # Each terminal's own checks only; its verdict counts the store's network (as Check connection).
    ok, refused = terminals["CS-B-OK"], terminals["CS-B-REFUSED"]
    assert [c.scope for c in ok.checks] == ["terminal"] and ok.checks[0].outcome == "ok"
    assert ok.verdict == "disconnected" and ok.diagnosis.code == "tcp_timeout"
    assert refused.verdict == "disconnected" and refused.diagnosis.code == "tcp_refused"  # its own fault
    json.dumps(report.as_dict())

    # Stored as manual results, one per monitor of the store, through the one writer.
    async with db.sessionmaker() as s:
        sid = await s.scalar(select(Store.id).where(Store.code == BLOCKED))
        monitors = await s.scalar(select(func.count()).select_from(Monitor).where(Monitor.store_id == sid))
        manual = await s.scalar(
            select(func.count())
            .select_from(CheckResult)
            .join(Monitor, Monitor.id == CheckResult.monitor_id)
            .where(Monitor.store_id == sid, CheckResult.manual.is_(True))
        )
    assert manual == monitors == len(report.network) + 2

    healthy = await check_store_now(db, settings, HEALTHY.lower(), probe_context=ctx)
    assert healthy.network_verdict == "connected" and healthy.network_diagnosis is None, healthy.network
    verdicts = {p: t.verdict for p, t in _by_poiid(healthy).items()}
    assert verdicts == {"CS-OK-0": "connected", "CS-OK-1": "connected", "CS-NOLAN": "not_monitored"}
    assert healthy.all_connected and not report.all_connected


async def test_store_page_check_store_button_and_report(client, fleet):
    page = dom(await client.get(f"/stores/{BLOCKED}"))
    button = one(page, "#check-store-btn")
    assert button.get("hx-post") == f"/stores/{BLOCKED}/check" and "Check store" in text(button)

    r = await client.post(f"/stores/{BLOCKED}/check", headers=HX)
    assert r.status_code == 200
    d = dom(r)
    network = one(d, ".store-check-network section.verdict")
    assert network.get("data-verdict") == "disconnected"
    assert "cannot reach" in text(one(network, "h4"))
    assert "7003" in text(one(network, ".diagnosis .cause")) and text(one(network, ".diagnosis .fix"))
    sections = d.cssselect(".store-check-terminal section.verdict")
    assert {s.get("data-poiid"): s.get("data-verdict") for s in sections} == {
        "CS-B-OK": "disconnected",
        "CS-B-REFUSED": "disconnected",
    }
    # The network comes first; every terminal links to its page and names its cause and fix.
    html = r.text
    assert html.index("store-check-network") < html.index("store-check-terminal")
    for s in sections:
        assert one(s, "h4 a").get("href") == f"/terminals/{s.get('data-poiid')}"
    # A terminal whose own checks pass points at the network's cause (said once, above) ...
    ok = next(s for s in sections if s.get("data-poiid") == "CS-B-OK")
    assert not ok.cssselect(".diagnosis") and "because of the store's network" in text(
        one(ok, ".network-note")
    )
    # ... one with a fault of its own names it, with its fix.
    refused = next(s for s in sections if s.get("data-poiid") == "CS-B-REFUSED")
    assert text(one(refused, ".diagnosis .diag-title")) == "Connection refused"
    assert (
        text(one(refused, ".diagnosis .fix")) and "Connection refused" in texts(refused, ".finding strong")[0]
    )
    report = one(d, "pre#store-report-text").text_content()
    assert report.index("Store network") < report.index("CS-B-OK") and "tcp_timeout" in report
    assert len({e.get("id") for e in d.cssselect("[id]")}) == len(d.cssselect("[id]"))  # ids unique

    # The page's network checks follow out of band: each just checked, the blocked port named.
    oob = one(d, "#store-network")
    assert oob.get("hx-swap-oob") == "true" and len(oob.cssselect("tbody tr")) == len(
        d.cssselect(".store-check-network .check-group")
    )
    assert "never" not in text(oob) and "filtered" in text(oob)

    assert (await client.post("/stores/NOPE-1/check", headers=HX)).status_code == 404


async def test_api_check_store(client, fleet):
    r = await client.post(f"/api/v1/stores/{HEALTHY}/check")
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["store_code"] == HEALTHY and data["network_verdict"] == "connected"
    assert [c["scope"] for c in data["network"]] == ["store network"] * len(data["network"])
    assert {t["poiid"]: t["verdict"] for t in data["terminals"]} == {
        "CS-NOLAN": "not_monitored",
        "CS-OK-0": "connected",
        "CS-OK-1": "connected",
    }
    r = await client.post(f"/api/v1/stores/{BLOCKED}/check")
    assert r.json()["network_diagnosis"]["code"] == "tcp_timeout"
    assert (await client.post("/api/v1/stores/NOPE-1/check")).status_code == 404


async def test_cli_check_store(db, settings, fleet):
    env = {
        "TERMPULSE_DATABASE_URL": db.url,
        "TERMPULSE_ALLOWED_NETWORKS": "127.0.0.0/8",
        "TERMPULSE_DNS_NAMESERVERS": settings.dns_nameservers[0],
        "TERMPULSE_DNS_PORT": str(settings.dns_port),
        "TERMPULSE_TRUSTED_CA_FILE": str(settings.trusted_ca_file),
    }
    done = await termpulse_async("check", "--store", HEALTHY, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "reaches every destination" in done.stdout and "2 connected" in done.stdout

    done = await termpulse_async("check", "--store", BLOCKED, env=env)
    out = done.stdout
    assert done.returncode == 1, out + done.stderr
    assert out.index("Network:") < out.index("Terminal CS-B-OK") < out.index("Terminal CS-B-REFUSED")
    assert "cannot reach a destination" in out and "Cause:" in out and "Fix:" in out and "7003" in out
    assert "Cause:   the store's network (above)" in out and "refused" in out

    done = await termpulse_async("check", "--store", BLOCKED, "--json", env=env)
    assert json.loads(done.stdout)["network_verdict"] == "disconnected"

    done = await termpulse_async("check", "--store", "NOPE-1", env=env)
    assert done.returncode == 2 and "NOPE-1" in done.stderr
    done = await termpulse_async("check", env=env)
    assert done.returncode == 2 and "--store" in done.stderr


async def test_check_store_shares_the_check_limit(db, settings):
    import httpx

    from app.main import create_app
    from tests.test_auth import add_user, basic

    await add_user(db, "sam", "support")
    await add_user(db, "val", "viewer")
    app = create_app(settings.model_copy(update={"check_per_user_per_minute": 1}), database=db)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as http:
        assert (await http.post("/api/v1/stores/NOPE-1/check", headers=basic("val"))).status_code == 403
        assert (await http.post("/api/v1/stores/NOPE-1/check", headers=basic("sam"))).status_code == 404
        refused = await http.post("/api/v1/stores/NOPE-1/check", headers=basic("sam"))
        assert refused.status_code == 429 and "Check store" in refused.json()["detail"]
        pressed = await http.post("/stores/NOPE-1/check", headers={**basic("sam"), **HX})
        assert pressed.status_code == 200 and "try again in" in text(one(dom(pressed), ".banner.error"))
