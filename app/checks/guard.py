"""Target guard: the checker only connects to addresses inside the allowed networks.

The check is made on the *resolved* address, right before connecting to that same
address, so a name cannot be pointed somewhere else between the check and the connect.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from functools import lru_cache

from app.config import Settings

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class TargetGuard:
    def __init__(self, networks: Iterable[str]):
        # strict=False: "127.0.0.1/8" means 127.0.0.0/8, as people write it.
        self.networks: list[IPNetwork] = [
            ipaddress.ip_network(n.strip(), strict=False) for n in networks if n.strip()
        ]

    @classmethod
    def from_settings(cls, settings: Settings) -> TargetGuard:
        return cls(settings.allowed_networks)

    def allows(self, address: str) -> bool:
        # Cached: a fleet has a bounded set of addresses and parsing shows in profiles.
        return self._allows(address)

    @lru_cache(maxsize=65536)  # noqa: B019 - one guard per process, kept for its lifetime
    def _allows(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id
        except ValueError:
            return False  # not an address at all: never connect to it
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
            ip = ip.ipv4_mapped  # ::ffff:10.0.0.1 is 10.0.0.1
        return any(ip.version == n.version and ip in n for n in self.networks)

    def describe(self) -> str:
        return ", ".join(str(n) for n in self.networks) or "(none)"

    def __repr__(self) -> str:
        return f"TargetGuard({self.describe()})"
