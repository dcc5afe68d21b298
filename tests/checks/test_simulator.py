"""The simulator itself: the whole sample fleet, runtime switches, store-only faults."""

import asyncio
import csv
import time
from pathlib import Path

import pytest

from app.checks.probes import run_probe
from app.simulator.network import start_demo_network
from app.simulator.terminals import BEHAVIOURS, TerminalSimulator, TerminalSpec
from tests.checks.conftest import OCTET, OCTET2

# Store numbers of this session's own (store addresses derive from them; see conftest).
S7, S8, S9, S10 = (f"S-{OCTET * 100 + n}" for n in (7, 8, 9, 10))

FLEET = Path(__file__).resolve().parents[2] / "app" / "inventory" / "fleet" / "terminals.csv"
for candidate in (Path("/work/shared/fleet/terminals.csv"),):
    if candidate.exists():
        FLEET = candidate


def fleet_rows(octet: int = OCTET):
    """The sample fleet moved from 127.1.x.y to 127.<octet>.x.y: a demo may hold the real ones."""
    rows = list(csv.DictReader(FLEET.open()))
    for row in rows:
        if row["lan_host"]:
            row["lan_host"] = row["lan_host"].replace("127.1.", f"127.{octet}.", 1)
    return rows


async def test_the_sample_fleet_starts_quickly_and_answers(ctx):
    rows = fleet_rows()
    assert len(rows) == 246
    sim = TerminalSimulator()
    started = time.perf_counter()
    await sim.start(TerminalSpec.from_row(r) for r in rows)
    took = time.perf_counter() - started
    try:
        lan = [r for r in rows if r["lan_host"]]
        assert len(sim.endpoints) == len(lan) and took < 5, took
        results = await asyncio.gather(
            *(run_probe("tcp", f"{r['lan_host']}:{r['lan_port']}", {"settle_ms": 0}, 2.0, ctx) for r in lan)
        )
        assert all(r.outcome == "ok" for r in results)
        epos = next(r for r in lan if r["local_api"] == "paynt_epos")
        r = await run_probe(
            "paynt_epos",
            f"{epos['lan_host']}:{epos['lan_port']}",
            {"token": sim.token(epos["poiid"])},
            2.0,
            ctx,
        )
        assert r.outcome == "ok", r
    finally:
        await sim.stop()
    # stopped: the ports are closed again
    r = await run_probe("tcp", f"{lan[0]['lan_host']}:{lan[0]['lan_port']}", {}, 1.0, ctx)
    assert r.diagnosis == "tcp_refused"


async def test_every_behaviour_can_be_set_and_unknown_ones_are_rejected(network, terminal):
    t = await terminal("paynt_epos", port=8080)
    for name in BEHAVIOURS:
        await network.sim.set_behaviour(t.key, name, period_s=0.2)
        assert network.sim.behaviour(t.key) == name
    await network.sim.set_behaviour(t.key, "healthy")
    with pytest.raises(ValueError):
        await network.sim.set_behaviour(t.key, "on_fire")


async def test_reset_is_seen_with_the_default_settle_time(ctx, terminal):
    t = await terminal("tcp", "reset")
    r = await run_probe("tcp", f"{t.host}:{t.port}", {}, 1.0, ctx)
    assert r.diagnosis == "tcp_reset"


async def test_port_7003_blocked_at_one_store_only(network, ctx):
    """The demo's 'store with port 7003 blocked': only checks from that store's source fail."""
    name, target = "temterminalsnar01.icloud.ingenico.com", "temterminalsnar01.icloud.ingenico.com:7003"
    await network.block_port_for_store(S7, name, 7003)
    try:
        blocked = await run_probe("tcp", target, {"source": network.store_source(S7)}, 0.4, ctx)
        other = await run_probe("tcp", target, {"source": network.store_source(S8)}, 0.4, ctx)
        central = await run_probe("tcp", target, {}, 0.4, ctx)
    finally:
        await network.heal_store(S7)
    assert (blocked.outcome, blocked.diagnosis) == ("fail", "tcp_timeout"), blocked
    assert blocked.explain().cause.startswith(f"Port 7003 to {name} is filtered")
    assert other.outcome == "ok" and central.outcome == "ok"
    healed = await run_probe("tcp", target, {"source": network.store_source(S7)}, 0.4, ctx)
    assert healed.outcome == "ok"


async def test_dns_failing_at_one_store_only(network, ctx):
    name = "prodssl.protectedtransactions.com"
    network.set_dns_for_store(S9, name, "servfail")
    try:
        failing = await run_probe(
            "https", f"https://{name}/AUTH", {"source": network.store_source(S9)}, 1.0, ctx
        )
        fine = await run_probe(
            "https", f"https://{name}/AUTH", {"source": network.store_source(S10)}, 1.0, ctx
        )
    finally:
        await network.heal_store(S9)
    assert failing.diagnosis == "dns_servfail" and fine.outcome == "ok", (failing, fine)


async def test_demo_network_on_the_real_fleet_addresses_and_ports():
    """start_demo_network as the demo calls it, with the fleet's own rows (moved octet)."""
    net = await start_demo_network(
        fleet_rows(OCTET2),
        dns_port=0,
        endpoints={
            "prodssl.protectedtransactions.com": (f"127.{OCTET2}.250.1", [(443, "https")]),
        },
    )
    try:
        ctx = net.probe_context()
        r = await run_probe("https", "https://prodssl.protectedtransactions.com/AUTH", {}, 1.0, ctx)
        assert r.outcome == "ok", r
        assert len(net.sim.endpoints) == 184
    finally:
        await net.stop()


def test_simulate_writes_its_ca_for_termpulse_to_trust():
    import stat

    from app.simulator.certs import authority
    from app.simulator.cli import write_ca_file

    path = write_ca_file(authority().ca_pem)
    assert path.read_text() == authority().ca_pem and "BEGIN CERTIFICATE" in path.read_text()
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
