"""tls, https and paynt_epos probes against simulated terminals and endpoints."""

import httpx
import pytest

from app.checks.probes import run_probe
from app.simulator.terminals import epos_token

PROCESSOR = "prodssl.protectedtransactions.com"


# --- tls ---------------------------------------------------------------------------------


async def test_tls_ok_reports_protocol_and_certificate(ctx):
    r = await run_probe("tls", f"{PROCESSOR}:443", {}, 1.0, ctx)
    assert r.outcome == "ok", r
    assert [s["step"] for s in r.steps] == ["resolve", "connect", "tls"]
    tls = r.steps[-1]["detail"]
    assert "TLSv1." in tls and f"CN={PROCESSOR}" in tls and "Simulator Root CA" in tls and "expires" in tls


async def test_terminal_self_signed_accepted_when_allowed_untrusted_otherwise(ctx, terminal):
    t = await terminal("adyen_local", port=8443)
    ok = await run_probe("tls", f"{t.host}:8443", {"accept_self_signed": True}, 1.0, ctx)
    assert ok.outcome == "ok", ok
    strict = await run_probe("tls", f"{t.host}:8443", {}, 1.0, ctx)
    assert (strict.outcome, strict.diagnosis) == ("fail", "tls_untrusted")


async def test_tls_inspection_is_named_with_the_issuer(ctx, endpoint_behaviour):
    await endpoint_behaviour(PROCESSOR, 443, "tls_inspected")
    r = await run_probe("tls", f"{PROCESSOR}:443", {}, 1.0, ctx)
    assert (r.outcome, r.diagnosis) == ("fail", "tls_intercepted")
    assert "Contoso SSL Inspection CA" in r.detail
    assert r.explain().fix.startswith(
        f"Your firewall or proxy inspects TLS; exempt {PROCESSOR} from inspection"
    )


async def test_tls_expired(ctx, endpoint_behaviour):
    await endpoint_behaviour(PROCESSOR, 443, "tls_expired")
    r = await run_probe("tls", f"{PROCESSOR}:443", {}, 5.0, ctx)  # the second pass reads the date
    assert (r.outcome, r.diagnosis) == ("fail", "tls_expired"), r
    assert "expired on 20" in r.detail  # the date, read in the second pass


async def test_tls_wrong_host(ctx, endpoint_behaviour):
    await endpoint_behaviour(PROCESSOR, 443, "tls_wrong_host")
    # Room for the second pass that reads the names on the certificate, on a loaded machine too.
    r = await run_probe("tls", f"{PROCESSOR}:443", {}, 5.0, ctx)
    assert (r.outcome, r.diagnosis) == ("fail", "tls_wrong_host"), r
    assert "wrong-host.sim.invalid" in r.detail


async def test_tls_fingerprint_pin(ctx, terminal, network):
    t = await terminal("paynt_epos", port=8080)
    good = network.certs.fingerprint(t.cert_name, "self_signed")
    pinned = ":".join(good[i : i + 2] for i in range(0, 64, 2)).upper()  # as browsers show it
    r = await run_probe(
        "tls", f"{t.host}:8080", {"accept_self_signed": True, "fingerprint": pinned}, 1.0, ctx
    )
    assert r.outcome == "ok" and r.steps[-1] == {
        "step": "pin",
        "ok": True,
        "ms": 0.0,
        "detail": "fingerprint matches",
    }
    r = await run_probe(
        "tls", f"{t.host}:8080", {"accept_self_signed": True, "fingerprint": "00" * 32}, 1.0, ctx
    )
    assert (r.outcome, r.diagnosis) == ("fail", "tls_fingerprint_mismatch")
    assert good in r.steps[-1]["detail"]


async def test_tls_to_a_plain_tcp_service_fails_the_handshake(ctx, terminal):
    t = await terminal("tcp")  # echoes the ClientHello back: not TLS
    r = await run_probe("tls", f"{t.host}:{t.port}", {"accept_self_signed": True}, 1.0, ctx)
    assert (r.outcome, r.diagnosis) == ("fail", "tls_handshake_failed"), r


async def test_tls_stalled(ctx, terminal):
    t = await terminal("paynt_epos", "stalled", port=8080)
    r = await run_probe("tls", f"{t.host}:8080", {"accept_self_signed": True}, 1.5, ctx)
    assert (r.outcome, r.diagnosis) == ("fail", "tls_stalled"), r
    assert r.steps[-1]["step"] == "tls"


async def test_tls_reset_and_refused(ctx, terminal):
    t = await terminal("paynt_epos", "reset", port=8080)
    r = await run_probe("tls", f"{t.host}:8080", {"accept_self_signed": True}, 1.0, ctx)
    assert r.diagnosis == "tcp_reset", r
    t = await terminal("paynt_epos", "refusing", port=8080)
    r = await run_probe("tls", f"{t.host}:8080", {"accept_self_signed": True}, 1.0, ctx)
    assert r.diagnosis == "tcp_refused", r


# --- https -------------------------------------------------------------------------------


async def test_https_ok_with_phase_timings(ctx):
    r = await run_probe("https", f"https://{PROCESSOR}/AUTH", {}, 1.0, ctx)
    assert r.outcome == "ok", r
    assert [s["step"] for s in r.steps] == ["resolve", "connect", "tls", "first_byte", "http"]
    assert all(s["ok"] and s["ms"] >= 0 for s in r.steps)
    assert r.detail == "HTTP 200"  # the status code only, never the target's reason phrase


