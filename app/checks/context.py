"""What every probe shares: the process's `ProbeContext`, and finding the address to connect to."""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from app.checks import net
from app.checks.guard import TargetGuard
from app.checks.resolver import DnsFailure, Resolver, is_ip_literal
from app.checks.result import ProbeFailure, Run
from app.config import Settings


@dataclass
class ProbeContext:
    """What probes share in a process: the resolver, the guard and the TLS contexts."""

    resolver: Resolver
    guard: TargetGuard
    extra_ca_pem: str | None = None  # trusted besides the system CAs (the simulator's CA)
    tls_expiry_warn_days: int = 21  # a certificate expiring sooner: the check passes with a warning
    verify_ssl: ssl.SSLContext = field(init=False, repr=False)
    insecure_ssl: ssl.SSLContext = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # Built once: loading the CA bundle costs milliseconds, too much per check.
        self.verify_ssl = net.make_verify_context(self.extra_ca_pem)
        self.insecure_ssl = net.make_insecure_context()

    @classmethod
    def from_settings(cls, settings: Settings, extra_ca_pem: str | None = None) -> ProbeContext:
        if extra_ca_pem is None and settings.trusted_ca_file:
            extra_ca_pem = settings.trusted_ca_file.read_text()
        return cls(
            Resolver.from_settings(settings),
            TargetGuard.from_settings(settings),
            extra_ca_pem,
            settings.tls_expiry_warn_days,
        )

    def ssl_for(self, params: dict[str, Any]) -> ssl.SSLContext:
        return self.insecure_ssl if params.get("accept_self_signed") else self.verify_ssl


def split_host_port(target: str, default_port: int | None = None) -> tuple[str, int]:
    """'host:port' or '[v6]:port' -> (host, port)."""
    target = target.strip()
    if target.startswith("["):
        host, _, rest = target[1:].partition("]")
        port = rest.lstrip(":")
    elif target.count(":") == 1:
        host, port = target.split(":")
    else:
        host, port = target, ""
    if not port:
        if default_port is None:
            raise ProbeFailure("internal_error", f"no port in target {target!r}", error="no port")
        return host, default_port
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ProbeFailure("internal_error", f"bad port in target {target!r}", error="bad port")
    return host, int(port)


@lru_cache(maxsize=65536)
def literal_address(host: str) -> str | None:
    """The address a target names itself ('127.1.1.1', '[::1]'), None for a name to resolve.
    Cached, as the guard's decision per address is: a fleet has a bounded set of addresses,
    and parsing each one per check shows at thousands of checks a second."""
    return host.strip("[]") if is_ip_literal(host) else None


async def resolve_and_guard(run: Run, ctx: ProbeContext, host: str, params: dict[str, Any]) -> str:
    """The address to connect to: resolved through our resolver (from params' "source"), then
    checked by the guard. params {"by_name": true} (a network profile's destination, which only
    an admin sets): the name is allowed wherever it resolves (app.checks.guard)."""
    run.context.setdefault("host", host)
    source = params.get("source")
    address = literal_address(host)
    by_name = address is None and bool(params.get("by_name"))
    if address is None:
        run.begin("resolve")
        timeout = run.remaining()
        if run.bounded:  # the check's deadline during the lookup reads as the resolver's own
            detail = f"{host}: no answer from {ctx.resolver.describe()} in {timeout:g} s"
            run.if_timeout = ProbeFailure("dns_timeout", detail, name=host)
        try:
            res = await ctx.resolver.resolve(host, timeout, source=source)
        except DnsFailure as exc:
            run.if_timeout = None
            raise ProbeFailure(exc.code, exc.detail, name=host) from None
        run.if_timeout = None
        address = res.addresses[0]
        run.end(True, f"{host} -> {', '.join(res.addresses)}")
    run.context["address"] = address
    if not ctx.guard.allows(address, by_name=by_name):
        run.add("guard", False, 0.0, f"{ctx.guard.refusal(address)} (allowed: {ctx.guard.describe()})")
        raise ProbeFailure("target_refused", ctx.guard.refusal(address))
    return address
