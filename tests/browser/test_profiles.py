"""Network profiles in a browser: the admin page lists the presets, a new profile's bad line is
shown by its field and fixed, a profile in use cannot be deleted; and Check connection shows a
processor certificate that expires soon as a warning, the terminal connected."""

from __future__ import annotations

from tests.browser.conftest import shot

PROCESSOR = "prodssl.protectedtransactions.com"
TERMINAL = "Move5000-203097992"  # a terminal of S-0001 (fullsteam-ingenico) in the sample fleet


async def test_profiles_page_create_with_an_error_then_refused_delete(page, live_server):
    await page.goto(live_server["url"] + "/admin/network-profiles")
    row = page.locator("#profile-fullsteam-ingenico")
    assert PROCESSOR in await row.inner_text()
    await shot(page, "network-profiles")

    await page.click("text=New profile")
    await page.fill("#f-name", "browser-shop")
    await page.fill("#f-destinations", "bank.example.com 443 dns tcp tls\nws.example.com 99999 websocket")
    await page.click("text=Save profile")
    error = page.locator("#e-destinations")
    await error.wait_for()
    assert (await error.inner_text()).startswith("line 2: port:")
    await shot(page, "network-profile-form-error")
    await page.fill("#f-destinations", "bank.example.com 443 dns tcp tls\nws.example.com 3000 tcp websocket")
    await page.click("text=Save profile")
    await page.wait_for_url("**/admin/network-profiles")
    assert "ws.example.com:3000" in await page.locator("#profile-browser-shop").inner_text()

    page.on("dialog", lambda dialog: dialog.accept())
    await row.locator("button.danger").click()
    message = page.locator("#message")
    await message.get_by_text("give them another profile first").wait_for()
    await page.locator("#profile-browser-shop button.danger").click()
    await page.locator("#profile-browser-shop").wait_for(state="detached")


async def test_check_connection_warns_of_a_certificate_expiring_soon(page, live_server, sim):
    await sim.set_endpoint_behaviour(PROCESSOR, 443, "tls_expiring")
    try:
        await page.goto(live_server["url"] + f"/terminals/{TERMINAL}")
        await page.click("#check-btn")
        verdict = page.locator("#check-result section.verdict")
        await verdict.wait_for(timeout=20000)
        assert await verdict.get_attribute("data-verdict") == "connected"
        warning = verdict.locator(".check-warning")
        assert "Certificate expires soon" in await warning.inner_text()
        assert "in 10 days" in await warning.inner_text()
        await shot(page, "check-connection-expiry-warning")
    finally:
        await sim.set_endpoint_behaviour(PROCESSOR, 443, "healthy")
