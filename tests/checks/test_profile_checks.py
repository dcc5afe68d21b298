"""Profiles and port lists checked for real on loopback: a profile made through the API with
TLS, HTTPS, WebSocket and ping destinations, and a terminal's own TCP port list."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from app.config import Settings
from app.inventory.models import Monitor, Terminal
from app.monitoring.manual import check_store_now, check_terminal_now
from app.simulator.terminals import TerminalSpec
from tests.checks.test_ping import may_ping

PROCESSOR = "prodssl.protectedtransactions.com"


@pytest.fixture
def settings(db, network, tmp_path):
    """The app checks through the simulated DNS and trusts the simulator's CA."""
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


async def test_a_profile_made_through_the_api_is_checked_for_real(
    client, db, settings, ctx, network, terminal
):
    ws = await terminal("websocket", port=3000)
    network.dns.set_record("ws.profile-test.example", [ws.host])
    profile = {
        "name": "loopback-shop",
        "destinations": [
            {"host": PROCESSOR, "port": 443, "checks": ["dns", "tcp", "tls", "https"]},
            {"host": "ws.profile-test.example", "port": 3000, "checks": ["dns", "tcp", "websocket", "ping"]},
        ],
    }
    assert (await client.post("/api/v1/network-profiles", json=profile)).status_code == 201
    r = await client.post(
        "/api/v1/stores", json={"code": "S-LB", "name": "Loop", "network_profile": "loopback-shop"}
    )
    assert r.status_code == 201, r.text

    report = await check_store_now(db, settings, "S-LB", probe_context=ctx)
    by_kind = {(c.kind, c.target): c for c in report.network}
    assert set(by_kind) == {
        ("dns", PROCESSOR),
        ("tcp", f"{PROCESSOR}:443"),
        ("tls", f"{PROCESSOR}:443"),
        ("https", f"https://{PROCESSOR}:443/"),
        ("dns", "ws.profile-test.example"),
        ("tcp", "ws.profile-test.example:3000"),
        ("websocket", "ws://ws.profile-test.example:3000/"),
        ("ping", "ws.profile-test.example"),
    }
    for key, check in by_kind.items():
        if key[0] == "ping" and not may_ping():
            continue  # no unprivileged ICMP here: its own test says so
        assert check.outcome == "ok", (key, check)


async def test_a_terminals_tcp_port_list_is_checked_port_by_port(
    client, db, settings, ctx, network, terminal
):
    t = await terminal("tcp", port=2000)
    await network.sim.add(TerminalSpec(f"P-{t.host}", t.host, 5001, "tcp"))
    assert (await client.post("/api/v1/stores", json={"code": "S-PL", "name": "Ports"})).status_code == 201
    body = {
        "store_code": "S-PL",
        "poiid": "PL-0001",
        "integration": "local",
        "lan_host": t.host,
        "lan_port": 2000,
        "local_api": "tcp",
        "tcp_ports": "5555; 5001",  # nothing listens on 5555
    }
    r = await client.post("/api/v1/terminals", json=body)
    assert r.status_code == 201 and r.json()["tcp_ports"] == "5001;5555", r.text
    async with db.sessionmaker() as s:
        tid = await s.scalar(select(Terminal.id).where(Terminal.poiid == "PL-0001"))
        keys = set(await s.scalars(select(Monitor.key).where(Monitor.terminal_id == tid)))
    assert keys == {f"t{tid}:tcp", f"t{tid}:tcp:5001", f"t{tid}:tcp:5555"}

    report = await check_terminal_now(db, settings, "PL-0001", probe_context=ctx)
    outcomes = {c.target: c.outcome for c in report.checks}
    assert outcomes == {f"{t.host}:2000": "ok", f"{t.host}:5001": "ok", f"{t.host}:5555": "fail"}
    assert report.verdict == "disconnected" and report.diagnosis.code == "tcp_refused", report
    assert "5555" in report.diagnosis.cause

    # Emptied: the port monitors go, the main port's stays.
    r = await client.put("/api/v1/terminals/PL-0001", json={**body, "tcp_ports": ""})
    assert r.status_code == 200, r.text
    async with db.sessionmaker() as s:
        assert set(await s.scalars(select(Monitor.key).where(Monitor.terminal_id == tid))) == {f"t{tid}:tcp"}
    r = await client.put("/api/v1/terminals/PL-0001", json={**body, "tcp_ports": "2000;70000"})
    assert r.status_code == 422 and "'70000' is not a port" in r.text


def test_a_port_list_instead_of_one_port():
    from types import SimpleNamespace

    from app.inventory.monitors import terminal_monitor_specs
    from app.inventory.schemas import TerminalIn

    data = TerminalIn(
        store_code="S-1",
        poiid="TRG-9",
        integration="local",
        lan_host="192.168.1.5",
        tcp_ports="5001, 2100 2000",  # as people type them
    )
    assert data.lan_port is None and data.tcp_ports == "2000;2100;5001"
    specs = terminal_monitor_specs(
        SimpleNamespace(id=9, store_id=2, **data.model_dump(exclude={"store_code"}))
    )
    assert [(s.key, s.kind, s.target) for s in specs] == [
        (f"t9:tcp:{port}", "tcp", f"192.168.1.5:{port}") for port in (2000, 2100, 5001)
    ]


@pytest.mark.parametrize(("status", "outcome"), [(404, "ok"), (401, "ok"), (503, "fail")])
async def test_a_profiles_https_check_passes_on_any_answer_but_a_server_error(network, ctx, status, outcome):
    """A processor's "/" may well be a 404: reached through a verified TLS session all the same."""
    import asyncio
    from types import SimpleNamespace

    from app.checks.probes import run_probe
    from app.inventory.monitors import store_monitor_specs
    from app.inventory.profiles import Destination

    name = "api.https-test.example"

    async def answer(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=network.certs.server_context(name))
    port = server.sockets[0].getsockname()[1]
    network.dns.set_record(name, ["127.0.0.1"])
    try:
        [spec] = store_monitor_specs(SimpleNamespace(id=1), [Destination(name, port, ("https",))])
        result = await run_probe(spec.kind, spec.target, spec.params, 3.0, ctx)
    finally:
        server.close()
        await server.wait_closed()
    assert result.outcome == outcome, result
    if outcome == "fail":
        assert result.diagnosis == "http_5xx"