async def test_https_unexpected_status(ctx):
    r = await run_probe("https", f"https://{PROCESSOR}/AUTH", {"expect_status": [204]}, 1.0, ctx)
    assert (r.outcome, r.diagnosis) == ("fail", "http_status")
    assert r.detail == f"https://{PROCESSOR}/AUTH answered HTTP 200 (expected 204)."


async def test_https_server_error(ctx, endpoint_behaviour):
    await endpoint_behaviour(PROCESSOR, 443, "terminal_error")
    r = await run_probe("https", f"https://{PROCESSOR}/AUTH", {}, 1.0, ctx)
    assert (r.outcome, r.diagnosis) == ("fail", "http_5xx")


@pytest.mark.parametrize(
    "behaviour, code",
    [
        ("tls_inspected", "tls_intercepted"),
        ("tls_expired", "tls_expired"),
        ("tls_wrong_host", "tls_wrong_host"),
        ("refusing", "tcp_refused"),
        ("reset", "tcp_reset"),
    ],
)
async def test_https_names_network_and_certificate_failures(ctx, endpoint_behaviour, behaviour, code):
    await endpoint_behaviour(PROCESSOR, 443, behaviour)
    r = await run_probe("https", f"https://{PROCESSOR}/AUTH", {}, 1.0, ctx)
    assert (r.outcome, r.diagnosis) == ("fail", code), r


async def test_https_filtered_and_stalled(ctx, endpoint_behaviour):
    await endpoint_behaviour(PROCESSOR, 443, "filtered")
    r = await run_probe("https", f"https://{PROCESSOR}/AUTH", {}, 0.3, ctx)
    assert r.diagnosis == "tcp_timeout", r
    await endpoint_behaviour(PROCESSOR, 443, "stalled")
    # One deadline for the whole check: the lookup and the connect must fit well inside it on
    # a loaded machine for the stall to be the step it cuts short (0.3 s was not, once in CI).
    r = await run_probe("https", f"https://{PROCESSOR}/AUTH", {}, 1.5, ctx)
    assert (r.diagnosis, r.steps[-1]["step"]) == ("tls_stalled", "tls"), r


async def test_https_stalled_after_the_handshake(ctx, terminal):
    """Accepted, TLS done, the request sent, and then nothing: stalled at first byte."""
    t = await terminal("adyen_local", "hung", port=8443)
    r = await run_probe("https", f"https://{t.host}:8443/", {"accept_self_signed": True}, 1.5, ctx)
    assert (r.outcome, r.diagnosis) == ("fail", "stalled"), r
    assert [(s["step"], s["ok"]) for s in r.steps] == [
        ("connect", True),
        ("tls", True),
        ("first_byte", False),
    ]
    assert r.steps[-1]["ms"] > 300


async def test_https_to_an_echo_service_is_not_blamed_on_us(ctx, terminal):
    t = await terminal("tls", port=8443)  # TLS, then echoes the request back: not HTTP
    r = await run_probe("https", f"https://{t.host}:8443/", {"accept_self_signed": True}, 1.5, ctx)
    assert (r.outcome, r.diagnosis) == ("fail", "http_status"), r
    assert "answered something that is not HTTP" in r.detail


# --- paynt_epos --------------------------------------------------------------------------


async def test_epos_paired_terminal_is_up(ctx, terminal):
    t = await terminal("paynt_epos", port=8080, key="A920-0001")
    r = await run_probe("paynt_epos", f"{t.host}:8080", {"token": epos_token("A920-0001")}, 1.0, ctx)
    assert r.outcome == "ok", r
    assert [s["step"] for s in r.steps] == ["connect", "tls", "first_byte", "identity", "http"]


async def test_epos_unpaired_is_401_and_pairing_fixes_it(ctx, terminal, network):
    t = await terminal("paynt_epos", port=8080)
    target = f"{t.host}:8080"
    r = await run_probe("paynt_epos", target, {}, 1.0, ctx)  # no token at all
    assert (r.outcome, r.diagnosis) == ("fail", "http_401")
    await network.sim.set_behaviour(t.key, "unpaired")  # it forgot the stored token
    r = await run_probe("paynt_epos", target, {"token": epos_token(t.key)}, 1.0, ctx)
    assert r.diagnosis == "http_401" and "Re-pair" in r.explain().fix
    async with httpx.AsyncClient(verify=False, trust_env=False) as client:
        token = (await client.get(f"https://{target}/payntpos/1.0.0/pair")).json()["token"]
    r = await run_probe("paynt_epos", target, {"token": token}, 1.0, ctx)
    assert r.outcome == "ok"


async def test_epos_terminal_error(ctx, terminal, network):
    t = await terminal("paynt_epos", "terminal_error", port=8080)
    r = await run_probe("paynt_epos", f"{t.host}:8080", {"token": epos_token(t.key)}, 1.0, ctx)
    assert (r.outcome, r.diagnosis) == ("fail", "http_5xx")
    assert "HTTP 500" in r.detail


async def test_epos_stalled(ctx, terminal):
    t = await terminal("paynt_epos", "stalled", port=8080)
    r = await run_probe("paynt_epos", f"{t.host}:8080", {"token": "x"}, 1.5, ctx)
    assert r.diagnosis == "tls_stalled"


async def test_epos_pin_mismatch(ctx, terminal):
    t = await terminal("paynt_epos", port=8080)
    r = await run_probe(
        "paynt_epos", f"{t.host}:8080", {"token": epos_token(t.key), "fingerprint": "ab" * 32}, 1.0, ctx
    )
    assert r.diagnosis == "tls_fingerprint_mismatch"
