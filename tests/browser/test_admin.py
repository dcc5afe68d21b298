"""Admin pages in a real browser: CSV import with preview, and inline form validation."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from app.inventory.models import Store, Terminal
from tests.browser.conftest import shot

pytestmark = pytest.mark.browser

STORES = (
    "code;name;region;timezone;network_profile\r\nS-0900;Leeds Trinity;North;Europe/London;paynt-local\r\n"
)
TERMINALS = (
    "store_code;poiid;model;serial;label;provider;integration;lan_host;lan_port;local_api;mac;cloud_enabled\r\n"
    "S-0900;A920\u2011900001;A920;900001;Till 1;paynt;local;127.9.0.1;8080;paynt_epos;"
    "02:00:00:09:00:01;no\r\n"
)


async def count(db, model) -> int:
    async with db.sessionmaker() as session:
        return await session.scalar(select(func.count()).select_from(model))


async def test_import_bad_file_then_preview_and_import(page, live_server, tmp_path):
    base, db = live_server["url"], live_server["db"]
    stores_before, terminals_before = await count(db, Store), await count(db, Terminal)
    bad = tmp_path / "terminals.csv"
    bad.write_text("store_code,poiid,integration,lan_port\nS-0001,NEW-1,rocket,\nS-9999,NEW-2,local,70000\n")
    await page.goto(base + "/admin/import")
    await page.set_input_files("#files", str(bad))
    await page.click("text=Preview import")
    await page.wait_for_selector("text=Nothing was imported")
    rows = await page.locator("#result tbody tr").all_inner_texts()
    cells = [r.split("\t") for r in rows]
    assert ["terminals.csv", "2", "integration"] in [c[:3] for c in cells]
    assert ["terminals.csv", "3", "lan_port"] in [c[:3] for c in cells]
    assert ["terminals.csv", "3", "store_code"] in [c[:3] for c in cells]
    await shot(page, "20-import-errors")

    stores, terminals = tmp_path / "stores.csv", tmp_path / "terminals.csv"
    stores.write_text(STORES, newline="")
    terminals.write_text(TERMINALS, newline="")
    await page.set_input_files("#files", [str(stores), str(terminals)])
    await page.click("text=Preview import")
    await page.wait_for_selector("text=nothing has been written yet")
    assert (await count(db, Store), await count(db, Terminal)) == (stores_before, terminals_before)
    await shot(page, "21-import-preview")
    await page.click("text=Import now")
    await page.wait_for_selector("text=Imported")
    assert (await count(db, Store), await count(db, Terminal)) == (stores_before + 1, terminals_before + 1)

    await page.goto(base + "/admin/terminals?q=900001")
    rows = await page.locator("#results tbody tr").all_inner_texts()
    assert len(rows) == 1 and rows[0].startswith("A920-900001")  # the pasted U+2011 became a hyphen


async def test_form_errors_show_next_to_their_fields(page, live_server):
    await page.goto(live_server["url"] + "/admin/terminals/new")
    await page.fill("#f-poiid", "P400Plus 1")
    await page.fill("#f-store_code", "S-0001")
    await page.select_option("#f-integration", "local")
    await page.select_option("#f-local_api", "tcp")
    await page.fill("#f-lan_port", "70000")
    await page.click("text=Save terminal")
    await page.wait_for_selector("#e-poiid")
    assert "contain spaces" in await page.inner_text("#e-poiid")
    assert "65535" in await page.inner_text("#e-lan_port")
    assert "required when local_api is tcp" in await page.inner_text("#e-lan_host")
    assert await page.get_attribute("#f-lan_port", "aria-invalid") == "true"
    await shot(page, "22-terminal-form-errors")

    await page.fill("#f-poiid", "P400Plus-TP77")
    await page.fill("#f-lan_host", "127.1.1.77")
    await page.fill("#f-lan_port", "2000")
    await page.click("text=Save terminal")
    await page.wait_for_url("**/admin/terminals?q=P400Plus-TP77")
    rows = await page.locator("#results tbody tr").all_inner_texts()
    assert len(rows) == 1 and rows[0].startswith("P400Plus-TP77")
