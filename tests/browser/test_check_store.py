"""Check store in a browser: the button on the store page runs every check of the store and
shows the network first, then each terminal's verdict (one refusing here: its own cause)."""

from __future__ import annotations

from sqlalchemy import func, select

from app.inventory.models import Store, Terminal
from tests.browser.conftest import shot

REFUSING = "Move5000-305693263"  # a terminal of S-0001 in the sample fleet


async def test_check_store_from_the_store_page(page, live_server, sim):
    await sim.sim.set_behaviour(REFUSING, "refusing")
    try:
        await page.goto(live_server["url"] + "/stores/S-0001")
        await page.click("#check-store-btn")
        await page.wait_for_selector(".store-check", timeout=20000)
        sections = page.locator(".store-check section.verdict")
        first = sections.first
        assert await first.get_attribute("data-poiid") is None  # the store's network comes first
        assert await first.get_attribute("data-verdict") == "connected"
        terminals = page.locator(".store-check-terminal section.verdict")
        # Every terminal of the store (4 in the sample fleet; other browser tests may add one).
        async with live_server["db"].sessionmaker() as session:
            store_id = await session.scalar(select(Store.id).where(Store.code == "S-0001"))
            count = await session.scalar(select(func.count()).where(Terminal.store_id == store_id))
        assert count >= 4 and await terminals.count() == count
        refused = page.locator(f'.store-check-terminal section.verdict[data-poiid="{REFUSING}"]')
        assert await refused.get_attribute("data-verdict") == "disconnected"
        assert "Connection refused" in await refused.locator(".diagnosis").inner_text()
        await refused.locator("summary").click()  # its checks, step by step, unfold
        assert await refused.locator(".step.fail").count() >= 1
        await shot(page, "check-store")
    finally:
        await sim.sim.set_behaviour(REFUSING, "healthy")
