"""Fixtures for the checking engine: a simulated network on loopback addresses of its own.

Each test session takes two second octets of its own (tests/loopback.py): OCTET
(127.OCTET.0.x terminals, 127.OCTET.250.x named endpoints, 127.OCTET.<store>.<till> the
sample fleet) and OCTET2 (a second fleet). So they never collide with a demo on the
fleet's 127.1.x.y / 127.3.0.x, nor with another test session on the same machine.
"""

from __future__ import annotations

import itertools

import pytest

from app.simulator.network import start_demo_network
from app.simulator.terminals import TerminalSpec
from tests import loopback

OCTET = loopback.CHECKS
OCTET2 = loopback.CHECKS_SECOND_FLEET

ENDPOINTS = {
    "prodssl.protectedtransactions.com": (f"127.{OCTET}.250.1", [(443, "https")]),
    "temterminalsnar01.icloud.ingenico.com": (f"127.{OCTET}.250.2", [(7003, "tcp")]),
    "terminal-api-live.adyen.com": (f"127.{OCTET}.250.3", [(443, "https")]),
    "terminal-api-test.adyen.com": (f"127.{OCTET}.250.4", [(443, "https")]),
}

_addresses = (f"127.{OCTET}.0.{i + 1}" for i in itertools.count())  # 250 per session at most


@pytest.fixture(scope="session")
async def network():
    net = await start_demo_network([], dns_port=0, endpoints=ENDPOINTS)
    yield net
    await net.stop()


@pytest.fixture(scope="session")
def ctx(network):
    """Probe context: simulated DNS, simulator CA trusted, guard = loopback only."""
    return network.probe_context(["127.0.0.0/8"])


@pytest.fixture
def terminal(network):
    """Make a fresh simulated terminal on its own address: `await terminal(api, behaviour)`."""

    async def make(api: str = "tcp", behaviour: str = "healthy", port: int = 2000, key: str | None = None):
        host = next(_addresses)
        spec = TerminalSpec(key or f"T-{host}", host, port, api, behaviour=behaviour)
        await network.sim.add(spec)
        return spec

    return make


@pytest.fixture
def dns_record(network):
    """Set a name's records (or mode) for one test; the simulated answer again afterwards."""
    changed = []

    def set_record(name, addresses=(), mode="answer"):
        changed.append(name)
        network.dns.set_record(name, list(addresses), mode)

    yield set_record
    for name in changed:
        network.dns.set_record(name, [ENDPOINTS[name][0]])


@pytest.fixture
async def endpoint_behaviour(network):
    """Switch a named endpoint's behaviour for one test, healthy again afterwards."""
    changed = []

    async def switch(name, port, behaviour):
        changed.append((name, port))
        await network.set_endpoint_behaviour(name, port, behaviour)

    yield switch
    for name, port in changed:
        await network.set_endpoint_behaviour(name, port, "healthy")
