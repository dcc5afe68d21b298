"""The catalogue of diagnoses: every failure a check can report, with its cause and fix.

A probe reports only a code and a small context (host, port, name, status ...); the
texts are rendered here, so the dashboard, the CLI and alerts all read the same words.

    explain("tcp_timeout", host="temterminalsnar01.icloud.ingenico.com", port=7003)

`ours` marks failures on TermPulse's side (guard, internal error, provider API trouble):
they make a monitor `unknown`, never `down`.
"""

from __future__ import annotations

import ipaddress
import string
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Diagnosis:
    code: str
    title: str  # a few words for badges and tables
    cause: str  # one line: what is wrong, naming the target
    fix: str  # what a support agent reads out to the store, worded for the target's owner
    ours: bool  # our side failed: the monitor's state is unknown, never down
    owner: str = ""  # who owns what failed: terminal, network, provider, termpulse ("" unknown)


# Who owns what failed, so the fix speaks to them: the terminal, the store's network (its
# firewall, proxy, DNS filter, router), the processor's or provider's host, TermPulse itself.
TERMINAL, NETWORK, PROVIDER, TERMPULSE = "terminal", "network", "provider", "termpulse"
OWNERS = (TERMINAL, NETWORK, PROVIDER, TERMPULSE)


@dataclass(frozen=True)
class _Entry:
    title: str
    cause: str
    fix: str  # for any owner, unless `fixes` words it for the target's owner
    ours: bool = False
    owner: str = ""  # the code always belongs to this owner (DNS: the store's network)
    fixes: dict[str, str] = field(default_factory=dict)  # owner of the target -> fix


