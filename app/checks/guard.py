"""Target guard: the checker only connects to addresses inside the allowed networks.

The check is made on the *resolved* address, right before connecting to that same
address, so a name cannot be pointed somewhere else between the check and the connect.

The policy (README, Security: the target policy):

* an address inside one of the allowed networks is allowed (`TERMPULSE_ALLOWED_NETWORKS`,
  by default the private and CGNAT ranges, `DEFAULT_ALLOWED_NETWORKS`);
* a name that is a network profile's destination (the provider and processor hosts an admin
  lists; its monitor says {"by_name": true}) is allowed at whatever address it resolves to;
* but loopback, link-local and the cloud metadata addresses are refused in both cases unless
  a listed network lies inside them (`127.0.0.0/8` lists loopback; `0.0.0.0/0` does not,
  `169.254.0.0/16` lists link-local but not the metadata address inside it).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from functools import lru_cache

from app.config import DEFAULT_ALLOWED_NETWORKS, Settings

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Most specific first: an address is judged by the first range holding it.
SENSITIVE_NETWORKS: tuple[tuple[IPNetwork, str], ...] = (
    (ipaddress.ip_network("169.254.169.254/32"), "the cloud metadata address"),
    (ipaddress.ip_network("fd00:ec2::254/128"), "the cloud metadata address"),
    (ipaddress.ip_network("127.0.0.0/8"), "loopback"),
    (ipaddress.ip_network("::1/128"), "loopback"),
    (ipaddress.ip_network("169.254.0.0/16"), "link-local"),
    (ipaddress.ip_network("fe80::/10"), "link-local"),
)

__all__ = ["DEFAULT_ALLOWED_NETWORKS", "SENSITIVE_NETWORKS", "TargetGuard"]


def _sensitive(ip: IPAddress) -> tuple[IPNetwork, str] | None:
    for network, name in SENSITIVE_NETWORKS:
        if ip.version == network.version and ip in network:
            return network, name
    return None


class TargetGuard:
    def __init__(self, networks: Iterable[str]):
        # strict=False: "127.0.0.1/8" means 127.0.0.0/8, as people write it.
        self.networks: list[IPNetwork] = [
            ipaddress.ip_network(n.strip(), strict=False) for n in networks if n.strip()
        ]

    @classmethod
    def from_settings(cls, settings: Settings) -> TargetGuard:
        return cls(settings.allowed_networks)

    @lru_cache(maxsize=65536)  # noqa: B019 - one guard per process, kept for its lifetime
    def allows(self, address: str, by_name: bool = False) -> bool:
        """May we connect to `address`? `by_name`: it is what a network profile's destination
        name resolved to. Cached: a fleet has a bounded set of addresses and parsing shows in
        profiles."""
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id
        except ValueError:
            return False  # not an address at all: never connect to it
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
            ip = ip.ipv4_mapped  # ::ffff:10.0.0.1 is 10.0.0.1
        sensitive = _sensitive(ip)
        if sensitive is not None:
            # Only a network listed inside the sensitive range opens it.
            return any(
                ip.version == n.version and ip in n and n.subnet_of(sensitive[0])  # type: ignore[arg-type]
                for n in self.networks
            )
        if by_name:
            return True  # a profile's host, wherever it lives
        return any(ip.version == n.version and ip in n for n in self.networks)

    def refusal(self, address: str) -> str:
        """Why `address` is refused, in words."""
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return f"{address} is not an address"
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        sensitive = _sensitive(ip)
        if sensitive is not None:
            return f"{address} is {sensitive[1]}, refused unless listed in TERMPULSE_ALLOWED_NETWORKS"
        return f"{address} is outside the allowed networks"

    def describe(self) -> str:
        return ", ".join(str(n) for n in self.networks) or "(none)"

    def __repr__(self) -> str:
        return f"TargetGuard({self.describe()})"
