"""Name resolution for the probes, on dnspython's asyncio resolver.

Never the system's getaddrinfo: it blocks a thread and hides *why* a name failed.
Failures are raised as `DnsFailure` carrying the diagnosis code.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

import dns.asyncresolver
import dns.exception
import dns.rcode
import dns.resolver

from app.config import Settings

# Answers a DNS filter gives for a name it blocks (Pi-hole, AdGuard, router content filters):
# the unspecified address, which no real service has. A filter that answers with the address
# of its own block page is named by TERMPULSE_DNS_BLOCK_ADDRESSES.
SINKHOLE_NETWORKS = ("0.0.0.0/8", "::/128")
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def block_networks(extra: list[str] | tuple[str, ...] = ()) -> tuple[IPNetwork, ...]:
    names = (n.strip() for n in (*SINKHOLE_NETWORKS, *extra))
    return tuple(ipaddress.ip_network(n, strict=False) for n in names if n)


class DnsFailure(Exception):
    def __init__(self, code: str, detail: str):
        super().__init__(detail)
        self.code = code
        self.detail = detail


@dataclass
class Resolution:
    name: str
    addresses: list[str]
    ttl: int | None = None
    nameserver: str | None = None
    literal: bool = False  # the target was already an address: no query was sent
    records: list[str] = field(default_factory=list)


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
        return True
    except ValueError:
        return False


class Resolver:
    """Address lookups with fixed nameservers (or the system's when none are configured)."""

    def __init__(
        self, nameservers: list[str] | None = None, port: int = 53, block_addresses: list[str] | None = None
    ):
        self.blocks = block_networks(block_addresses or ())
        if nameservers:
            self._resolver = dns.asyncresolver.Resolver(configure=False)
            self._resolver.port = port  # before nameservers: the setter binds the port
            self._resolver.nameservers = list(nameservers)
        else:
            self._resolver = dns.asyncresolver.Resolver()  # /etc/resolv.conf
        self._resolver.cache = None  # a check must see the DNS as it is now
        # Per try; each query's `lifetime` bounds the total. Short, so a dead first server
        # leaves time to ask the next one (resolvers shared by many probes: set once here).
        self._resolver.timeout = 1.0
        self.nameservers = [str(n) for n in self._resolver.nameservers]
        self.port = port

    @classmethod
    def from_settings(cls, settings: Settings) -> Resolver:
        return cls(settings.dns_nameservers, settings.dns_port, settings.dns_block_addresses)

    def describe(self) -> str:
        return ", ".join(f"{n}:{self.port}" for n in self.nameservers) or "(system)"

    async def resolve(
        self, name: str, timeout_s: float, rdtype: str = "A", source: str | None = None
    ) -> Resolution:
        host = name.strip("[]")
        if is_ip_literal(host):
            return Resolution(name=name, addresses=[host], literal=True)
        try:
            answer = await self._resolver.resolve(
                host, rdtype, lifetime=timeout_s, search=False, source=source
            )
        except dns.resolver.NXDOMAIN:
            raise DnsFailure("dns_nxdomain", f"{host}: NXDOMAIN") from None
        except dns.resolver.NoAnswer:
            raise DnsFailure("dns_no_answer", f"{host}: no {rdtype} record") from None
        except dns.resolver.NoNameservers as exc:
            raise self._no_nameservers(host, exc) from None
        except dns.exception.Timeout:
            raise DnsFailure(
                "dns_timeout", f"{host}: no answer from {self.describe()} in {timeout_s:g} s"
            ) from None
        except dns.exception.DNSException as exc:  # malformed names and answers
            raise DnsFailure("dns_servfail", f"{host}: {exc}") from None
        records = [r.to_text() for r in answer]
        addresses = records if rdtype in ("A", "AAAA") else []
        real = [a for a in addresses if not self.is_block(a)]
        if addresses and not real:
            # Decided here, before the guard: the store's filter answered, not the real host.
            answered = ", ".join(addresses)
            raise DnsFailure("dns_blocked", f"{host}: the DNS server answered {answered} (a block)")
        return Resolution(
            name=host,
            addresses=real,
            ttl=answer.rrset.ttl if answer.rrset is not None else None,
            nameserver=str(answer.nameserver),
            records=records,
        )

    def is_block(self, address: str) -> bool:
        """True for an answer that says 'blocked' rather than where the host is."""
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        return any(ip.version == n.version and ip in n for n in self.blocks)

    def _no_nameservers(self, host: str, exc: dns.resolver.NoNameservers) -> DnsFailure:
        """Every server failed: an rcode (SERVFAIL, REFUSED) means they answered 'no';
        only I/O errors (port unreachable ...) means nobody answered."""
        errors = exc.kwargs.get("errors") or []
        rcodes = [str(e[3]) for e in errors if e[4] is not None]
        if rcodes:
            return DnsFailure("dns_servfail", f"{host}: server answered {', '.join(rcodes)}")
        texts = "; ".join(f"{e[0]}: {e[3]}" for e in errors) or "no server"
        return DnsFailure("dns_timeout", f"{host}: no answer ({texts})")