# Placeholders: {host} {port} {target} (host:port or URL) {name} (DNS name) {status}
# {expected} {answer} {issuer} {subject} {not_after} {timeout_s} {address} {networks} {error}
# {days} (until a certificate expires) {device_at} {known_as} {answers_as} (app.checks.identity).
CATALOGUE: dict[str, _Entry] = {
    # --- DNS -------------------------------------------------------------------------
    "dns_nxdomain": _Entry(
        "DNS name does not exist",
        "The name {name} does not exist in DNS (NXDOMAIN).",
        "Check the spelling of {name} in the terminal or register settings; if it is "
        "correct, the store's DNS server or filter is hiding it: ask the store's IT to "
        "make {name} resolvable.",
        owner=NETWORK,
    ),
    "dns_servfail": _Entry(
        "DNS server failed",
        "The DNS server refused or failed to resolve {name} (SERVFAIL/REFUSED).",
        "Ask the store's IT to check their DNS server or router (it fails for {name}); "
        "as a workaround set a public DNS server on the router.",
        owner=NETWORK,
    ),
    "dns_timeout": _Entry(
        "DNS server did not answer",
        "No DNS server answered for {name} within {timeout_s} s.",
        "Ask the store's IT to check that the router's DNS server is up and that "
        "outbound DNS (UDP and TCP port 53) is allowed.",
        owner=NETWORK,
    ),
    "dns_no_answer": _Entry(
        "No address for the name",
        "The name {name} exists but has no IPv4 (A) record.",
        "The DNS zone or the store's DNS filter strips the address of {name}: ask the "
        "store's IT to check DNS filtering for {name}.",
        owner=NETWORK,
    ),
    "dns_blocked": _Entry(
        "Blocked by the store's DNS filter",
        "The store's DNS filter blocks {name}: it answers with a block address (such as 0.0.0.0) "
        "instead of the real one.",
        "Ask the store's IT to allow {name} in their DNS or content filter (router, Pi-hole, "
        "firewall web filter); the terminal cannot reach it until then.",
        owner=NETWORK,
    ),
    # --- TCP -------------------------------------------------------------------------
    "tcp_refused": _Entry(
        "Connection refused",
        "{host} refused the connection on port {port}: the port is closed or the service is not running.",
        "Check that the device at {host} is the terminal (its DHCP address may have "
        "changed) and that its integration service is running on port {port}; restart "
        "the terminal.",
        fixes={
            PROVIDER: (
                "{host} refuses port {port}. If other stores reach it, something at this store rejects the "
                "connection: ask the store's IT to allow outbound TCP {port} to {host}. If every store "
                "sees it, the processor's or provider's service is down: check its status page."
            ),
        },
    ),
    "tcp_timeout": _Entry(
        "Connection timed out (filtered)",
        "Port {port} to {host} is filtered: the connection timed out, a firewall drops it.",
        "Ask the store's IT to allow outbound TCP {port} to {host} on the firewall.",
        fixes={
            TERMINAL: (
                "Check that the terminal at {host} is turned on and still at this address (give it a DHCP "
                "reservation), and that the register and the terminal are on the same network with no "
                "firewall between them on port {port}."
            ),
        },
    ),
    "host_unreachable": _Entry(
        "Host unreachable",
        "{host} is unreachable: no route to it on the network.",
        "Check that the terminal is turned on and on the store network; its DHCP address "
        "may have changed after a reboot (give it a fixed address or DHCP reservation).",
        fixes={
            PROVIDER: (
                "The store's network has no route to {host}: check the router's internet connection "
                "(restart the router); if it persists, ask the store's IT or the internet provider."
            ),
        },
    ),
    "tcp_reset": _Entry(
        "Connection reset",
        "{host} accepted the connection on port {port} and then reset it.",
        "A proxy, filter or antivirus is cutting the connection to {host}:{port}, or the "
        "service is crashing: ask the store's IT to exempt {host}:{port}; restart the "
        "terminal.",
        fixes={
            TERMINAL: (
                "Restart the terminal; if it persists, an antivirus or firewall on the register's PC or "
                "the network may be cutting {host}:{port}: ask the store's IT to allow it."
            ),
            PROVIDER: (
                "A proxy, filter or antivirus at the store cuts the connection to {host}:{port}: ask the "
                "store's IT to exempt {host}:{port}. If every store sees it, contact the processor or "
                "provider."
            ),
        },
    ),
    "ping_lost": _Entry(
        "No reply to ping",
        "{host} did not answer any of {count} pings: it is off, not at this address, or ICMP is blocked.",
        "Check that {host} is on and reachable; if its other checks pass, ICMP is only blocked on the "
        "way and the ping check can be removed.",
        fixes={
            TERMINAL: (
                "Check that the terminal is turned on and on the store network; its DHCP address may "
                "have changed (give it a DHCP reservation). If its payment port answers, ICMP is only "
                "blocked: remove the ping check."
            ),
            PROVIDER: (
                "Many internet hosts do not answer ping: if the TCP and TLS checks of {host} pass, remove "
                "the ping check; otherwise check the store's internet connection."
            ),
        },
    ),
    # --- TLS -------------------------------------------------------------------------
    "tls_handshake_failed": _Entry(
        "TLS handshake failed",
        "The TLS handshake with {host}:{port} failed ({error}).",
        "Something on port {port} of {host} is not speaking the expected TLS (a proxy "
        "or a wrong service): ask the store's IT to let TLS to {host}:{port} through "
        "untouched.",
        fixes={
            TERMINAL: (
                "Port {port} of {host} does not speak the terminal's TLS: check that the device at {host} "
                "is the terminal (its DHCP address may have moved) and that {port} is its local API's port; "
                "restart the terminal."
            ),
        },
    ),
    "tls_untrusted": _Entry(
        "Certificate not trusted",
        "The certificate presented for {host} is not trusted (issued by {issuer}): "
        "a TLS-inspecting proxy or an unknown CA.",
        "Ask the store's IT to exclude {host} from TLS/HTTPS inspection on their firewall or proxy.",
        fixes={
            TERMINAL: (
                "Terminals present their own (self-signed) certificate: allow self-signed certificates for "
                "this check, or pin the terminal's fingerprint."
            ),
        },
    ),
    "tls_intercepted": _Entry(
        "TLS intercepted by a firewall or proxy",
        "The certificate presented for {host} was issued by {issuer}, not by the authority "
        "{host} uses: a firewall or proxy at the store inspects TLS.",
        "Your firewall or proxy inspects TLS; exempt {host} from inspection (its TLS/HTTPS "
        "inspection or SSL decryption settings). Payment connections fail through inspection.",
        owner=NETWORK,
    ),
    "tls_stalled": _Entry(
        "TLS handshake stalled",
        "{host}:{port} accepted the connection but the TLS handshake did not complete within {timeout_s} s.",
        "A firewall, proxy or filter at the store holds TLS to {host}:{port}: ask the store's IT "
        "to let it through untouched.",
        fixes={
            TERMINAL: (
                "The terminal accepted the connection but its TLS service does not answer: restart the "
                "terminal; if it persists, contact the terminal provider."
            ),
        },
    ),
    "tls_expiring_soon": _Entry(
        "Certificate expires soon",
        "The certificate presented for {host} is valid but expires on {not_after}, in {days} days.",
        "Nothing fails yet. The operator of {host} must renew its certificate before {not_after}; "
        "if the issuer ({issuer}) is the store's firewall, renew the firewall's certificate.",
    ),
    "tls_expired": _Entry(
        "Certificate expired",
        "The certificate presented for {host} expired on {not_after}.",
        "The server's certificate must be renewed; check also the clock of the device "
        "if the date looks wrong.",
        fixes={
            TERMINAL: (
                "The terminal's certificate has expired: check the terminal's date and time, then ask the "
                "terminal provider to renew its certificate."
            ),
            PROVIDER: (
                "Nothing the store can fix: the operator of {host} must renew its certificate. If the "
                "date looks wrong, check the clock of the checking machine; if the issuer is the store's "
                "firewall, renew the firewall's inspection certificate."
            ),
        },
    ),
    "tls_wrong_host": _Entry(
        "Certificate for another host",
        "The certificate presented by {host} is for another name ({subject}).",
        "The name {host} leads to the wrong server (DNS or proxy redirection): ask the "
        "store's IT to check DNS and proxy settings for {host}.",
    ),
    "tls_fingerprint_mismatch": _Entry(
        "Certificate fingerprint changed",
        "{host}:{port} presented a certificate whose fingerprint differs from the pinned one.",
        "The device at {host} is not the paired terminal or its certificate was "
        "renewed: check the device, then update the pinned fingerprint.",
    ),
    # --- WebSocket (app.checks.ws) ----------------------------------------------------
    "ws_rejected": _Entry(
        "WebSocket upgrade refused",
        "{target} answered HTTP {status} instead of accepting the WebSocket upgrade.",
        "The service at {host}:{port} answers HTTP but not as the expected WebSocket service: check "
        "the URL's path and that the service is enabled.",
        fixes={
            TERMINAL: (
                "The terminal at {host} answers on port {port} but refuses the WebSocket: enable its "
                "WebSocket (ECR) service and check the path, then restart the terminal."
            ),
        },
    ),
    "ws_handshake_failed": _Entry(
        "Not a WebSocket service",
        "{target} does not speak WebSocket ({error}).",
        "Another service (or a proxy) answers on port {port} of {host}: check the port of the "
        "WebSocket service, and ask the store's IT to let it through untouched.",
        fixes={
            TERMINAL: (
                "Another service answers on port {port} of {host}: check that the device at {host} is the "
                "terminal (its DHCP address may have moved) and the port of its WebSocket service."
            ),
        },
    ),
    # --- the device at a terminal's address (app.checks.identity) ------------------
    "device_changed": _Entry(
        "Another device at the terminal's address",
        "The device at {device_at} is no longer {known_as} (it answers as {answers_as}): the "
        "terminal's DHCP address has probably moved.",
        "Give the terminal {known_as} a DHCP reservation (a fixed address) on the store's router "
        "and update its address in TermPulse. Do not re-pair with the device now at {device_at}. "
        "If the terminal was really replaced, an admin re-learns its identity.",
        owner=TERMINAL,
    ),
    "not_terminal": _Entry(
        "Not the terminal at its address",
        "The device at {device_at} is not the terminal {known_as}: it answers {answers_as}.",
        "Another device (a printer, a PC, a router's page) has the terminal's address: its DHCP "
        "address has probably moved. Find the terminal's address on its network settings screen, "
        "give it a DHCP reservation and update its address in TermPulse.",
        owner=TERMINAL,
    ),
    # --- HTTP ------------------------------------------------------------------------
    "http_status": _Entry(
        "Unexpected HTTP status",
        "{target} answered {answer} (expected {expected}).",
        "The service at {target} is up but answers unexpectedly: check the URL and the "
        "service configuration.",
        fixes={
            PROVIDER: (
                "{target} is reachable but answers unexpectedly: check the URL configured for the check; "
                "if it is right, the provider changed its service (check its status page)."
            ),
        },
    ),
    "http_401": _Entry(
        "Not paired (HTTP 401)",
        "The terminal at {target} rejected the token (HTTP 401): not paired or the token is invalid.",
        "Re-pair the terminal with the register (pairing issues a new token).",
        owner=TERMINAL,
    ),
    "http_5xx": _Entry(
        "Server error (HTTP {status})",
        "{target} answered HTTP {status}: the terminal or service reports an internal error.",
        "Restart the terminal; if the error persists, contact the terminal provider.",
        fixes={
            PROVIDER: (
                "Nothing to do at the store: the service at {target} reports an internal error. Check the "
                "processor's or provider's status page; contact them if it lasts."
            ),
        },
    ),
    "stalled": _Entry(
        "No answer (stalled)",
        "{host}:{port} accepted the connection but did not answer within {timeout_s} s.",
        "The service on {host} is hung or a proxy holds the connection: restart the "
        "terminal; if it persists ask the store's IT to check proxies/filters.",
        fixes={
            TERMINAL: (
                "The terminal's service is hung: restart the terminal; if it persists, contact the "
                "terminal provider."
            ),
            PROVIDER: (
                "{host} accepted the connection but did not answer. A proxy or filter at the store may hold "
                "it: ask the store's IT to let {host}:{port} through untouched. If every store sees it, the "
                "processor's or provider's service is slow: check its status page."
            ),
        },
    ),
    # --- our side --------------------------------------------------------------------
    "target_refused": _Entry(
        "Target outside allowed networks",
        "TermPulse did not check {target}: its address {address} is outside the allowed "
        "networks (TERMPULSE_ALLOWED_NETWORKS).",
        "Nothing to do at the store: an administrator must fix the monitor's target or the allowed networks.",
        ours=True,
    ),
    "ping_not_permitted": _Entry(
        "Ping not permitted on the checker",
        "TermPulse cannot ping {host} from this machine: the system does not allow it ICMP "
        "sockets ({error}).",
        "Nothing to do at the store: an administrator must {allow}, or remove the ping check.",
        ours=True,
    ),
    "internal_error": _Entry(
        "Checker error",
        "TermPulse failed while checking {target} ({error}).",
        "Nothing to do at the store: the check could not run; an administrator should "
        "look at the TermPulse logs.",
        ours=True,
    ),
    "checker_overloaded": _Entry(
        "Checker overloaded",
        "TermPulse was too busy to time the check of {target} correctly, so the silence may be ours.",
        "Nothing to do at the store. An administrator should add a worker or lower the check rate.",
        ours=True,
    ),
    "result_stale": _Entry(
        "No recent result",
        "TermPulse has had no result for {target} for three check intervals: its checkers are "
        "stopped or behind.",
        "Nothing to do at the store. An administrator should check that a TermPulse worker is running.",
        ours=True,
    ),
    "agent_offline": _Entry(
        "Store agent offline",
        "The store agent that checks {target} has gone silent, so TermPulse cannot tell "
        "whether {target} is reachable.",
        "Check that the store's agent machine is on and online (it needs outbound HTTPS to "
        "TermPulse); its results are kept and sent when it reconnects.",
        ours=True,
    ),
    # Not failures: why a monitor's state changed by the windows job (app.monitoring.windows).
    "maintenance_window": _Entry(
        "Maintenance window",
        "The store is in a planned maintenance window: {target} is still checked, but its "
        "results do not change its state and the time counts as maintenance.",
        "Nothing to do: the window's end returns the check to its own results.",
    ),
    "outside_trading_hours": _Entry(
        "Outside trading hours",
        "The store is closed by its trading hours: {target} is still checked, but the time "
        "counts as maintenance and no alert is sent.",
        "Nothing to do. If the store is open now, correct its trading hours.",
    ),
    "maintenance_ended": _Entry(
        "Maintenance ended",
        "The store's maintenance window (or closed time) ended: {target} is unknown until its next result.",
        "Nothing to do: the next check says what it is.",
    ),
    "agent_unreachable": _Entry(
        "Checked by the store agent",
        "{target} is checked from inside the store by its agent, which this command cannot reach.",
        "Use Check connection on the dashboard (or POST /api/v1/terminals/<POIID>/check): the "
        "server hands the check to the store agent.",
        ours=True,
    ),
    "store_offline": _Entry(
        "Store offline",
        "{target} has lost its internet connection or its power: the store agent and all its "
        "cloud terminals went silent.",
        "Ask the store whether the power is on and the router has internet; restart the router.",
        owner=NETWORK,
    ),
    # --- cloud / provider (produced by the provider polls) ---------------------------
    "cloud_disconnected": _Entry(
        "Cloud connection down",
        "The terminal {target} has no live cloud (WebSocket) connection to the provider.",
        "Check that WebSockets are enabled for the terminal, that it is turned on and "
        "online, then restart it.",
        owner=TERMINAL,
    ),
    "cloud_not_enabled": _Entry(
        "Cloud connection not enabled",
        "The cloud (WebSocket) connection is not enabled for the terminal {target}.",
        "Enable the cloud connection (WebSockets) for the terminal in the provider's "
        "portal if this store uses cloud payments.",
        owner=TERMINAL,
    ),
    "provider_auth_rejected": _Entry(
        "Provider credentials rejected",
        "The provider API rejected TermPulse's credentials ({target}).",
        "Nothing to do at the store: an administrator must renew the API key of the provider account.",
        ours=True,
    ),
    "provider_rate_limited": _Entry(
        "Provider rate-limited",
        "The provider API rate-limited TermPulse ({target}); the state is unknown.",
        "Nothing to do at the store: TermPulse retries later.",
        ours=True,
    ),
    "provider_unavailable": _Entry(
        "Provider API unavailable",
        "The provider API did not answer properly ({target}: {error}); the state is unknown.",
        "Nothing to do at the store: TermPulse retries later; check the provider's status page if it lasts.",
        ours=True,
    ),
}

