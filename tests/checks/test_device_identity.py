"""The device at a terminal's address: a second terminal taking over the first one's DHCP
address, another Adyen terminal, a printer's web page on the terminal's port. All on loopback
with simulated terminals; the learned identity through the real result writer."""

import pytest
from sqlalchemy import select

from app.checks.identity import parse_step
from app.checks.probes import run_probe
from app.inventory.models import Monitor, TerminalEvent
from app.monitoring.manual import check_terminal_now
from app.simulator.terminals import TerminalSpec, epos_token
from tests.checks.conftest import _addresses
from tests.html import dom, texts

FIRST, SECOND = "A920-905011011", "A920-905011099"


class Lan:
    """Devices on one fresh LAN address: `await lan.put(key, api, port)`; `await lan.swap(...)`
    takes the current device off and puts another one there (the DHCP address moved)."""

    def __init__(self, network):
        self.network = network
        self.host = next(_addresses)
        self.keys = []

    async def put(self, key, api, port):
        await self.network.sim.add(TerminalSpec(key, self.host, port, api))
        self.keys.append(key)

    async def swap(self, key, api, port):
        await self.network.sim.remove(self.keys.pop())
        await self.put(key, api, port)


@pytest.fixture
async def lan(network):
    devices = Lan(network)
    yield devices
    for key in devices.keys:
        await network.sim.remove(key)


def learned(result):
    step = next(s for s in result.steps if s["step"] == "identity")
    return parse_step(step["detail"])


# --- the probes ---------------------------------------------------------------------------


async def test_another_paynt_terminal_at_the_address_is_not_a_401(ctx, lan):
    await lan.put(FIRST, "paynt_epos", 8080)
    params = {"token": epos_token(FIRST), "poiid": FIRST}
    first = await run_probe("paynt_epos", f"{lan.host}:8080", params, 1.0, ctx)
    assert first.outcome == "ok", first
    identity = learned(first)
    assert identity["device"] == FIRST and f"CN={FIRST}" in identity["subject"]

    await lan.swap(SECOND, "paynt_epos", 8080)  # it rejects our token: 401 ...
    r = await run_probe("paynt_epos", f"{lan.host}:8080", params | {"identity": identity}, 1.0, ctx)
    assert (r.outcome, r.diagnosis) == ("fail", "device_changed"), r  # ... but that is not the finding
    d = r.explain()
    assert d.cause == (
        f"The device at {lan.host}:8080 is no longer {FIRST} (it answers as {SECOND}): the terminal's "
        "DHCP address has probably moved."
    )
    assert "DHCP reservation" in d.fix and "Do not re-pair" in d.fix
    assert [s["step"] for s in r.steps][-1] == "identity"  # decided before any HTTP


async def test_a_terminal_reporting_another_poiid_is_named_without_anything_learned(ctx, lan):
    await lan.put(SECOND, "paynt_epos", 8080)
    params = {"token": epos_token(SECOND), "poiid": FIRST}  # its token works, its POIID is not ours
    r = await run_probe("paynt_epos", f"{lan.host}:8080", params, 1.0, ctx)
    assert r.diagnosis == "device_changed", r
    assert f"answers as {SECOND}" in r.detail


async def test_adyen_local_certificate_must_name_the_poiid(ctx, lan):
    poiid = "V400m-346000001"
    await lan.put(poiid, "adyen_local", 8443)
    params = {"accept_self_signed": True, "poiid": poiid, "local_api": "adyen_local"}
    ok = await run_probe("tls", f"{lan.host}:8443", params, 1.0, ctx)
    assert ok.outcome == "ok" and f"CN={poiid}.test.terminal.adyen.com" in learned(ok)["subject"], ok

    await lan.swap("V400m-346000777", "adyen_local", 8443)  # another Adyen terminal: no longer 'connected'
    r = await run_probe("tls", f"{lan.host}:8443", params, 1.0, ctx)
    assert (r.outcome, r.diagnosis) == ("fail", "device_changed"), r
    assert "no longer V400m-346000001 (it answers as V400m-346000777)" in r.detail

    await lan.swap("some-tls-box", "tls", 8443)  # TLS, but not an Adyen terminal's certificate
    r = await run_probe("tls", f"{lan.host}:8443", params, 1.0, ctx)
    assert r.diagnosis == "not_terminal", r
    assert "a certificate for some-tls-box" in r.detail


async def test_a_printer_on_the_terminal_port_is_not_the_terminal_not_a_proxy(ctx, lan):
    await lan.put("printer", "http", 8080)
    r = await run_probe("paynt_epos", f"{lan.host}:8080", {"token": "x", "poiid": FIRST}, 1.0, ctx)
    assert (r.outcome, r.diagnosis) == ("fail", "not_terminal"), r
    assert r.detail.startswith(
        f"The device at {lan.host}:8080 is not the terminal {FIRST}: it answers plain HTTP"
    )
    assert "proxy" not in r.detail + r.explain().fix and "printer" in r.explain().fix
    assert [(s["step"], s["ok"]) for s in r.steps][-2:] == [("tls", False), ("identity", False)]
    tls = await run_probe("tls", f"{lan.host}:8080", {"accept_self_signed": True, "poiid": FIRST}, 1.0, ctx)
    assert tls.diagnosis == "not_terminal", tls
    # Not a terminal's check (a processor host): the handshake failure stands.
    other = await run_probe("tls", f"{lan.host}:8080", {"accept_self_signed": True}, 1.0, ctx)
    assert other.diagnosis == "tls_handshake_failed", other


# --- learned through the writer, kept by the inventory, re-learned by an admin ------------------


