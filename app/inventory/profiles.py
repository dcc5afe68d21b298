"""Network profiles: the outbound destinations a store's network must resolve and reach."""

from __future__ import annotations

FULLSTEAM_INGENICO = (
    ("prodssl.protectedtransactions.com", 443),
    ("temterminalsnar01.icloud.ingenico.com", 7003),  # persistent TCP from the terminal
)
ADYEN_CLOUD = (("terminal-api-live.adyen.com", 443),)

NETWORK_PROFILES: dict[str, tuple[tuple[str, int], ...]] = {
    "fullsteam-ingenico": FULLSTEAM_INGENICO,
    "adyen-cloud": ADYEN_CLOUD,
    "paynt-local": (),  # the terminals' own EPOS checks cover it
    "mixed": FULLSTEAM_INGENICO + ADYEN_CLOUD,
}