# Shown for a placeholder the probe could not fill, so a text never breaks.
_FALLBACKS = {
    "host": "the host",
    "port": "?",
    "target": "the target",
    "name": "the name",
    "status": "?",
    "expected": "2xx/3xx",
    "answer": "an unexpected HTTP status",
    "issuer": "an unknown issuer",
    "subject": "another name",
    "not_after": "an earlier date",
    "timeout_s": "the timeout",
    "address": "?",
    "error": "no detail",
    "days": "a few",
    "device_at": "the terminal's address",
    "known_as": "the terminal",
    "answers_as": "another device",
    "count": "several",
    "allow": "allow ICMP sockets for TermPulse (net.ipv4.ping_group_range, or CAP_NET_RAW)",
}


class _Context(dict):
    def __missing__(self, key: str) -> str:
        return _FALLBACKS.get(key, "?")


def _render(template: str, ctx: dict) -> str:
    return string.Formatter().vformat(template, (), _Context(ctx))


def owner_of(ctx: dict[str, object]) -> str:
    """Who owns the target when the probe did not say (ctx["owner"]): an address on a private
    network (LAN, loopback, link-local) is a terminal's; a name or public address is a
    processor's or provider's host."""
    host = str(ctx.get("host") or "").strip("[]")
    if not host:
        return ""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return PROVIDER  # a name: the profiles' destinations (terminals are set by address)
    return TERMINAL if ip.is_private or ip.is_loopback or ip.is_link_local else PROVIDER


