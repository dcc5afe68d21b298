"""Generate a large fleet in the sample CSV format, modelled on the shipped sample fleet.

Store n gets terminals 127.<1+n//250>.<n%250>.<till>: every address on loopback.
"""

from __future__ import annotations

import csv
import io
import random

from app.inventory.csvimport import SAMPLE_FLEET

PROFILE_PROVIDERS = {
    "fullsteam-ingenico": ("ingenico", "local", "tcp", 2000),
    "paynt-local": ("paynt", "local", "paynt_epos", 8080),
    "adyen-cloud": ("adyen", "both", "adyen_local", 8443),
    "mixed": ("adyen", "cloud", "", None),
}


def _sample_regions_and_zones() -> tuple[list[str], list[str]]:
    with open(SAMPLE_FLEET / "stores.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return sorted({r["region"] for r in rows}), sorted({r["timezone"] for r in rows})


def generate(stores: int, terminals_per_store: int, seed: int = 42) -> tuple[bytes, bytes]:
    rng = random.Random(seed)
    regions, zones = _sample_regions_and_zones()
    store_out, term_out = io.StringIO(), io.StringIO()
    sw, tw = csv.writer(store_out), csv.writer(term_out)
    sw.writerow(
        [
            "code",
            "name",
            "region",
            "timezone",
            "adyen_store_id",
            "stripe_location_id",
            "network_profile",
            "tags",
        ]
    )
    tw.writerow(
        [
            "store_code",
            "poiid",
            "model",
            "serial",
            "label",
            "provider",
            "integration",
            "lan_host",
            "lan_port",
            "local_api",
            "mac",
            "cloud_enabled",
        ]
    )
    profiles = list(PROFILE_PROVIDERS)
    for n in range(1, stores + 1):
        code, profile = f"S-{n:05d}", rng.choice(profiles)
        provider, integration, local_api, port = PROFILE_PROVIDERS[profile]
        adyen = f"ST{n:05d}ADY" if provider == "adyen" else ""
        sw.writerow([code, f"Store #{n}", rng.choice(regions), rng.choice(zones), adyen, "", profile, ""])
        for till in range(1, terminals_per_store + 1):
            model = {"ingenico": "Move5000", "paynt": "A920", "adyen": "P400Plus"}[provider]
            serial = f"{n:05d}{till:03d}{rng.randrange(1000):03d}"
            host = f"127.{1 + n // 250}.{n % 250}.{till}" if local_api else ""
            mac = f"02:00:{n // 256 % 256:02x}:{n % 256:02x}:{till:02x}:{rng.randrange(256):02x}"
            tw.writerow(
                [
                    code,
                    f"{model}-{serial}",
                    model,
                    serial,
                    f"Till {till}",
                    provider,
                    integration,
                    host,
                    port or "",
                    local_api,
                    mac,
                    "yes" if integration != "local" else "no",
                ]
            )
    return store_out.getvalue().encode(), term_out.getvalue().encode()
