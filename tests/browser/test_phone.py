"""A phone (390 px wide): the overview, the terminals list and a terminal page fit the screen, no
sideways scrolling; the terminals list keeps the Status column (as a card line)."""

from __future__ import annotations

import pytest

from tests.browser.conftest import shot

pytestmark = pytest.mark.browser
PHONE = {"width": 390, "height": 844}

WIDER_THAN_SCREEN = """() => {
  const root = document.documentElement;
  const name = e => e.tagName.toLowerCase() + (e.className ? '.' + String(e.className).split(' ')[0] : '');
  const wide = [...document.querySelectorAll('body *')]
    .filter(e => e.getBoundingClientRect().right > root.clientWidth + 1)
    .slice(0, 8).map(e => name(e) + ' ' + Math.round(e.getBoundingClientRect().right));
  return {scroll: root.scrollWidth, client: root.clientWidth, wide};  // wide: what to look at when it fails
}"""


@pytest.fixture
async def phone(browser):
    context = await browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True)
    p = await context.new_page()
    errors: list[str] = []
    p.on("pageerror", lambda exc: errors.append(str(exc)))
    yield p
    await context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


async def fits(page) -> None:
    got = await page.evaluate(WIDER_THAN_SCREEN)
    assert got["scroll"] <= got["client"], got


async def test_phone_pages_have_no_sideways_scroll(phone, live_server):
    base = live_server["url"]
    await phone.goto(base + "/")
    await phone.wait_for_selector("#stores-table tbody tr")
    await fits(phone)
    await shot(phone, "50-phone-overview", full_page=False)

    await phone.goto(base + "/terminals")
    await phone.wait_for_selector("#results tbody tr")
    await fits(phone)
    status = phone.locator("#results tbody tr").first.locator(".status-cell")
    assert await status.is_visible()
    box = await status.bounding_box()
    assert box and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]  # on screen, not scrolled off
    await shot(phone, "51-phone-terminals", full_page=False)

    poiid = await phone.locator("#results tbody tr").first.locator("a").first.inner_text()
    await phone.goto(base + f"/terminals/{poiid}")
    await phone.wait_for_selector("h1")
    await fits(phone)
    await shot(phone, "52-phone-terminal", full_page=False)

    await phone.goto(base + "/stores/S-0001")
    await phone.wait_for_selector("h1")
    await fits(phone)
    await phone.goto(base + "/history?period=7d&by=store")
    await phone.wait_for_selector("#history")
    await fits(phone)
