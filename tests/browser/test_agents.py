"""The Agents page in a real browser: enrol an agent through the form (htmx), see the token
box with its command line and copy button, then revoke it behind a confirmation."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from app.inventory.models import Agent
from tests.browser.conftest import shot

pytestmark = pytest.mark.browser

STORE = "S-0040"  # a store no other browser test looks at; its checks go back to central at the end


async def test_enrol_shows_the_token_box_then_revoke(page, live_server):
    base, db = live_server["url"], live_server["db"]
    await page.goto(base + "/admin/agents")
    await page.fill("#f-name", "Browser test agent")
    await page.fill("#f-stores", f"{STORE}, S-9999")
    await page.click("text=Enrol agent")
    await page.wait_for_selector("#e-stores")
    assert "S-9999" in await page.inner_text("#e-stores")
    assert await page.input_value("#f-name") == "Browser test agent"  # kept for the second try

    await page.fill("#f-stores", STORE)
    await page.click("text=Enrol agent")
    await page.wait_for_selector("#token-box")
    token = (await page.inner_text("#token-value")).strip()
    assert token.startswith("tpa_")
    assert f"--server {base} --insecure-http --token {token}" in await page.inner_text("#token-command")
    assert "will not be shown again" in await page.inner_text("#token-box")
    await page.click("button[data-copy='#token-value']")
    status = page.locator("#token-box .copied").first
    await status.wait_for()
    assert (await status.inner_text()).strip()  # copied, or how to copy it by hand
    row = page.locator("#agents-table tr[data-agent='Browser test agent']")
    assert STORE in await row.inner_text()
    await shot(page, "30-agent-enrolled")

    await page.reload()  # shown once
    assert await page.locator("#token-box").count() == 0
    assert token not in await page.content()

    page.once("dialog", lambda dialog: dialog.accept())
    await row.locator("button", has_text="Revoke").click()
    await page.wait_for_selector(".banner.ok")
    assert f"{STORE} is checked centrally again" in await page.inner_text(".banner.ok")
    async with db.sessionmaker() as session:
        agent = await session.scalar(select(Agent).where(Agent.name == "Browser test agent"))
    assert agent is not None and agent.revoked_at is not None
