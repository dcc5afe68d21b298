"""The History page in a real browser: the download takes the form as it is (rows per, period)
without pressing Show first; the table shows stores when asked."""

from __future__ import annotations

import csv
import io

import pytest
from anyio import Path

from tests.browser.conftest import shot

pytestmark = pytest.mark.browser


async def read_csv(download) -> list[dict]:
    text = await Path(await download.path()).read_text(encoding="utf-8")
    return list(csv.DictReader(io.StringIO(text)))


async def test_download_takes_the_form_without_show(page, live_server):
    base = live_server["url"]
    await page.goto(base + "/history")  # the fleet's last 24 h, rows per region
    await page.wait_for_selector("#results .hist-figures")
    await page.select_option("#h-by", "store")  # changed, Show not pressed
    await page.select_option("#h-period", "this_month")
    async with page.expect_download() as info:
        await page.click(".hist-downloads a:has-text('Download CSV')")
    rows = await read_csv(await info.value)
    assert rows and "Store" in rows[0] and "Monitored %" in rows[0] and "Region" in rows[0]
    assert len({r["Store"] for r in rows}) == len(rows)  # one row per store
    async with page.expect_download() as info:
        await page.click(".hist-downloads a:has-text('Per-day CSV')")
    per_day = await read_csv(await info.value)
    assert per_day and "Date" in per_day[0] and "From" not in per_day[0]

    await page.click("#history-form button[type=submit]")  # Show: the table follows "Rows per"
    await page.wait_for_selector("#results h3:has-text('Stores')")
    assert await page.locator("#results table.grid a[href^='/history?scope=store&']").count() == len(rows)
    await shot(page, "60-history-stores", full_page=False)
