"""The dns, tcp and tls probes, and the TLS connection the https probes build on."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from app.checks import identity, net
from app.checks.context import ProbeContext, resolve_and_guard, split_host_port
from app.checks.resolver import DnsFailure
from app.checks.result import ProbeFailure, ProbeResult, Run


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
    address = await resolve_and_guard(run, ctx, host, params)
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
    detail = next(s["detail"] for s in reversed(run.steps) if s["step"] == "tls")
    if info is not None:
        identity.record(run, params, info.fingerprint, info.subject, None)
    return run.ok(run.elapsed_ms(), detail)


async def connect_tls(
    run: Run, ctx: ProbeContext, host: str, port: int, params: dict[str, Any]
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, net.CertInfo | None]:
    """Resolve, guard, connect and handshake; names a rejected certificate precisely."""
    source = params.get("source")
    address = await resolve_and_guard(run, ctx, host, params)
    # An address works too: Python sends no SNI for it and checks it against the IP SANs.
    sni = params.get("sni") or host.strip("[]")
    sock = await net.tcp_connect(run, address, port, source)
    try:
        reader, writer, info = await net.tls_handshake(run, sock, ctx.ssl_for(params), sni)
    except ProbeFailure as exc:
        run.if_timeout = exc  # the deadline during a second pass: this failure stands
        if exc.code in ("tls_untrusted", "tls_expired", "tls_wrong_host"):
            await describe_rejected(run, exc, address, port, sni, source)
        if exc.code == "tls_handshake_failed" and identity.is_terminal(params):
            raise await not_speaking_tls(run, exc, params, address, port, host, source) from None
        raise
    if info is not None:
        try:
            identity.check_certificate(run, params, info.fingerprint, info.subject)
            check_certificate(run, ctx, info, params)
        except ProbeFailure:
            writer.transport.abort()
            raise
    return reader, writer, info


async def describe_rejected(
    run: Run, exc: ProbeFailure, address: str, port: int, sni: str | None, source: str | None
) -> None:
    info = await net.fetch_cert(address, port, sni, source, run.remaining())
    if info is not None:
        exc.ctx.update(subject=info.subject, issuer=info.issuer, not_after=info.not_after)
        exc.detail += f" (subject {info.subject}; issuer {info.issuer}; expires {info.not_after})"
        if exc.code == "tls_untrusted" and not info.self_signed:
            # Issued for the name by a CA nobody trusts: what a TLS-inspecting firewall or
            # proxy does (a self-signed certificate stays 'untrusted').
            exc.code = "tls_intercepted"


async def not_speaking_tls(
    run: Run,
    exc: ProbeFailure,
    params: dict[str, Any],
    address: str,
    port: int,
    host: str,
    source: str | None,
) -> ProbeFailure:
    """A terminal's TLS port that fails the handshake: a device answering plain HTTP there is
    not the terminal (a printer's page), not a proxy; else the handshake failure stands."""
    answer = await net.plain_http_answer(address, port, host, source, run.remaining())
    if answer is None:
        return exc
    run.end(False, exc.detail)  # the tls step, before the identity finding
    return identity.not_terminal(
        run, params, f"plain HTTP ({answer})", f"plain HTTP on the TLS port: {answer}"
    )


def check_certificate(run: Run, ctx: ProbeContext, info: net.CertInfo, params: dict[str, Any]) -> None:
    """What the handshake's certificate says beyond the chain: the pinned fingerprint, the
    expected issuer (inspection by a firewall whose CA the checker trusts), and an expiry
    close enough to warn about (the check still passes)."""
    run.context.update(subject=info.subject, issuer=info.issuer, not_after=info.not_after)
    check_fingerprint(run, info, params.get("fingerprint"))
    if params.get("accept_self_signed"):
        return  # nothing was verified: issuer and expiry say nothing
    expected = params.get("expect_issuer")
    if expected:
        wanted = [expected] if isinstance(expected, str) else list(expected)
        if not any(str(w).lower() in info.issuer.lower() for w in wanted):
            run.add(
                "issuer", False, 0.0, f"issued by {info.issuer}, expected {' or '.join(map(str, wanted))}"
            )
            raise ProbeFailure("tls_intercepted", f"certificate issued by {info.issuer}")
    warn_days = int(params.get("expiry_warn_days", ctx.tls_expiry_warn_days))
    left = dt.datetime.fromisoformat(info.not_after) - dt.datetime.now(dt.UTC)
    if left < dt.timedelta(days=warn_days):
        days = max(left.days, 0)
        run.add("expiry", True, 0.0, f"expires {info.not_after}, in {days} days (warning under {warn_days})")
        run.warn("tls_expiring_soon", days=days, warn_days=warn_days)


def check_fingerprint(run: Run, info: net.CertInfo, pinned: str | None) -> None:
    if not pinned:
        return
    if net.normalise_fingerprint(pinned) != info.fingerprint:
        run.add("pin", False, 0.0, f"got sha256 {info.fingerprint}")
        raise ProbeFailure("tls_fingerprint_mismatch", f"certificate sha256 {info.fingerprint}")
    run.add("pin", True, 0.0, "fingerprint matches")