async def add_terminal(client, host):
    store = {"code": "S-ID1", "name": "Identity store"}
    assert (await client.post("/api/v1/stores", json=store)).status_code == 201
    terminal = {
        "store_code": "S-ID1",
        "poiid": FIRST,
        "integration": "local",
        "lan_host": host,
        "lan_port": 8080,
        "local_api": "paynt_epos",
        "epos_token": epos_token(FIRST),
    }
    response = await client.post("/api/v1/terminals", json=terminal)
    assert response.status_code == 201, response.text
    return terminal


async def epos_params(db):
    async with db.sessionmaker() as s:
        return await s.scalar(select(Monitor.params).where(Monitor.kind == "paynt_epos"))


async def events(db):
    async with db.sessionmaker() as s:
        return list(
            (
                await s.execute(select(TerminalEvent.kind, TerminalEvent.source).order_by(TerminalEvent.id))
            ).all()
        )


async def test_learned_on_the_first_healthy_check_then_compared_then_relearned(
    db, settings, client, ctx, lan
):
    await lan.put(FIRST, "paynt_epos", 8080)
    terminal = await add_terminal(client, lan.host)
    assert (await epos_params(db))["poiid"] == FIRST and "identity" not in await epos_params(db)

    report = await check_terminal_now(db, settings, FIRST, probe_context=ctx)
    assert report.verdict == "connected", report
    identity = (await epos_params(db))["identity"]
    assert identity["device"] == FIRST and len(identity["fingerprint"]) == 64
    assert ("identity_learned", "first healthy check") in await events(db)

    # Editing the terminal derives its monitors again: the learned identity stays.
    assert (
        await client.put(f"/api/v1/terminals/{FIRST}", json=terminal | {"label": "Till 1"})
    ).status_code == 200
    assert (await epos_params(db))["identity"] == identity

    await lan.swap(SECOND, "paynt_epos", 8080)
    report = await check_terminal_now(db, settings, FIRST, probe_context=ctx)
    assert report.verdict == "disconnected" and report.diagnosis.code == "device_changed", report
    assert f"is no longer {FIRST} (it answers as {SECOND})" in report.diagnosis.cause
    assert (await epos_params(db))["identity"] == identity  # a failing check learns nothing

    # A real replacement: the admin re-learns; the next healthy check learns the new device.
    response = await client.post(f"/api/v1/terminals/{FIRST}/identity/relearn")
    assert response.status_code == 200 and response.json() == {"poiid": FIRST, "forgotten": 1}
    assert "identity" not in await epos_params(db)
    kind, source = (await events(db))[-1]
    assert kind == "identity_relearn" and source.startswith("re-learn by ")
    report = await check_terminal_now(db, settings, FIRST, probe_context=ctx)
    assert report.diagnosis.code == "http_401"  # the new terminal, not paired yet: re-pair is right now
    assert (await client.post("/api/v1/terminals/NOPE-1/identity/relearn")).status_code == 404


async def test_the_edit_page_shows_the_identity_and_relearns(db, settings, client, ctx, lan):
    await lan.put(FIRST, "paynt_epos", 8080)
    await add_terminal(client, lan.host)
    await check_terminal_now(db, settings, FIRST, probe_context=ctx)
    page = await client.get(f"/admin/terminals/{FIRST}/edit")
    assert page.status_code == 200 and "Device at its address" in page.text and f"CN={FIRST}" in page.text
    done = await client.post(f"/admin/terminals/{FIRST}/relearn-identity")
    assert done.status_code == 303 and done.headers["location"] == f"/admin/terminals/{FIRST}/edit?relearn=1"
    page = await client.get(done.headers["location"])
    assert "Identity forgotten" in page.text and "Nothing learned yet" in page.text
    events = texts(dom(page), "#identity-events li")
    assert (
        "re-learn asked (re-learn by " in events[0] and f"learned (first healthy check), {FIRST}" in events[1]
    )


async def test_the_same_terminal_with_a_renewed_certificate_is_not_another_device(ctx, lan, network):
    await lan.put(FIRST, "paynt_epos", 8080)
    params = {"token": epos_token(FIRST), "poiid": FIRST}
    identity = learned(await run_probe("paynt_epos", f"{lan.host}:8080", params, 1.0, ctx))
    await network.sim.set_behaviour(FIRST, "tls_expiring")  # a new certificate, the same name and API
    r = await run_probe("paynt_epos", f"{lan.host}:8080", params | {"identity": identity}, 1.0, ctx)
    assert r.outcome == "ok", r  # its API reports the learned POIID: renewed, not replaced
    step = next(s for s in r.steps if s["step"] == "identity")
    assert (
        step["detail"].startswith("renewed sha256=") and learned(r)["fingerprint"] != identity["fingerprint"]
    )
    # Without the API saying who it is (its token refused), the new certificate is another device.
    r = await run_probe(
        "paynt_epos", f"{lan.host}:8080", {"token": "x", "poiid": FIRST, "identity": identity}, 1.0, ctx
    )
    assert r.diagnosis == "device_changed", r


async def test_a_renewed_certificate_is_learned_as_an_event(db, settings, client, ctx, lan, network):
    await lan.put(FIRST, "paynt_epos", 8080)
    await add_terminal(client, lan.host)
    await check_terminal_now(db, settings, FIRST, probe_context=ctx)
    first = (await epos_params(db))["identity"]
    await network.sim.set_behaviour(FIRST, "tls_expiring")
    report = await check_terminal_now(db, settings, FIRST, probe_context=ctx)
    assert report.verdict == "connected", report
    now = (await epos_params(db))["identity"]
    assert now["device"] == FIRST and now["fingerprint"] != first["fingerprint"] and "renewed" not in now
    assert [k for k, _ in await events(db)] == ["identity_learned", "identity_renewed"]
