"""TLS to the processor hosts of a store's network profile, with a CA made by the test:
inspection by the store's firewall, expired, wrong host, a stalled handshake, and a
certificate expiring soon (a warning on a passing check: the monitor stays up)."""

import pytest

from app.checks.context import ProbeContext
from app.checks.guard import TargetGuard
from app.checks.probes import run_probe
from app.checks.resolver import Resolver
from app.simulator.certs import EXPIRING_DAYS, CertAuthority
from app.simulator.terminals import TerminalSimulator, TerminalSpec
from tests.checks.conftest import OCTET

PROCESSOR = "prodssl.protectedtransactions.com"
FIREWALL_ADDRESS = f"127.{OCTET}.250.20"


@pytest.fixture(scope="module")
def own_ca():
    """The test's own CAs: a root the processor's certificates come from and the store
    firewall's inspection CA."""
    return CertAuthority(
        root=("Test Processor Root CA", "Test Processor"),
        inspection=("StoreGuard TLS Inspection CA", "StoreGuard Firewall"),
    )


@pytest.fixture
async def processor(own_ca, dns_record):
    """The processor's name answered by a server of the test's own, with a switchable certificate."""
    sim = TerminalSimulator(own_ca)
    await sim.start([TerminalSpec("processor", FIREWALL_ADDRESS, 443, "https", cert_host=PROCESSOR)])
    dns_record(PROCESSOR, [FIREWALL_ADDRESS])

    async def behave(behaviour):
        await sim.set_behaviour("processor", behaviour)

    yield behave
    await sim.stop()


def context(network, *cas):
    """What a checker trusts: the system CAs plus these."""
    resolver = Resolver([network.dns.host], network.dns.port)
    return ProbeContext(resolver, TargetGuard(["127.0.0.0/8"]), extra_ca_pem="".join(cas) or None)


@pytest.mark.parametrize(
    "kind, target", [("tls", f"{PROCESSOR}:443"), ("https", f"https://{PROCESSOR}/AUTH")]
)
async def test_a_firewall_inspecting_tls_is_named_with_its_issuer(network, own_ca, processor, kind, target):
    await processor("tls_inspected")
    r = await run_probe(kind, target, {}, 1.0, context(network, own_ca.ca_pem))
    assert (r.outcome, r.diagnosis) == ("fail", "tls_intercepted"), r
    d = r.explain()
    assert "issued by CN=StoreGuard TLS Inspection CA,O=StoreGuard Firewall" in d.cause
    assert d.fix.startswith(f"Your firewall or proxy inspects TLS; exempt {PROCESSOR} from inspection")


async def test_inspection_through_a_firewall_ca_the_checker_trusts_needs_the_expected_issuer(
    network, own_ca, processor
):
    """A store machine with the firewall's CA installed verifies the inspected chain: only the
    issuer the destination is known to use shows the interception."""
    await processor("tls_inspected")
    trusting = context(network, own_ca.ca_pem, own_ca.inspection.pem)
    assert (await run_probe("tls", f"{PROCESSOR}:443", {}, 1.0, trusting)).outcome == "ok"
    r = await run_probe("tls", f"{PROCESSOR}:443", {"expect_issuer": "Test Processor Root CA"}, 1.0, trusting)
    assert (r.outcome, r.diagnosis) == ("fail", "tls_intercepted"), r
    assert "StoreGuard TLS Inspection CA" in r.detail and r.steps[-1]["step"] == "issuer"
    await processor("healthy")
    r = await run_probe("tls", f"{PROCESSOR}:443", {"expect_issuer": ["Test Processor"]}, 1.0, trusting)
    assert r.outcome == "ok" and r.diagnosis is None, r


async def test_a_self_signed_certificate_is_untrusted_not_intercepted(network, own_ca, processor):
    await processor("tls_self_signed")
    r = await run_probe("tls", f"{PROCESSOR}:443", {}, 1.0, context(network, own_ca.ca_pem))
    assert r.diagnosis == "tls_untrusted", r


@pytest.mark.parametrize(
    "behaviour, code", [("tls_expired", "tls_expired"), ("tls_wrong_host", "tls_wrong_host")]
)
async def test_expired_and_wrong_host_from_a_trusted_ca(network, own_ca, processor, behaviour, code):
    await processor(behaviour)
    for kind, target in (("tls", f"{PROCESSOR}:443"), ("https", f"https://{PROCESSOR}/AUTH")):
        r = await run_probe(kind, target, {}, 1.0, context(network, own_ca.ca_pem))
        assert (r.outcome, r.diagnosis) == ("fail", code), r
    assert ("expired on 20" if code == "tls_expired" else "wrong-host.sim.invalid") in r.detail


async def test_a_handshake_that_never_completes_is_stalled(network, own_ca, processor):
    await processor("stalled")
    r = await run_probe("tls", f"{PROCESSOR}:443", {}, 0.3, context(network, own_ca.ca_pem))
    assert (r.outcome, r.diagnosis, r.steps[-1]["step"]) == ("fail", "tls_stalled", "tls"), r
    assert "TLS handshake did not complete" in r.detail


@pytest.mark.parametrize(
    "kind, target", [("tls", f"{PROCESSOR}:443"), ("https", f"https://{PROCESSOR}/AUTH")]
)
async def test_a_certificate_expiring_soon_passes_with_a_warning(network, own_ca, processor, kind, target):
    await processor("tls_expiring")
    ctx = context(network, own_ca.ca_pem)
    r = await run_probe(kind, target, {}, 1.0, ctx)
    assert (r.outcome, r.diagnosis) == ("ok", "tls_expiring_soon"), r  # ok: the monitor stays up
    assert f"in {EXPIRING_DAYS} days" in r.detail and r.detail == r.explain().cause
    assert any(s["step"] == "expiry" and s["ok"] for s in r.steps)
    quiet = await run_probe(kind, target, {"expiry_warn_days": EXPIRING_DAYS - 1}, 1.0, ctx)
    assert (quiet.outcome, quiet.diagnosis) == ("ok", None), quiet
    ctx.tls_expiry_warn_days = 5  # TERMPULSE_TLS_EXPIRY_WARN_DAYS
    assert (await run_probe(kind, target, {}, 1.0, ctx)).diagnosis is None
