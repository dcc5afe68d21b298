"""The whole simulated world for the demo and tests: DNS, the fleet's terminals and the
network-profile endpoints, all on loopback.

    net = await start_demo_network(fleet_rows, dns_port=5353)
    settings: TERMPULSE_DNS_NAMESERVERS=127.0.0.1  TERMPULSE_DNS_PORT=net.dns.port
              TERMPULSE_ALLOWED_NETWORKS=127.0.0.0/8
    ctx = net.probe_context()       # resolver on the simulated DNS, trusts the simulator CA
    await net.sim.set_behaviour("PAX-A920-123", "unpaired")
    net.dns.set_mode("prodssl.protectedtransactions.com", "servfail")   # every store
    await net.block_port_for_store("S-0007", "temterminalsnar01.icloud.ingenico.com", 7003)
    await net.stop()

Addresses: terminals keep their fleet address (127.1.<store>.<till>); each profile name
has its own 127.3.0.x address listening on the real port (443, 7003); a store's own
view of the network uses 127.2.x.y as source (see `store_source`) and 127.4.x.y for the
endpoints only that store sees.

A store-only fault (port 7003 blocked at S-0007) needs the store's checks to run from the
store's source address: monitor params {"source": net.store_source("S-0007")}. The DNS
then answers that source with the store's own endpoint, which is filtered; every other
store still reaches the healthy one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from app.simulator.certs import CertAuthority, authority
from app.simulator.dns import SimDNS
from app.simulator.terminals import TerminalSimulator, TerminalSpec

if TYPE_CHECKING:
    from app.checks.context import ProbeContext

# name -> (address, [(port, api)]): the destinations of the network profiles.
NETWORK_ENDPOINTS: dict[str, tuple[str, list[tuple[int, str]]]] = {
    "prodssl.protectedtransactions.com": ("127.3.0.1", [(443, "https")]),
    "temterminalsnar01.icloud.ingenico.com": ("127.3.0.2", [(7003, "tcp")]),
    "terminal-api-live.adyen.com": ("127.3.0.3", [(443, "https")]),
    "terminal-api-test.adyen.com": ("127.3.0.4", [(443, "https")]),
}


def _store_number(store_code: str) -> int:
    digits = re.sub(r"\D", "", store_code)
    if not digits:
        raise ValueError(f"store code without a number: {store_code!r}")
    return int(digits)


def store_source(store_code: str) -> str:
    """The loopback address a store's network checks are sent from (S-0042 -> 127.2.0.42)."""
    n = _store_number(store_code)
    return f"127.2.{(n >> 8) & 255}.{n & 255}"


def store_endpoint_address(store_code: str) -> str:
    n = _store_number(store_code)
    return f"127.4.{(n >> 8) & 255}.{n & 255}"


def endpoint_key(name: str, port: int, store_code: str | None = None) -> str:
    return f"{name}:{port}" + (f"@{store_code}" if store_code else "")


@dataclass
class DemoNetwork:
    dns: SimDNS
    sim: TerminalSimulator
    certs: CertAuthority
    endpoints: dict[str, tuple[str, list[tuple[int, str]]]] = field(default_factory=dict)

    @property
    def ca_pem(self) -> str:
        return self.certs.ca_pem

    def probe_context(self, allowed_networks: Iterable[str] = ("127.0.0.0/8",)) -> ProbeContext:
        """A ProbeContext resolving through the simulated DNS and trusting the simulator CA."""
        from app.checks.context import ProbeContext
        from app.checks.guard import TargetGuard
        from app.checks.resolver import Resolver

        resolver = Resolver([self.dns.host], self.dns.port)
        return ProbeContext(resolver, TargetGuard(allowed_networks), extra_ca_pem=self.ca_pem)

    store_source = staticmethod(store_source)

    async def set_endpoint_behaviour(self, name: str, port: int, behaviour: str) -> None:
        """For every store: e.g. ("temterminalsnar01.icloud.ingenico.com", 7003, "filtered")."""
        await self.sim.set_behaviour(endpoint_key(name, port), behaviour)

    async def block_port_for_store(
        self, store_code: str, name: str, port: int, behaviour: str = "filtered"
    ) -> None:
        """Only `store_code` sees name:port with `behaviour` (others keep the shared one)."""
        address = store_endpoint_address(store_code)
        _, ports = self.endpoints[name]
        for p, api in ports:
            key = endpoint_key(name, p, store_code)
            if key not in self.sim.endpoints:
                await self.sim.add(TerminalSpec(key, address, p, api, cert_host=name))
            await self.sim.set_behaviour(key, behaviour if p == port else "healthy")
        self.dns.set_view(store_source(store_code), name, addresses=[address])

    def set_dns_for_store(self, store_code: str, name: str, mode: str) -> None:
        """Only `store_code`'s queries for `name` get `mode` (nxdomain, servfail, drop ...)."""
        self.dns.set_view(store_source(store_code), name, mode=mode)

    async def heal_store(self, store_code: str) -> None:
        """Undo the store-only faults: its queries see the shared endpoints again."""
        for name in self.endpoints:
            self.dns.clear_view(store_source(store_code), name)

    async def stop(self) -> None:
        await self.sim.stop()
        await self.dns.stop()


async def start_demo_network(
    fleet_rows: Iterable[dict],
    dns_port: int = 0,
    *,
    endpoints: dict[str, tuple[str, list[tuple[int, str]]]] | None = None,
    flap_period_s: float = 5.0,
) -> DemoNetwork:
    """Start DNS (127.0.0.1:dns_port, 0 = any free port), every terminal of the fleet rows
    (csv.DictReader rows of terminals.csv) and the profile endpoints, all healthy."""
    endpoints = dict(NETWORK_ENDPOINTS if endpoints is None else endpoints)
    certs = authority()
    dns = await SimDNS({name: [addr] for name, (addr, _) in endpoints.items()}, port=dns_port).start()
    sim = TerminalSimulator(certs, flap_period_s=flap_period_s)
    specs: list[TerminalSpec | None] = [TerminalSpec.from_row(row) for row in fleet_rows]
    for name, (address, ports) in endpoints.items():
        specs += [TerminalSpec(endpoint_key(name, p), address, p, api, cert_host=name) for p, api in ports]
    try:
        await sim.start(specs)
    except BaseException:
        await sim.stop()
        await dns.stop()
        raise
    return DemoNetwork(dns, sim, certs, endpoints)
