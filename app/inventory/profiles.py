"""Network profiles: the outbound destinations a store's network must resolve and reach.

Each destination is checked for DNS and a TCP connect; a TLS destination also gets a
certificate-verifying TLS handshake, the only check that sees a TLS-inspecting firewall or
proxy, an expired or wrong-host certificate, or a handshake that never completes (a TCP
connect passes through all of them).
"""

from __future__ import annotations

from typing import NamedTuple


class Destination(NamedTuple):
    host: str
    port: int
    tls: bool = False  # the service speaks TLS on this port: check the handshake and certificate


FULLSTEAM_INGENICO = (
    Destination("prodssl.protectedtransactions.com", 443, tls=True),  # the POS to the processor
    Destination("temterminalsnar01.icloud.ingenico.com", 7003),  # persistent TCP from the terminal
)
ADYEN_CLOUD = (Destination("terminal-api-live.adyen.com", 443, tls=True),)
# Stripe Terminal readers (Stripe's "Domains and IP addresses", Stripe Terminal domains; the
# *.terminal-events.stripe.com wildcard cannot be checked by name).
STRIPE_TERMINAL = (
    Destination("api.stripe.com", 443, tls=True),
    Destination("armada.stripe.com", 443, tls=True),
    Destination("gator.stripe.com", 443, tls=True),
    Destination("api.emms.bbpos.com", 443, tls=True),
)

NETWORK_PROFILES: dict[str, tuple[Destination, ...]] = {
    "fullsteam-ingenico": FULLSTEAM_INGENICO,
    "adyen-cloud": ADYEN_CLOUD,
    "paynt-local": (),  # the terminals' own EPOS checks cover it
    "mixed": FULLSTEAM_INGENICO + ADYEN_CLOUD,
    "stripe-terminal": STRIPE_TERMINAL,
}

# The provider and processor hosts the profiles check: the target guard allows them by name
# wherever they resolve (app.checks.guard), besides the allowed networks.
PROFILE_HOSTS = frozenset(d.host for destinations in NETWORK_PROFILES.values() for d in destinations)

# Torgsoft's bank-terminal protocols by the terminal's port (a terminal with local_api
# "torgsoft"): 3000 is the JSON WebSocket service, checked with a WebSocket handshake; the
# others with a TCP connect. InpasEcrCom (5555) listens on the PC, not on the terminal.
TORGSOFT_PORTS = {2000: "BPOS", 2100: "BPOS", 3000: "JSON WebSocket", 5001: "PosApi"}
TORGSOFT_WEBSOCKET_PORT = 3000
