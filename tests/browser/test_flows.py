"""The dashboard in a real browser: support flow, live flow, filters and pagination."""

from __future__ import annotations

import asyncio
import re
import time

import pytest
from playwright.async_api import expect
from sqlalchemy import select

from app.inventory.models import Terminal
from tests.browser.conftest import shot

pytestmark = pytest.mark.browser

# S-0001 (fullsteam-ingenico profile): LAN terminals on 127.1.1.x:2000, plain TCP.
SUPPORT_POIID = "Move5000-203097992"
LIVE_POIID = "Move5000-305693263"


async def wait_until(predicate, within: float = 20.0, step: float = 0.25):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await predicate():
            return True
        await asyncio.sleep(step)
    return False


async def test_support_flow_search_open_check(page, live_server, sim):
    base = live_server["url"]
    await page.goto(base + "/")
    await page.wait_for_selector("#summary")
    await shot(page, "01-overview")

    # Search the POIID from the top bar, as an agent with a caller on the line would: an exact
    # POIID opens the terminal directly.
    await page.fill("#quick-q", SUPPORT_POIID.replace("-", "\u2011"))  # pasted with a non-breaking hyphen
    await page.press("#quick-q", "Enter")
    await page.wait_for_url(f"**/terminals/{SUPPORT_POIID}")
    assert await page.locator("h2", has_text="About this terminal").count() == 1
    assert await page.locator("#filters").count() == 0  # a whole page, not a fragment in the list

    # Healthy terminal: connected, with every step and its timing.
    await page.click("#check-btn")
    verdict = page.locator(".verdict h3")
    await verdict.wait_for(timeout=15000)
    assert "Terminal is connected" in await verdict.inner_text()
    assert (
        await page.locator(".check-group").count() >= 3
    )  # TCP to the terminal, DNS and TCP of the store's network
    assert "ms" in await page.locator(".step-ms").first.inner_text()
    await shot(page, "03-check-connected")

    # The store calls back: the terminal refuses connections now.
    await sim.sim.set_behaviour(SUPPORT_POIID, "refusing")
    await page.click("#check-btn")
    await page.wait_for_selector(".verdict[data-verdict=disconnected]", timeout=15000)
    text = await page.locator(".verdict").inner_text()
    assert "Terminal is disconnected" in text
    assert "Connection refused" in text and "What to do" in text
    report = await page.locator("#report-text").inner_text()
    assert SUPPORT_POIID in report and "FAILED" in report and "What to do:" in report
    await page.click("button[data-copy]")
    # (no wait_for_function: its string runs as eval, which the Content-Security-Policy refuses)
    await expect(page.locator(".copied")).not_to_have_text("")
    # The badges at the top followed the check (the state machine applied the manual result).
    await page.wait_for_selector(
        "#tstatus [data-state=down], #tstatus [data-state=unknown], #tstatus [data-state=up]"
    )
    assert await page.locator("#sec-checks .note", has_text="manual").count() >= 1  # recent checks refreshed
    await shot(page, "04-check-disconnected")
    await sim.sim.set_behaviour(SUPPORT_POIID, "healthy")


async def test_live_flow_row_turns_down_without_reload(page, live_server, sim):
    base, db = live_server["url"], live_server["db"]
    await page.goto(base + "/terminals?store=S-0001&sort=poiid")
    async with db.sessionmaker() as s:
        tid = await s.scalar(select(Terminal.id).where(Terminal.poiid == LIVE_POIID))
    row = page.locator(f"#t-{tid}")
    await row.wait_for()
    # The worker checks S-0001's monitors every 2 s: wait for the first verdict.
    assert await wait_until(lambda: _row_state(page, tid, "up"), within=30), await row.inner_html()
    await page.evaluate("window.__noReload = 1")

    await sim.sim.set_behaviour(LIVE_POIID, "refusing")
    t0 = time.monotonic()
    assert await wait_until(lambda: _row_state(page, tid, "down"), within=30), await row.inner_html()
    elapsed = time.monotonic() - t0
    assert await page.evaluate("window.__noReload") == 1, "the page was reloaded"
    assert "Down" in await row.locator(".status-cell").inner_text()
    await shot(page, "05-live-row-down")
    print(f"row turned down {elapsed:.1f} s after the simulator refused connections")

    # Hidden tab: polling pauses (no request while hidden). Counted from one poll period (2 s)
    # after hiding, so a poll sent just before it (and reported late) is not taken for one.
    requests: list[str] = []
    await page.evaluate("""() => {
        Object.defineProperty(document, 'hidden', {configurable: true, get: () => true});
        document.dispatchEvent(new Event('visibilitychange')); }""")
    await asyncio.sleep(2.5)
    page.on("request", lambda r: requests.append(r.url) if "/terminals/live" in r.url else None)
    await asyncio.sleep(5)
    assert requests == [], requests
    await page.evaluate("""() => {
        Object.defineProperty(document, 'hidden', {configurable: true, get: () => false});
        document.dispatchEvent(new Event('visibilitychange')); }""")
    assert await wait_until(lambda: _async(bool(requests)), within=20)
    await sim.sim.set_behaviour(LIVE_POIID, "healthy")


