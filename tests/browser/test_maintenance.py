"""The Maintenance page in a real browser: a field error from the form, a window planned for a
store, the wrench on the overview, and ending it (confirmed) from the page."""

from __future__ import annotations

from datetime import timedelta

import pytest

from app.db import utcnow
from tests.browser.conftest import shot

pytestmark = pytest.mark.browser
STORE = "S-0050"  # a store no other browser test relies on


async def test_plan_a_window_see_the_wrench_and_end_it(page, live_server):
    url = live_server["url"]
    await page.goto(url + "/maintenance")
    await page.fill("#f-title", "Refit")
    await page.fill("#f-store", "S-9999")
    await page.click("text=Plan window")
    await page.wait_for_selector("#e-starts_at")
    assert "when does it start" in await page.inner_text("#e-starts_at")
    assert await page.get_attribute("#f-starts_at", "aria-invalid") == "true"

    now = utcnow()
    await page.fill("#f-starts_at", (now - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M"))
    await page.fill("#f-ends_at", (now + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M"))
    await page.click("text=Plan window")
    await page.wait_for_selector("#e-store")
    assert "no store S-9999" in await page.inner_text("#e-store")
    await page.fill("#f-store", STORE)
    await page.click("text=Plan window")
    await page.wait_for_selector("#windows-table tr.active")
    assert "Refit" in await page.inner_text("#windows-table tr.active")
    await shot(page, "60-maintenance-page")

    await page.goto(url + f"/?q={STORE}")
    wrench = page.locator(".wrench").first
    await wrench.wait_for()
    assert (await wrench.get_attribute("title")).endswith(": Refit")

    await page.goto(url + "/maintenance")
    page.once("dialog", lambda dialog: dialog.accept())
    await page.click("#windows-table tr.active >> text=End now")
    await page.wait_for_selector("#no-windows")
    # The overview's rows are kept for a second (many open dashboards share one read): reload
    # until the ended window's wrench is gone.
    for _ in range(40):
        await page.goto(url + f"/?q={STORE}")
        await page.wait_for_selector("#stores-table tbody tr")
        if await page.locator(".wrench").count() == 0:
            break
        await page.wait_for_timeout(250)
    assert await page.locator(".wrench").count() == 0
