"""Check connection asks the provider live for a cloud terminal, not the last poll."""

from app.config import Settings
from app.monitoring.manual import check_terminal_now
from tests.providers.conftest import SECRET, cloud_states, load_fleet, make_account


async def test_check_connection_asks_the_provider_now(db, adyen_sim):
    stores, terminals = adyen_sim.fleet
    await load_fleet(db, stores, terminals)
    settings = Settings(
        database_url=db.url, secret_key=SECRET, allowed_networks=["127.0.0.0/8"], provider_hosts=["127.0.0.1"]
    )
    poiid = terminals[0].poiid

    no_account = await check_terminal_now(db, settings, poiid)  # no account yet: the last poll, never made
    assert no_account.verdict == "could_not_check" and not no_account.checks[0].live

    await make_account(db, adyen_sim)
    connected = await check_terminal_now(db, settings, poiid)
    assert connected.verdict == "connected" and connected.checks[0].live
    assert connected.checks[0].steps[0]["step"] == "provider API"

    adyen_sim.set_connected(poiid, False)
    report = await check_terminal_now(db, settings, poiid)
    assert report.verdict == "disconnected" and report.diagnosis.code == "cloud_disconnected"
    assert (await cloud_states(db))[poiid][1] == "cloud_disconnected"  # stored as a manual result

    adyen_sim.fail(500, times=5)
    failing = await check_terminal_now(db, settings, poiid)
    assert failing.verdict == "could_not_check" and failing.diagnosis.ours


async def test_check_api_answers_the_report(db, adyen_sim, client):
    stores, terminals = adyen_sim.fleet
    await load_fleet(db, stores, terminals)
    await make_account(db, adyen_sim)
    answer = await client.post(f"/api/v1/terminals/{terminals[1].poiid}/check")
    assert answer.status_code == 200, answer.text
    report = answer.json()
    assert report["verdict"] == "connected" and report["checks"][0]["steps"][0]["step"] == "provider API"
    missing = await client.post("/api/v1/terminals/Nope-1/check")
    assert missing.status_code == 404 and "Nope-1" in missing.json()["detail"]
