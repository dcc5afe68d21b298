"""Probes: one check of one target, on asyncio, returning a ProbeResult.

The scheduler and `termpulse check` call a single entry point:

    ctx = ProbeContext.from_settings(get_settings())          # once per process
    result = await run_probe(kind, target, params, timeout_s, ctx)

Targets and params per kind (params are all optional unless said):

  dns         target "prodssl.protectedtransactions.com"
              params {"rdtype": "A"}
  tcp         target "host:port"  ("[2001:db8::1]:443" for IPv6)
              params {"settle_ms": 50}   how long to watch for a reset after connecting
  tls         target "host:port"
              params {"accept_self_signed": false, "fingerprint": "sha256 hex", "sni": name}
  https       target "https://host[:port]/path"  (http:// works too, without the TLS step)
              params {"expect_status": [200, "3xx"], "accept_self_signed": false,
                      "fingerprint": ..., "method": "GET", "headers": {...}}
  paynt_epos  target "host:port" of the terminal's EPOS API
              params {"token": "...", "path": "/payntpos/1.0.0", "fingerprint": ...}
              self-signed certificates are accepted (terminals use them).

Every kind also takes params {"source": "127.2.0.5"}: the local address to query DNS and
connect from (a checker host with one egress address per store network).

Outcome "ok" | "fail" | "error": "error" means our side failed (target refused by the
guard, internal error): the monitor goes unknown, never down. A probe never raises.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass, field

from app.checks import net
from app.checks.guard import TargetGuard
from app.checks.resolver import DnsFailure, Resolver, is_ip_literal
from app.checks.result import ProbeFailure, ProbeResult, Run

log = logging.getLogger(__name__)

PROBE_KINDS = ("dns", "tcp", "tls", "https", "paynt_epos")


@dataclass
class ProbeContext:
    """What probes share in a process: the resolver, the guard and the TLS contexts."""

    resolver: Resolver
    guard: TargetGuard
    extra_ca_pem: str | None = None  # trusted besides the system CAs (the simulator's CA)
    verify_ssl: ssl.SSLContext = field(init=False, repr=False)
    insecure_ssl: ssl.SSLContext = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # Built once: loading the CA bundle costs milliseconds, too much per check.
        self.verify_ssl = net.make_verify_context(self.extra_ca_pem)
        self.insecure_ssl = net.make_insecure_context()

    @classmethod
    def from_settings(cls, settings, extra_ca_pem: str | None = None) -> ProbeContext:
        if extra_ca_pem is None and settings.trusted_ca_file:
            extra_ca_pem = settings.trusted_ca_file.read_text()
        return cls(Resolver.from_settings(settings), TargetGuard.from_settings(settings), extra_ca_pem)

    def ssl_for(self, params: dict) -> ssl.SSLContext:
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


async def resolve_and_guard(run: Run, ctx: ProbeContext, host: str, source: str | None) -> str:
    """The address to connect to: resolved through our resolver, then checked by the guard."""
    run.context.setdefault("host", host)
    if is_ip_literal(host):
        address = host.strip("[]")
    else:
        run.begin("resolve")
        try:
            res = await ctx.resolver.resolve(host, run.remaining(), source=source)
        except DnsFailure as exc:
            raise ProbeFailure(exc.code, exc.detail, name=host) from None
        address = res.addresses[0]
        run.end(True, f"{host} -> {', '.join(res.addresses)}")
    run.context["address"] = address
    if not ctx.guard.allows(address):
        run.add("guard", False, 0.0, f"{address} outside {ctx.guard.describe()}")
        raise ProbeFailure("target_refused", f"{address} is outside the allowed networks")
    return address


# --- the probes ------------------------------------------------------------------------


async def probe_dns(run: Run, ctx: ProbeContext, target: str, params: dict) -> ProbeResult:
    name = target.strip().rstrip(".")
    run.context.update(name=name, host=name, target=name)
    rdtype = str(params.get("rdtype", "A")).upper()
    run.begin("resolve")
    try:
        res = await ctx.resolver.resolve(name, run.remaining(), rdtype, params.get("source"))
    except DnsFailure as exc:
        raise ProbeFailure(exc.code, exc.detail) from None
    detail = f"{name} {rdtype} -> {', '.join(res.records)} (ttl {res.ttl}, from {res.nameserver})"
    ms = run.end(True, detail)
    return run.ok(ms, detail)


async def probe_tcp(run: Run, ctx: ProbeContext, target: str, params: dict) -> ProbeResult:
    host, port = split_host_port(target)
    run.context.update(host=host, port=port, target=f"{host}:{port}")
    source = params.get("source")
    address = await resolve_and_guard(run, ctx, host, source)
    sock = await net.tcp_connect(run, address, port, source)
    connect_ms = run.steps[-1]["ms"]
    try:
        seen = await net.watch_for_reset(run, sock, float(params.get("settle_ms", 50)) / 1000)
    finally:
        sock.close()
    return run.ok(connect_ms, f"port {port} open on {host} ({seen})")


async def probe_tls(run: Run, ctx: ProbeContext, target: str, params: dict) -> ProbeResult:
    host, port = split_host_port(target, 443)
    run.context.update(host=host, port=port, target=f"{host}:{port}")
    _, writer, info = await connect_tls(run, ctx, host, port, params)
    await net.close_writer(writer)
    detail = run.steps[-1]["detail"]
    return run.ok(run.elapsed_ms(), detail)


async def connect_tls(run: Run, ctx: ProbeContext, host: str, port: int, params: dict):
    """Resolve, guard, connect and handshake; names a rejected certificate precisely."""
    source = params.get("source")
    address = await resolve_and_guard(run, ctx, host, source)
    # An address works too: Python sends no SNI for it and checks it against the IP SANs.
    sni = params.get("sni") or host.strip("[]")
    sock = await net.tcp_connect(run, address, port, source)
    try:
        reader, writer, info = await net.tls_handshake(run, sock, ctx.ssl_for(params), sni)
    except ProbeFailure as exc:
        if exc.code in ("tls_untrusted", "tls_expired", "tls_wrong_host"):
            await describe_rejected(run, exc, address, port, sni, source)
        raise
    if info is not None:
        run.context.update(subject=info.subject, issuer=info.issuer, not_after=info.not_after)
        try:
            check_fingerprint(run, info, params.get("fingerprint"))
        except ProbeFailure:
            writer.transport.abort()
            raise
    return reader, writer, info


async def describe_rejected(run, exc, address, port, sni, source) -> None:
    info = await net.fetch_cert(address, port, sni, source, run.remaining())
    if info is not None:
        exc.ctx.update(subject=info.subject, issuer=info.issuer, not_after=info.not_after)
        exc.detail += f" (subject {info.subject}; issuer {info.issuer}; expires {info.not_after})"


def check_fingerprint(run: Run, info: net.CertInfo, pinned: str | None) -> None:
    if not pinned:
        return
    if net.normalise_fingerprint(pinned) != info.fingerprint:
        run.add("pin", False, 0.0, f"got sha256 {info.fingerprint}")
        raise ProbeFailure("tls_fingerprint_mismatch", f"certificate sha256 {info.fingerprint}")
    run.add("pin", True, 0.0, "fingerprint matches")


async def _dispatch(run: Run, kind: str, target: str, params: dict, ctx: ProbeContext):
    from app.checks import http  # here: http imports this module

    probes = {
        "dns": probe_dns,
        "tcp": probe_tcp,
        "tls": probe_tls,
        "https": http.probe_https,
        "paynt_epos": http.probe_paynt_epos,
    }
    probe = probes.get(kind)
    if probe is None:
        raise ProbeFailure("internal_error", f"unknown probe kind {kind!r}", error=f"kind {kind}")
    return await probe(run, ctx, target, params)


async def run_probe(
    kind: str, target: str, params: dict | None, timeout_s: float, ctx: ProbeContext
) -> ProbeResult:
    """Run one check. Never raises (except cancellation): failures come back named."""
    run = Run(timeout_s)
    run.context.setdefault("target", target)
    try:
        # The probes keep their own deadline; this only catches a probe that overruns it.
        async with asyncio.timeout(timeout_s + 2):
            return await _dispatch(run, kind, target, params or {}, ctx)
    except ProbeFailure as exc:
        return run.failed(exc)
    except TimeoutError:
        return run.failed(ProbeFailure("internal_error", "probe overran its deadline", error="overrun"))
    except Exception as exc:  # a bug of ours must not be reported as the terminal's fault
        log.exception("probe %s %s failed", kind, target)
        text = f"{type(exc).__name__}: {exc}"
        return run.failed(ProbeFailure("internal_error", text, error=text))
