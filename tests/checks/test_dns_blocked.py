"""A store DNS filter that answers 0.0.0.0 (or ::) for a processor host: dns_blocked, a store
fault, named before the target guard (which would otherwise call it 'outside the allowed
networks' and make the monitor unknown)."""

import pytest

from app.checks.context import ProbeContext
from app.checks.guard import TargetGuard
from app.checks.probes import run_probe
from app.checks.resolver import Resolver
from app.config import Settings
from tests.checks.conftest import ENDPOINTS, OCTET

NAME = "temterminalsnar01.icloud.ingenico.com"


@pytest.mark.parametrize("kind, target", [("dns", NAME), ("tcp", f"{NAME}:7003"), ("tls", f"{NAME}:7003")])
async def test_a_zero_answer_is_the_store_dns_filter_not_our_guard(ctx, dns_record, kind, target):
    dns_record(NAME, ["0.0.0.0"])
    r = await run_probe(kind, target, {}, 1.0, ctx)
    assert (r.outcome, r.diagnosis) == ("fail", "dns_blocked"), r  # fail: down, not unknown
    assert [s["step"] for s in r.steps] == ["resolve"]  # no guard step, no connect to 0.0.0.0
    assert "0.0.0.0" in r.steps[0]["detail"]
    d = r.explain()
    assert d.cause.startswith(f"The store's DNS filter blocks {NAME}")
    assert "DNS or content filter" in d.fix and not d.ours


async def test_the_blocked_mode_answers_zero_and_the_v6_unspecified_address(ctx, dns_record):
    dns_record(NAME, mode="blocked")
    a = await run_probe("dns", NAME, {}, 1.0, ctx)
    aaaa = await run_probe("dns", NAME, {"rdtype": "AAAA"}, 1.0, ctx)
    assert a.diagnosis == aaaa.diagnosis == "dns_blocked"
    assert "0.0.0.0" in a.steps[0]["detail"] and "::" in aaaa.steps[0]["detail"]


async def test_a_real_address_beside_a_block_answer_is_used(ctx, dns_record):
    dns_record(NAME, ["0.0.0.0", ENDPOINTS[NAME][0]])
    r = await run_probe("tcp", f"{NAME}:7003", {}, 1.0, ctx)
    assert r.outcome == "ok", r


async def test_a_block_page_address_named_in_the_settings(network, dns_record):
    block_page = f"127.{OCTET}.250.99"
    dns_record(NAME, [block_page])
    settings = Settings(dns_block_addresses=f"{block_page}, 192.0.2.0/24")
    assert settings.dns_block_addresses == [block_page, "192.0.2.0/24"]
    resolver = Resolver([network.dns.host], network.dns.port, settings.dns_block_addresses)
    ctx = ProbeContext(resolver, TargetGuard(["127.0.0.0/8"]))
    r = await run_probe("tcp", f"{NAME}:7003", {}, 1.0, ctx)
    assert r.diagnosis == "dns_blocked", r
    plain = ProbeContext(Resolver([network.dns.host], network.dns.port), TargetGuard(["127.0.0.0/8"]))
    r = await run_probe("tcp", f"{NAME}:7003", {}, 1.0, plain)
    assert r.diagnosis == "tcp_refused", r  # without the setting it is just an address
