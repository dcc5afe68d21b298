"""Network profiles: the outbound destinations a store's network must resolve and reach.

Profiles are records admins create and edit (app.inventory.profile_service, the Network
profiles page, /api/v1/network-profiles); the presets below are what a new installation starts
with (migration 0008 seeds them). Each destination names what to check: DNS, a TCP connect, a
certificate-verifying TLS handshake (the only check that sees a TLS-inspecting firewall or
proxy, an expired or wrong-host certificate, or a handshake that never completes: a TCP connect
passes through all of them), an HTTPS request, a WebSocket handshake, ping.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from app.vocabulary import MonitorKind

# What a destination may check, in the order its monitors are listed.
DESTINATION_CHECKS = (
    MonitorKind.DNS,
    MonitorKind.TCP,
    MonitorKind.TLS,
    MonitorKind.HTTPS,
    MonitorKind.WEBSOCKET,
    MonitorKind.PING,
)
DEFAULT_CHECKS = (MonitorKind.DNS, MonitorKind.TCP)


class Destination(NamedTuple):
    host: str
    port: int
    checks: tuple[str, ...] = DEFAULT_CHECKS

    def as_json(self) -> dict[str, object]:
        return {"host": self.host, "port": self.port, "checks": list(self.checks)}

    @classmethod
    def from_json(cls, item: dict[str, Any]) -> Destination:
        return cls(str(item["host"]), int(item["port"]), tuple(str(c) for c in item["checks"]))


TLS_CHECKS = (MonitorKind.DNS, MonitorKind.TCP, MonitorKind.TLS)
FULLSTEAM_INGENICO = (
    Destination("prodssl.protectedtransactions.com", 443, TLS_CHECKS),  # the POS to the processor
    Destination("temterminalsnar01.icloud.ingenico.com", 7003),  # persistent TCP from the terminal
)
ADYEN_CLOUD = (Destination("terminal-api-live.adyen.com", 443, TLS_CHECKS),)
# Stripe Terminal readers (Stripe's "Domains and IP addresses", Stripe Terminal domains; the
# *.terminal-events.stripe.com wildcard cannot be checked by name).
STRIPE_TERMINAL = tuple(
    Destination(host, 443, TLS_CHECKS)
    for host in ("api.stripe.com", "armada.stripe.com", "gator.stripe.com", "api.emms.bbpos.com")
)

# The shipped presets: name -> (description, destinations). Migration 0008 seeds a copy of them.
PRESETS: dict[str, tuple[str, tuple[Destination, ...]]] = {
    "fullsteam-ingenico": ("Fullsteam processor and Ingenico terminal management", FULLSTEAM_INGENICO),
    "adyen-cloud": ("Adyen's cloud Terminal API", ADYEN_CLOUD),
    "paynt-local": ("Paynt terminals on the LAN: their own EPOS checks cover it", ()),
    "mixed": ("Fullsteam/Ingenico and Adyen cloud", FULLSTEAM_INGENICO + ADYEN_CLOUD),
    "stripe-terminal": ("Stripe Terminal readers", STRIPE_TERMINAL),
}

# Torgsoft's bank-terminal protocols by the terminal's port (a terminal with local_api
# "torgsoft"): 3000 is the JSON WebSocket service, checked with a WebSocket handshake; the
# others with a TCP connect (a terminal's other ports: its tcp_ports list). InpasEcrCom (5555)
# listens on the PC, not on the terminal.
TORGSOFT_PORTS = {2000: "BPOS", 2100: "BPOS", 3000: "JSON WebSocket", 5001: "PosApi"}
TORGSOFT_WEBSOCKET_PORT = 3000
