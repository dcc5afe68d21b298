"""Probes: one check of one target, on asyncio, returning a ProbeResult.

The scheduler and `termpulse check` call a single entry point:

    ctx = ProbeContext.from_settings(get_settings())          # once per process
    result = await run_probe(kind, target, params, timeout_s, ctx)

Targets and params per kind (params are all optional unless said):

  dns         target "prodssl.protectedtransactions.com"
              params {"rdtype": "A"}
  ping        target "192.168.1.23" (or a name)
              params {"count": 3, "interval_s": 0.2, "privileged": null}  ICMP echo (app.checks.ping)
  tcp         target "host:port"  ("[2001:db8::1]:443" for IPv6)
              params {"settle_ms": 50}   how long to watch for a reset after connecting
  tls         target "host:port"
              params {"accept_self_signed": false, "fingerprint": "sha256 hex", "sni": name}
  https       target "https://host[:port]/path"  (http:// works too, without the TLS step)
              params {"expect_status": [200, "3xx"], "accept_self_signed": false,
                      "fingerprint": ..., "method": "GET", "headers": {...}}
  websocket   target "ws://host:3000/" or "wss://host/path"  the WebSocket opening handshake
              params {"headers": {...}, "subprotocols": [...], "accept_self_signed": false}
  paynt_epos  target "host:port" of the terminal's EPOS API
              params {"token": "...", "path": "/payntpos/1.0.0", "fingerprint": ...}
              self-signed certificates are accepted (terminals use them).

Every kind also takes params {"source": "127.2.0.5"}: the local address to query DNS and
connect from (a checker host with one egress address per store network), and {"owner":
"terminal" | "network" | "provider"}: who owns the target, for the fix texts (by default a
terminal's check says so by its "poiid"; otherwise a LAN address is a terminal's, a name a
processor's or provider's host), and {"by_name": true}: the target is a network profile's
destination, allowed by name wherever it resolves (app.checks.guard; loopback, link-local and
metadata addresses still only when listed).

Outcome "ok" | "fail" | "error": "error" means our side failed (target refused by the
guard, internal error): the monitor goes unknown, never down. A probe never raises.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from app.checks import http, identity, ping, transport, ws
from app.checks.context import ProbeContext
from app.checks.diagnoses import OWNERS, TERMINAL
from app.checks.result import ProbeFailure, ProbeResult, Run
from app.vocabulary import MonitorKind

log = logging.getLogger(__name__)

Probe = Callable[[Run, ProbeContext, str, dict[str, Any]], Awaitable[ProbeResult]]

PROBES: dict[str, Probe] = {
    MonitorKind.DNS: transport.probe_dns,
    MonitorKind.PING: ping.probe_ping,
    MonitorKind.TCP: transport.probe_tcp,
    MonitorKind.TLS: transport.probe_tls,
    MonitorKind.HTTPS: http.probe_https,
    MonitorKind.WEBSOCKET: ws.probe_websocket,
    MonitorKind.PAYNT_EPOS: http.probe_paynt_epos,
}

_BOUNDED = frozenset((MonitorKind.TCP, MonitorKind.TLS))


async def run_probe(
    kind: str, target: str, params: dict[str, Any] | None, timeout_s: float, ctx: ProbeContext
) -> ProbeResult:
    """Run one check. Never raises (except cancellation): failures come back named."""
    run = Run(timeout_s)
    run.context.setdefault("target", target)
    params = params or {}
    # Who owns the target words the fixes (app.checks.diagnoses); else told by its address.
    owner = params.get("owner") or (
        TERMINAL if kind == MonitorKind.PAYNT_EPOS or identity.is_terminal(params) else None
    )
    if owner in OWNERS:
        run.context["owner"] = owner
    probe = PROBES.get(kind)
    if probe is None:
        return run.failed(
            ProbeFailure("internal_error", f"unknown probe kind {kind!r}", error=f"kind {kind}")
        )
    # One timeout per check. The tcp and tls probes set none of their own: this one fires at
    # their deadline and the step awaited names it (Run.if_timeout). The others keep their
    # own deadline (their libraries need one); this only catches one that overruns it.
    run.bounded = kind in _BOUNDED
    try:
        async with asyncio.timeout(timeout_s if run.bounded else timeout_s + 2):
            return await probe(run, ctx, target, params)
    except ProbeFailure as exc:
        return run.failed(exc)
    except TimeoutError:
        overran = ProbeFailure("internal_error", "probe overran its deadline", error="overrun")
        return run.failed(run.if_timeout or overran)
    except Exception as exc:  # a bug of ours must not be reported as the terminal's fault
        log.exception("probe %s %s failed", kind, target)
        text = f"{type(exc).__name__}: {exc}"
        return run.failed(ProbeFailure("internal_error", text, error=text))