async def _async(value):
    return value


async def _row_state(page, tid: int, state: str) -> bool:
    return await page.locator(f"#t-{tid} .status-cell [data-state={state}]").count() == 1


async def test_overview_goes_live_when_a_store_goes_down(page, live_server, sim):
    base = live_server["url"]
    await page.goto(base + "/")
    await page.wait_for_selector("#summary")
    await page.evaluate("window.__noReload = 1")
    poiid = "Lane3000-719343405"  # S-0001, Till 3
    await sim.sim.set_behaviour(poiid, "refusing")

    async def store_down():
        return (
            await page.locator("#stores-body tr").first.locator("th").inner_text() != ""
            and "S-0001" in await page.locator("#stores-body tr").first.inner_text()
            and await page.locator("#stores-body tr").first.get_attribute("data-store-status")
            in ("degraded", "cannot_pay")
        )

    assert await wait_until(store_down, within=30)
    assert await page.evaluate("window.__noReload") == 1
    await shot(page, "02-overview-live-down")
    await sim.sim.set_behaviour(poiid, "healthy")


async def test_filters_pagination_and_url_round_trip(page, live_server):
    base = live_server["url"]
    await page.goto(base + "/terminals")
    await page.select_option("#f-per", "25")
    await page.wait_for_url(re.compile(r"per=25"))
    await page.select_option("#f-provider", "ingenico")
    await page.wait_for_url(re.compile(r"provider=ingenico"))
    # Sort by POIID, then descending.
    await page.click("th a.sort >> text=POIID")
    await page.wait_for_url(re.compile(r"sort=poiid"))
    await page.click("th a.sort >> text=POIID")
    await page.wait_for_url(re.compile(r"dir=desc"))
    first_desc = await page.locator("#terminals-body tr td.mono a").first.inner_text()
    # Next page keeps filters and sort.
    await page.click("nav.pager a[rel=next]")
    await page.wait_for_url(re.compile(r"page=2"))
    url = page.url
    for part in ("per=25", "provider=ingenico", "sort=poiid", "dir=desc", "page=2"):
        assert part in url, url
    page2 = [await a.inner_text() for a in await page.locator("#terminals-body tr td.mono a").all()]
    assert page2 and page2 == sorted(page2, reverse=True) and page2[0] < first_desc
    # A filter change keeps the sort (hidden inputs follow the table) and goes back to page 1.
    await page.select_option("#f-status", "unknown")
    await page.wait_for_url(re.compile(r"status=unknown"))
    assert "sort=poiid" in page.url and "page=" not in page.url
    await page.select_option("#f-status", "")
    await page.wait_for_url(lambda u: "status=" not in u)
    await page.click("nav.pager a[rel=next]")
    await page.wait_for_url(re.compile(r"page=2"))
    url = page.url
    await shot(page, "06-terminals-filtered-page2")

    # The URL round-trips: a fresh tab on it shows the same form values and the same rows.
    fresh = await page.context.new_page()
    await fresh.goto(url)
    assert await fresh.locator("#f-provider").input_value() == "ingenico"
    assert await fresh.locator("#f-per").input_value() == "25"
    same = [await a.inner_text() for a in await fresh.locator("#terminals-body tr td.mono a").all()]
    assert same == page2
    assert await fresh.locator("th[aria-sort=descending]").count() == 1
    # Back button returns to page 1 of the same view.
    await page.go_back()
    await page.wait_for_url(lambda u: "page=2" not in u)
    await fresh.close()

    # Keyboard: "/" focuses the top bar's search (as it says); the page's own box filters.
    await page.goto(base + "/terminals")
    await page.keyboard.press("/")
    assert await page.evaluate("document.activeElement.id") == "quick-q"
    await page.click("#f-q")
    await page.keyboard.type("S-0002")
    await page.wait_for_url(re.compile(r"q=S-0002"))
    await expect(page.locator("#terminals-body tr[id^=t-]")).to_have_count(4)
    await shot(page, "07-terminals-search")


async def test_screenshots_of_every_page(page, live_server, sim):
    base = live_server["url"]
    await page.goto(base + "/terminals")
    await page.wait_for_selector("#terminals-body")
    await shot(page, "08-terminals", full_page=False)
    await page.goto(base + "/stores/S-0001")
    await page.wait_for_selector("h2 >> text=Network checks")
    await shot(page, "09-store")
    await page.goto(base + f"/terminals/{SUPPORT_POIID}")
    await page.wait_for_selector("#tstatus")
    await shot(page, "10-terminal-detail")
    await page.emulate_media(color_scheme="dark")
    await page.goto(base + "/")
    await shot(page, "11-overview-dark", full_page=False)
    await page.goto(base + f"/terminals/{SUPPORT_POIID}")
    await shot(page, "12-terminal-dark", full_page=False)
