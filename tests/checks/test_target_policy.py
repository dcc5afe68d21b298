"""The target policy (issue 12, item 9): where checks may connect with the default settings.

Guard decisions only for anything outside loopback: no traffic is ever sent to a private,
metadata or public address here."""

import asyncio
import dataclasses
import json

import pytest

from app.checks.context import ProbeContext
from app.checks.guard import TargetGuard
from app.checks.probes import run_probe
from app.checks.resolver import Resolver
from app.config import Settings


@pytest.fixture
def default_guard():
    return TargetGuard.from_settings(Settings())


@pytest.mark.parametrize("address", ["169.254.169.254", "fd00:ec2::254", "::ffff:169.254.169.254"])
def test_the_metadata_address_is_refused_by_default(default_guard, address):
    assert not default_guard.allows(address)
    assert not default_guard.allows(address, by_name=True)  # not even as a profile's host
    assert "metadata" in default_guard.refusal(address)


@pytest.mark.parametrize("address", ["127.0.0.1", "127.4.0.1", "::1", "169.254.10.1", "fe80::1"])
def test_loopback_and_link_local_are_refused_by_default(default_guard, address):
    assert not default_guard.allows(address)
    assert "refused unless listed" in default_guard.refusal(address)


@pytest.mark.parametrize(
    "address", ["192.168.1.20", "10.20.30.40", "172.16.0.9", "172.31.255.1", "100.64.1.1", "fd12:3456::1"]
)
def test_private_and_cgnat_targets_are_allowed_by_default(default_guard, address):
    assert default_guard.allows(address)  # the decision only: nothing is sent there


@pytest.mark.parametrize("address", ["8.8.8.8", "172.32.0.1", "100.128.0.1", "2001:db8::1"])
def test_public_addresses_are_refused_by_default(default_guard, address):
    assert not default_guard.allows(address)
    assert "outside the allowed networks" in default_guard.refusal(address)


def test_a_profile_host_is_allowed_by_name_wherever_it_resolves(default_guard):
    # by_name: what a network profile's destination name resolved to (its monitor says so).
    assert default_guard.allows("203.0.113.7", by_name=True)
    assert not default_guard.allows("203.0.113.7")  # any other target: its address decides
    assert not default_guard.allows("127.0.0.1", by_name=True)  # a profile host on loopback: no


def test_loopback_is_allowed_when_listed():
    listed = TargetGuard.from_settings(Settings(allowed_networks="127.0.0.0/8, 192.168.0.0/16"))
    assert listed.allows("127.0.0.1") and listed.allows("192.168.3.4")
    assert not listed.allows("::1") and not listed.allows("169.254.169.254")


def test_only_a_network_listed_inside_a_sensitive_range_opens_it():
    everything = TargetGuard(["0.0.0.0/0", "::/0"])
    assert everything.allows("192.0.2.1")
    for address in ["127.0.0.1", "::1", "169.254.169.254", "fd00:ec2::254", "fe80::1", "169.254.1.1"]:
        assert not everything.allows(address), address
    link_local = TargetGuard(["169.254.0.0/16"])
    assert link_local.allows("169.254.1.1") and not link_local.allows("169.254.169.254")
    assert TargetGuard(["169.254.169.254/32"]).allows("169.254.169.254")
    assert TargetGuard(["::1/128"]).allows("::1")


def test_the_env_replaces_the_default_networks(monkeypatch):
    assert Settings().allowed_networks == [
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "fc00::/7",
    ]
    monkeypatch.setenv("TERMPULSE_ALLOWED_NETWORKS", "127.0.0.0/8")
    assert TargetGuard.from_settings(Settings()).allows("127.0.0.1")


async def test_a_check_of_a_name_resolving_to_the_metadata_address_never_connects(network, dns_record):
    ctx = ProbeContext(Resolver([network.dns.host], network.dns.port), TargetGuard.from_settings(Settings()))
    name = "terminal-api-live.adyen.com"  # a profile's host, pointed at the metadata address
    dns_record(name, ["169.254.169.254"])
    for kind, target in [
        ("tcp", f"{name}:443"),
        ("https", f"https://{name}/"),
        ("tcp", "169.254.169.254:80"),
    ]:
        r = await run_probe(kind, target, {"by_name": True}, 1.0, ctx)
        assert (r.outcome, r.diagnosis) == ("error", "target_refused"), (kind, r)
        assert not any(s["step"] == "connect" for s in r.steps)
        guard = next(s for s in r.steps if s["step"] == "guard")
        assert "metadata" in guard["detail"] and "169.254.169.254" in r.detail


async def test_loopback_checked_only_when_listed(network, terminal):
    t = await terminal("tcp")
    resolver = Resolver([network.dns.host], network.dns.port)
    by_default = ProbeContext(resolver, TargetGuard.from_settings(Settings()))
    r = await run_probe("tcp", f"{t.host}:{t.port}", {}, 1.0, by_default)
    assert (r.outcome, r.diagnosis) == ("error", "target_refused")
    assert "loopback" in r.steps[-1]["detail"] and not any(s["step"] == "connect" for s in r.steps)
    listed = ProbeContext(resolver, TargetGuard.from_settings(Settings(allowed_networks="127.0.0.0/8")))
    assert (await run_probe("tcp", f"{t.host}:{t.port}", {}, 1.0, listed)).outcome == "ok"


@pytest.fixture
async def raw_http():
    """A loopback listener answering every connection with the given bytes."""
    servers = []

    async def start(answer: bytes) -> int:
        async def handle(reader, writer):
            await reader.read(4096)
            writer.write(answer)
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        servers.append(server)
        return server.sockets[0].getsockname()[1]

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 418 SECRET-REASON go to evil.example\r\nContent-Length: 11\r\n\r\nSECRET-BODY",
        b"HTTP/1.1 200 SECRET-REASON\r\nContent-Length: 11\r\n\r\nSECRET-BODY",
        b"SECRET-GARBAGE not http at all\r\n\r\n",
    ],
)
async def test_a_check_result_never_echoes_what_the_target_said(ctx, raw_http, answer):
    port = await raw_http(answer)
    r = await run_probe("https", f"http://127.0.0.1:{port}/", {}, 2.0, ctx)
    seen = json.dumps(dataclasses.asdict(r), default=str)
    assert "SECRET" not in seen and "evil" not in seen, seen
    if answer.startswith(b"HTTP"):
        assert f"HTTP {answer[9:12].decode()}" in r.detail
