"""A store's network profile checks TLS on each TLS destination: the monitor is derived
beside the DNS and TCP ones (whose keys, and so history, stay), and Check connection reports
a TLS-inspecting firewall the TCP connect passes through."""

from types import SimpleNamespace

import pytest
from sqlalchemy import select

from app.inventory import monitors as derive
from app.inventory.models import Monitor, NetworkProfile, Store, Terminal
from app.inventory.profiles import PRESETS, Destination
from app.monitoring.manual import check_terminal_now
from tests.monitoring.helpers import add_store, add_terminals

PROCESSOR = "prodssl.protectedtransactions.com"
INGENICO = "temterminalsnar01.icloud.ingenico.com"


def test_tls_destinations_get_a_tls_monitor_and_the_others_keep_their_keys():
    specs = derive.store_monitor_specs(SimpleNamespace(id=7), PRESETS["mixed"][1])
    assert {(s.key, s.kind, s.target) for s in specs} == {
        (f"s7:dns:{PROCESSOR}", "dns", PROCESSOR),
        (f"s7:tcp:{PROCESSOR}:443", "tcp", f"{PROCESSOR}:443"),
        (f"s7:tls:{PROCESSOR}:443", "tls", f"{PROCESSOR}:443"),
        (f"s7:dns:{INGENICO}", "dns", INGENICO),
        (f"s7:tcp:{INGENICO}:7003", "tcp", f"{INGENICO}:7003"),  # plain TCP: no TLS check
        ("s7:dns:terminal-api-live.adyen.com", "dns", "terminal-api-live.adyen.com"),
        ("s7:tcp:terminal-api-live.adyen.com:443", "tcp", "terminal-api-live.adyen.com:443"),
        ("s7:tls:terminal-api-live.adyen.com:443", "tls", "terminal-api-live.adyen.com:443"),
    }
    # Verified against the system CAs; by_name: the guard allows the profile's host wherever it resolves.
    assert all(s.params == {"by_name": True} for s in specs)


async def store_with_profile(db, profile):
    sid = await add_store(db)
    async with db.sessionmaker() as s:
        store = await s.get(Store, sid)
        store.network_profile = profile
        await derive.sync_monitors(s, stores=[store])
        await s.commit()
    return sid


async def monitor_ids(db, sid):
    async with db.sessionmaker() as s:
        rows = await s.execute(select(Monitor.key, Monitor.id).where(Monitor.store_id == sid))
        return dict(rows.all())


async def set_destinations(db, name, destinations):
    async with db.sessionmaker() as s:
        profile = await s.scalar(select(NetworkProfile).where(NetworkProfile.name == name))
        profile.destinations = [d.as_json() for d in destinations]
        await s.commit()


async def test_an_existing_store_gains_the_tls_monitor_and_keeps_its_monitors(db):
    # As a store derived before TLS checks existed: DNS and TCP only.
    preset = PRESETS["fullsteam-ingenico"][1]
    await set_destinations(db, "fullsteam-ingenico", [Destination(d.host, d.port) for d in preset])
    sid = await store_with_profile(db, "fullsteam-ingenico")
    before = await monitor_ids(db, sid)
    assert len(before) == 4 and not any(":tls:" in k for k in before)
    await set_destinations(db, "fullsteam-ingenico", preset)
    async with db.sessionmaker() as s:
        counts = await derive.sync_monitors(s, stores=[await s.get(Store, sid)])
        await s.commit()
    assert counts == {"created": 1, "updated": 0, "deleted": 0}
    after = await monitor_ids(db, sid)
    assert {k: after[k] for k in before} == before  # same rows: their history stays
    assert set(after) - set(before) == {f"s{sid}:tls:{PROCESSOR}:443"}


@pytest.fixture
async def inspected(network):
    await network.set_endpoint_behaviour(PROCESSOR, 443, "tls_inspected")
    yield
    await network.set_endpoint_behaviour(PROCESSOR, 443, "healthy")


async def test_check_connection_reports_the_inspecting_firewall(db, settings, ctx, inspected):
    sid = await store_with_profile(db, "fullsteam-ingenico")
    [tid] = await add_terminals(db, sid, 1)
    async with db.sessionmaker() as s:
        poiid = await s.scalar(select(Terminal.poiid).where(Terminal.id == tid))
    report = await check_terminal_now(db, settings, poiid, probe_context=ctx)
    by_kind = {(c.kind, c.target): c for c in report.checks}
    assert by_kind[("tcp", f"{PROCESSOR}:443")].outcome == "ok"  # a TCP connect cannot see it
    tls = by_kind[("tls", f"{PROCESSOR}:443")]
    assert (tls.outcome, tls.diagnosis.code) == ("fail", "tls_intercepted")
    assert "Contoso SSL Inspection CA" in tls.diagnosis.cause
    assert f"exempt {PROCESSOR} from inspection" in tls.diagnosis.fix
    assert report.diagnosis.code == "tls_intercepted"


async def test_a_certificate_expiring_soon_leaves_the_monitor_up_with_the_warning(db, settings, ctx, network):
    sid = await store_with_profile(db, "fullsteam-ingenico")
    [tid] = await add_terminals(db, sid, 1)
    async with db.sessionmaker() as s:
        poiid = await s.scalar(select(Terminal.poiid).where(Terminal.id == tid))
    await network.set_endpoint_behaviour(PROCESSOR, 443, "tls_expiring")
    try:
        report = await check_terminal_now(db, settings, poiid, probe_context=ctx)
    finally:
        await network.set_endpoint_behaviour(PROCESSOR, 443, "healthy")
    tls = next(c for c in report.checks if c.kind == "tls")
    assert (tls.outcome, tls.state, tls.diagnosis.code) == ("ok", "up", "tls_expiring_soon")
    assert report.diagnosis is None or report.diagnosis.code != "tls_expiring_soon"  # not a failure
    async with db.sessionmaker() as s:
        m = (
            await s.execute(
                select(Monitor.state, Monitor.last_diagnosis, Monitor.last_detail).where(
                    Monitor.key == f"s{sid}:tls:{PROCESSOR}:443"
                )
            )
        ).one()
    assert (m.state, m.last_diagnosis) == ("up", "tls_expiring_soon")
    assert "expires on" in m.last_detail and "in 10 days" in m.last_detail
