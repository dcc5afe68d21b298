"""Check connection shows a certificate that expires soon (tls_expiring_soon) as a warning with
the days left and its fix, not as a failure: the terminal stays connected. Against the
simulated processor host on loopback, on both databases."""

from __future__ import annotations

from tests.checks.test_profile_checks import settings  # noqa: F401  (the app checks through the simulators)
from tests.html import dom, one, text

HX = {"HX-Request": "true"}
PROCESSOR = "prodssl.protectedtransactions.com"


async def test_check_connection_shows_a_certificate_expiring_soon_as_a_warning(
    client, db, terminal, endpoint_behaviour
):
    t = await terminal("tcp")
    await client.post(
        "/api/v1/stores", json={"code": "S-EXP", "name": "Exp", "network_profile": "fullsteam-ingenico"}
    )
    body = {
        "store_code": "S-EXP",
        "poiid": "EXP-1",
        "integration": "local",
        "lan_host": t.host,
        "lan_port": t.port,
    }
    assert (await client.post("/api/v1/terminals", json=body)).status_code == 201
    await endpoint_behaviour(PROCESSOR, 443, "tls_expiring")

    r = await client.post("/terminals/EXP-1/check", headers=HX)
    assert r.status_code == 200, r.text
    section = one(dom(r), "section.verdict")
    assert section.get("data-verdict") == "connected"  # a warning, not a failure
    assert not section.cssselect(".diagnosis")
    warning = one(section, ".check-warning")
    assert warning.get("data-code") == "tls_expiring_soon"
    assert "Certificate expires soon" in text(one(warning, ".diag-title"))
    assert "in 10 days" in text(one(warning, ".cause"))
    assert "renew" in text(one(warning, ".fix"))
    report = one(section, "pre").text_content()
    assert "warning [tls_expiring_soon]" in report and "Warning: Certificate expires soon" in report
