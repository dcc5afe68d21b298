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

NETWORK_PROFILES: dict[str, tuple[Destination, ...]] = {
    "fullsteam-ingenico": FULLSTEAM_INGENICO,
    "adyen-cloud": ADYEN_CLOUD,
    "paynt-local": (),  # the terminals' own EPOS checks cover it
    "mixed": FULLSTEAM_INGENICO + ADYEN_CLOUD,
}
