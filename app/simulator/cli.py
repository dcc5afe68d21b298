"""`termpulse simulate`: the whole simulated world on loopback, until Ctrl-C.

* helper simulators of app.simulator.network: DNS on 127.0.0.1:--dns-port and every
  terminal of the fleet with a LAN address (127.1.x.y), plus the network-profile endpoints;
* the provider API simulators (app.simulator.providers): Adyen on 127.0.0.1:8701 and
  Stripe on 127.0.0.1:8702 (TERMPULSE_SIM_ADYEN_PORT / TERMPULSE_SIM_STRIPE_PORT), with
  the demo story (one store's terminals lose their cloud connection and come back);
* an OpenID Connect provider (app.simulator.oidc) on 127.0.0.1:8703 (TERMPULSE_SIM_OIDC_PORT),
  to try SSO: its sign-in page lets you pick a test user (one per role, and one no role maps).

It prints what to configure in TermPulse to watch this world.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import logging
import os
import tempfile
from pathlib import Path

from app.config import Settings
from app.shutdown import until_terminated

log = logging.getLogger(__name__)


def _rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


async def _run(settings: Settings, fleet: Path, dns_port: int) -> int:
    from app.process import raise_fd_limit
    from app.simulator.network import start_demo_network
    from app.simulator.oidc import OidcSim
    from app.simulator.providers import start_provider_simulators

    terminals = _rows(fleet)
    stores = _rows(fleet.with_name("stores.csv"))
    raise_fd_limit()
    network = await start_demo_network(terminals, dns_port=dns_port)
    sims = await start_provider_simulators(
        terminals,
        stores,
        adyen_port=int(os.environ.get("TERMPULSE_SIM_ADYEN_PORT", 8701)),
        stripe_port=int(os.environ.get("TERMPULSE_SIM_STRIPE_PORT", 8702)),
    )
    story = sims.start_demo_story()
    oidc = await OidcSim().start(port=int(os.environ.get("TERMPULSE_SIM_OIDC_PORT", 8703)))
    ca_file = write_ca_file(network.ca_pem)
    print(f"Simulating {len(terminals)} terminals of {len(stores) or '?'} stores on loopback.")
    print(
        f"  DNS: 127.0.0.1:{network.dns.port}  -> TERMPULSE_DNS_NAMESERVERS=127.0.0.1 "
        f"TERMPULSE_DNS_PORT={network.dns.port} TERMPULSE_ALLOWED_NETWORKS=127.0.0.0/8"
    )
    print(
        f"  Simulator CA (new at each start): {ca_file}  -> TERMPULSE_TRUSTED_CA_FILE={ca_file} "
        "(else the processor hosts' TLS checks report tls_intercepted, as through an inspecting firewall)"
    )
    print(
        f"  Adyen API: {sims.adyen.url} ({len(sims.adyen.terminals)} terminals); "
        f"story: store {sims.adyen.store_name(story)} loses its cloud connection every few minutes"
    )
    print(f"  Stripe API: {sims.stripe.url} ({len(sims.stripe.terminals)} readers)")
    print(
        "Provider accounts to add (Providers page, or POST /api/v1/providers), with "
        f"TERMPULSE_PROVIDER_HOSTS={','.join(sims.hosts())} (no official provider host):"
    )
    for spec in sims.account_specs():
        print("  " + json.dumps(spec))
    oidc_env = " ".join(f"TERMPULSE_{k.upper()}={v}" for k, v in oidc.settings().items())
    print(f"  OpenID Connect provider (SSO): {oidc.url}  -> {oidc_env}")
    print("Ctrl-C to stop.", flush=True)
    try:
        await until_terminated()
    finally:
        await oidc.stop()
        await sims.stop()
        await network.stop()
    return 0


def write_ca_file(ca_pem: str) -> Path:
    """The simulator CA where TermPulse can be told to trust it (a private file of this user)."""
    folder = Path(tempfile.gettempdir()) / f"termpulse-simulator-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    path = folder / "ca.pem"
    path.write_text(ca_pem)
    return path


def simulate_command(settings: Settings, args: argparse.Namespace) -> int:
    return asyncio.run(_run(settings, Path(args.fleet), args.dns_port))
