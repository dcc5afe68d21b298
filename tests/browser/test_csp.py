"""The Content-Security-Policy in a real browser: every violation Chromium reports (the
`securitypolicyviolation` event, and the console's "Content Security Policy" errors) is
recorded on the main pages, while pressing Check connection, using the history form and Swagger
UI; there is none, and the pages still work under it (htmx, live updates, the check's verdict,
the charts, the API docs)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from app.inventory.models import Terminal
from tests.browser.conftest import shot
from tests.browser.test_flows import LIVE_POIID, SUPPORT_POIID, _row_state, wait_until

pytestmark = pytest.mark.browser

RECORD = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", function (e) {
  window.__csp.push(e.violatedDirective + " " + (e.blockedURI || "inline") + " " + (e.sample || ""));
});
"""

PAGES = [
    "/",
    "/terminals",
    "/stores/S-0001",
    "/maintenance",
    "/incidents",
    "/status",
    "/admin/stores",
    "/admin/terminals",
    "/admin/import",
    "/admin/providers",
    "/admin/agents",
    "/admin/notifications",
    "/admin/users",
    "/admin/audit",
]


@pytest.fixture
async def watched(page):
    """The page, recording policy violations in window.__csp (each document) and the console."""
    console: list[str] = []
    page.on("console", lambda m: console.append(m.text) if "Content Security Policy" in m.text else None)
    await page.add_init_script(RECORD)
    page.csp_console = console
    return page


async def violations(page) -> list[str]:
    return [*await page.evaluate("window.__csp || []"), *page.csp_console]


async def test_no_violation_on_the_main_pages(watched, live_server):
    base = live_server["url"]
    for path in PAGES:
        answer = await watched.goto(base + path)
        assert answer.status == 200, path
        assert "script-src 'self'" in answer.headers["content-security-policy"]
        await watched.wait_for_load_state("load")
        assert await watched.evaluate("typeof htmx") == "object", path  # htmx itself runs
        assert await violations(watched) == [], path


async def test_live_updates_and_check_connection_under_the_policy(watched, live_server, sim):
    base, db = live_server["url"], live_server["db"]
    # A terminal that stops answering turns down in the list without a reload (pushed or polled).
    await watched.goto(base + "/terminals?store=S-0001&sort=poiid")
    async with db.sessionmaker() as session:
        tid = await session.scalar(select(Terminal.id).where(Terminal.poiid == LIVE_POIID))
    await sim.sim.set_behaviour(LIVE_POIID, "refusing")
    try:
        assert await wait_until(lambda: _row_state(watched, tid, "down"), within=30)
    finally:
        await sim.sim.set_behaviour(LIVE_POIID, "healthy")
    # Up again before going on: the other browser tests share this fleet.
    assert await wait_until(lambda: _row_state(watched, tid, "up"), within=30)

    await watched.goto(f"{base}/terminals/{SUPPORT_POIID}")
    await watched.click("#check-btn")
    await watched.wait_for_selector(".verdict h3", timeout=15000)
    assert "Terminal is connected" in await watched.locator(".verdict h3").inner_text()
    await watched.wait_for_selector("#sec-checks .note:has-text('manual')")
    # Latency chart: its y labels are placed by app.css alone (0 at the bottom, the top above).
    if await watched.locator(".chart-y span").count() == 3:
        labels = await watched.locator(".chart-y span").all()
        tops = [await s.evaluate("e => e.getBoundingClientRect().top") for s in labels]
        assert tops[0] > tops[1] > tops[2]
    await shot(watched, "70-csp-check-connection")
    assert await violations(watched) == []


async def test_history_and_the_api_docs_under_the_policy(watched, live_server):
    base = live_server["url"]
    await watched.goto(base + "/history")
    await watched.wait_for_selector("#results .hist-figures")
    await watched.select_option("#h-period", "7d")
    await watched.click("#history-form button[type=submit]")
    await watched.wait_for_selector("#results svg.hist-bars rect")
    # A bad date: the 422 answer (the form with its error) is swapped in, as before. (From a
    # fresh page: a second Show right after a swap sends nothing in this test, before this
    # change too; not looked into.)
    await watched.goto(base + "/history")
    await watched.wait_for_selector("#results .hist-figures")
    await watched.select_option("#h-period", "custom")
    await watched.fill("#h-from", "2026-02-10")
    await watched.fill("#h-to", "2026-02-01")
    await watched.click("#history-form button[type=submit]")
    await watched.wait_for_selector("#history-form [aria-invalid=true]")
    assert await violations(watched) == []

    await watched.goto(base + "/docs")
    await watched.wait_for_selector(".swagger-ui .opblock", timeout=30000)
    await watched.locator(".swagger-ui .opblock-summary").first.click()  # an operation unfolds
    await watched.wait_for_selector(".swagger-ui .opblock-body")
    await watched.locator(".swagger-ui .try-out__btn").first.click()
    await watched.locator(".swagger-ui section.models h4").first.click()  # the schemas
    await watched.wait_for_timeout(500)
    await shot(watched, "71-csp-docs", full_page=False)
    assert await violations(watched) == []


async def test_the_recorder_sees_a_violation(watched, live_server):
    await watched.goto(live_server["url"] + "/")
    await watched.evaluate("document.body.insertAdjacentHTML('beforeend', '<i style=\"color: red\"></i>')")
    assert await wait_until(lambda: watched.evaluate("window.__csp.length > 0"), within=10)
    assert "style-src" in (await violations(watched))[0]
