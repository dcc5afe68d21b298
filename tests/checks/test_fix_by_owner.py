"""Fix texts by owner: the same fault reads differently for a terminal on the LAN, a
processor's host, the store's network and TermPulse itself. A stalled processor host must
not be told 'restart the terminal'. Produced for real on loopback."""

import pytest

from app.checks.diagnoses import CATALOGUE, OWNERS, explain
from app.checks.probes import run_probe

PROCESSOR = "prodssl.protectedtransactions.com"
INGENICO = "temterminalsnar01.icloud.ingenico.com"


async def test_a_stalled_processor_host_is_not_told_to_restart_the_terminal(
    ctx, endpoint_behaviour, terminal
):
    await endpoint_behaviour(PROCESSOR, 443, "hung")  # TLS done, then no HTTP answer
    r = await run_probe("https", f"https://{PROCESSOR}/AUTH", {}, 1.5, ctx)
    d = r.explain()
    assert (r.diagnosis, d.owner) == ("stalled", "provider"), r
    assert "the terminal" not in d.fix and "status page" in d.fix and f"{PROCESSOR}:443" in d.fix

    t = await terminal("adyen_local", "hung", port=8443)
    r = await run_probe("https", f"https://{t.host}:8443/", {"accept_self_signed": True}, 1.5, ctx)
    d = r.explain()
    assert (r.diagnosis, d.owner) == ("stalled", "terminal"), r
    assert d.fix.startswith("The terminal's service is hung: restart the terminal")


async def test_a_stalled_handshake_store_network_for_a_processor_restart_for_a_terminal(
    ctx, endpoint_behaviour, terminal
):
    await endpoint_behaviour(PROCESSOR, 443, "stalled")
    r = await run_probe("tls", f"{PROCESSOR}:443", {}, 1.5, ctx)
    assert (
        r.diagnosis == "tls_stalled" and "store's IT" in r.explain().fix and "restart" not in r.explain().fix
    )
    t = await terminal("paynt_epos", "stalled", port=8080)
    r = await run_probe("paynt_epos", f"{t.host}:8080", {"token": "x"}, 1.5, ctx)
    assert r.diagnosis == "tls_stalled" and "restart the terminal" in r.explain().fix


async def test_server_errors_blame_the_provider_or_the_terminal(ctx, endpoint_behaviour, terminal):
    await endpoint_behaviour(PROCESSOR, 443, "terminal_error")
    r = await run_probe("https", f"https://{PROCESSOR}/AUTH", {}, 1.0, ctx)
    assert r.diagnosis == "http_5xx" and r.explain().fix.startswith("Nothing to do at the store")
    t = await terminal("paynt_epos", "terminal_error", port=8080)
    r = await run_probe("paynt_epos", f"{t.host}:8080", {"token": "x"}, 1.0, ctx)
    assert r.diagnosis == "http_5xx" and r.explain().fix.startswith("Restart the terminal")


async def test_timeouts_and_resets_by_owner(ctx, endpoint_behaviour, terminal):
    await endpoint_behaviour(INGENICO, 7003, "filtered")
    r = await run_probe("tcp", f"{INGENICO}:7003", {}, 0.3, ctx)
    assert r.diagnosis == "tcp_timeout" and "allow outbound TCP 7003" in r.explain().fix
    t = await terminal("tcp", "filtered")
    r = await run_probe("tcp", f"{t.host}:{t.port}", {}, 0.3, ctx)
    assert r.diagnosis == "tcp_timeout" and "DHCP reservation" in r.explain().fix

    await endpoint_behaviour(INGENICO, 7003, "reset")
    r = await run_probe("tcp", f"{INGENICO}:7003", {}, 1.0, ctx)
    assert r.diagnosis == "tcp_reset" and "restart" not in r.explain().fix.lower()
    await endpoint_behaviour(INGENICO, 7003, "refusing")
    r = await run_probe("tcp", f"{INGENICO}:7003", {}, 1.0, ctx)
    assert (
        r.diagnosis == "tcp_refused"
        and "the terminal" not in r.explain().fix
        and "status page" in r.explain().fix
    )
    t = await terminal("tcp", "refusing")
    r = await run_probe("tcp", f"{t.host}:{t.port}", {}, 1.0, ctx)
    assert "restart the terminal" in r.explain().fix


def test_owner_from_the_address_the_probe_or_the_code():
    assert explain("stalled", host="192.168.1.23", port=8080).owner == "terminal"
    assert explain("stalled", host=PROCESSOR, port=443).owner == "provider"
    assert explain("stalled", host="8.8.8.8", port=443).owner == "provider"  # a public address (no traffic)
    assert explain("stalled", host="till-1.local", port=8080, owner="terminal").owner == "terminal"
    assert explain("dns_blocked", host="192.168.1.23").owner == "network"  # the code's own owner
    assert explain("tls_intercepted", host=PROCESSOR).owner == "network"
    assert explain("device_changed", host="10.0.0.5").owner == "terminal"
    assert explain("provider_rate_limited", target="Adyen live").owner == "termpulse"
    assert explain("tcp_refused").owner == ""  # nothing known: the general wording


@pytest.mark.parametrize("owner", OWNERS)
def test_every_fix_reads_for_every_owner(owner):
    for code in CATALOGUE:
        d = explain(code, host="h.example", port=1, status=500, owner=owner)
        assert d.fix and "{" not in d.fix, (code, owner)
