"""Fixtures for the checking engine: a simulated network on loopback addresses of its own.

Tests use 127.77.x.y (terminals) and 127.78.0.x (named endpoints) so they never collide
with a demo running on the fleet's 127.1.x.y / 127.3.0.x addresses on the same machine.
"""

from __future__ import annotations

import itertools

import pytest

from app.simulator.network import start_demo_network
from app.simulator.terminals import TerminalSpec

ENDPOINTS = {
    "prodssl.protectedtransactions.com": ("127.78.0.1", [(443, "https")]),
    "temterminalsnar01.icloud.ingenico.com": ("127.78.0.2", [(7003, "tcp")]),
    "terminal-api-live.adyen.com": ("127.78.0.3", [(443, "https")]),
    "terminal-api-test.adyen.com": ("127.78.0.4", [(443, "https")]),
}

_addresses = (f"127.77.{i // 250}.{i % 250 + 1}" for i in itertools.count())


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