def explain(code: str, **ctx: object) -> Diagnosis:
    """The diagnosis for `code`, its texts filled from ctx; unknown codes are internal errors.

    The fix is worded for who owns the failure: the code's own owner (DNS: the store's
    network; ours: TermPulse), else ctx["owner"], else the target's owner from its address."""
    entry = CATALOGUE.get(code)
    if entry is None:
        ctx.setdefault("error", f"unknown diagnosis {code!r}")
        code, entry = "internal_error", CATALOGUE["internal_error"]
    ctx = {k: v for k, v in ctx.items() if v is not None}
    if "target" not in ctx and "host" in ctx:
        ctx["target"] = f"{ctx['host']}:{ctx['port']}" if "port" in ctx else ctx["host"]
    if "name" not in ctx and "host" in ctx:
        ctx["name"] = ctx["host"]
    owner = TERMPULSE if entry.ours else entry.owner or str(ctx.get("owner") or "") or owner_of(ctx)
    return Diagnosis(
        code=code,
        title=_render(entry.title, ctx),
        cause=_render(entry.cause, ctx),
        fix=_render(entry.fixes.get(owner, entry.fix), ctx),
        ours=entry.ours,
        owner=owner,
    )


def is_ours(code: str | None) -> bool:
    """True when a failure with this code is TermPulse's own (state unknown, not down)."""
    return code is not None and CATALOGUE.get(code, CATALOGUE["internal_error"]).ours
