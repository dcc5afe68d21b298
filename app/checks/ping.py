"""The ping probe: ICMP echo with icmplib, on asyncio.

Unprivileged ICMP sockets first (Linux allows them to the groups in
net.ipv4.ping_group_range); else a raw socket where the process may open one (root or
CAP_NET_RAW). Where neither is allowed the check is ours, `ping_not_permitted` (unknown,
never down), and says what to change.

    target "192.168.1.23" or a name;  params {"count": 3, "interval_s": 0.2, "privileged": None}
    ("privileged": false never tries a raw socket, true only a raw socket)
"""

from __future__ import annotations

import asyncio

import icmplib  # type: ignore[import-untyped]  # no type hints shipped

from app.checks.context import ProbeContext, resolve_and_guard
from app.checks.result import ProbeFailure, ProbeResult, Run

_ALLOW = (
    'allow ICMP sockets for TermPulse\'s group (sysctl net.ipv4.ping_group_range="0 2147483647") '
    "or give its Python CAP_NET_RAW"
)


async def _ping(
    address: str, count: int, interval: float, wait_s: float, source: str | None, privileged: object
) -> icmplib.Host:
    modes = [False, True] if privileged is None else [bool(privileged)]
    refused: Exception | None = None
    for raw in modes:
        try:
            return await icmplib.async_ping(
                address, count=count, interval=interval, timeout=wait_s, source=source, privileged=raw
            )
        except (icmplib.SocketPermissionError, PermissionError) as exc:
            refused = exc
    text = f"{refused}".split(". Read more")[0] if refused else "not permitted"
    raise ProbeFailure("ping_not_permitted", f"ICMP sockets not permitted: {text}", error=text, allow=_ALLOW)


async def probe_ping(run: Run, ctx: ProbeContext, target: str, params: dict) -> ProbeResult:
    host = target.strip()
    run.context.update(host=host, target=host)
    source = params.get("source")
    address = await resolve_and_guard(run, ctx, host, params)
    count = max(1, min(int(params.get("count", 3)), 10))
    interval = max(0.01, float(params.get("interval_s", 0.2)))
    run.context["count"] = count
    run.begin("ping")
    wait = max(run.remaining() - interval * (count - 1), 0.05)  # per reply, within the deadline
    try:
        async with asyncio.timeout(run.remaining() + 0.5):
            reply = await _ping(address, count, interval, wait, source, params.get("privileged"))
    except TimeoutError:
        raise ProbeFailure("ping_lost", f"no reply from {address} before the timeout") from None
    except icmplib.ICMPLibError as exc:
        raise ProbeFailure("internal_error", f"ping: {exc}", error=str(exc)) from None
    if not reply.is_alive:
        raise ProbeFailure("ping_lost", f"0 of {reply.packets_sent} pings to {address} answered")
    detail = (
        f"{reply.packets_received}/{reply.packets_sent} replies from {address}, rtt min/avg/max "
        f"{reply.min_rtt:.2f}/{reply.avg_rtt:.2f}/{reply.max_rtt:.2f} ms"
    )
    run.end(True, detail)
    return run.ok(reply.avg_rtt, detail)
