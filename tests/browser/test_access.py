"""Users, roles, sessions and tokens in a real browser, on a server of its own (users make
every page need a login): an admin creates a support user and makes it a manager, who sees
Check connection and the exports, makes an API token (shown once) and changes its password;
the admin disables it and its open session ends at its next click; the audit log shows it."""

from __future__ import annotations

import pytest

from tests.browser.conftest import shot
from tests.browser.test_roles_docs import PASSWORD, log_in, own_server  # noqa: F401  (fixture)

pytestmark = pytest.mark.browser


async def test_an_admin_manages_a_user_who_logs_in_and_is_disabled(page, browser, own_server):  # noqa: F811
    base = own_server
    await log_in(page, base, "root")
    await page.click("nav[aria-label=Main] >> text=Users")
    await page.fill("#f-username", "sam")
    await page.select_option("#f-role", "support")
    await page.fill("#f-password", "sam's password")
    await page.click("text=Create user")
    await page.wait_for_selector(".banner.ok:has-text('User created.')")
    await page.click("a:has-text('sam')")
    await page.select_option("#f-role", "manager")
    await page.click("text=Change role")
    await page.wait_for_selector(".banner.ok:has-text('Role changed.')")
    user_page = page.url

    context = await browser.new_context(viewport={"width": 1440, "height": 900})
    sam = await context.new_page()
    await sam.goto(base + "/login")
    await sam.fill("#username", "sam")
    await sam.fill("#password", "sam's password")
    await sam.click("button[type=submit]")
    await sam.wait_for_url(base + "/")
    terminal = await sam.evaluate("fetch('/api/v1/terminals?store=S-0001').then(r => r.json())")
    await sam.goto(base + f"/terminals/{terminal['items'][0]['poiid']}")
    assert await sam.locator("#check-btn").count() == 1  # manager includes support
    await sam.goto(base + "/history")
    assert await sam.locator("a[href^='/history/export']").count() > 0
    assert await sam.locator("nav >> text=Users").count() == 0

    await sam.click("text=sam (manager)")  # the account page
    await sam.fill("#token-name", "reports")
    await sam.click("text=Create token")
    token = (await sam.locator("#token-value").inner_text()).strip()
    assert token.startswith("tp_")
    answer = await sam.evaluate(
        "t => fetch('/api/v1/stores', {headers: {Authorization: 'Bearer ' + t}, credentials: 'omit'})"
        ".then(r => r.status)",
        token,
    )
    assert answer == 200
    await sam.fill("#pw-current", "sam's password")
    await sam.fill("#pw-new", "sam's new password")
    await sam.fill("#pw-again", "sam's new password")
    await sam.click("text=Change password")
    await sam.wait_for_selector(".banner.ok:has-text('every other session of yours has ended')")
    await shot(sam, "42-account")

    await page.goto(user_page)
    await page.click("text=Disable user")
    await page.wait_for_selector(".banner.ok:has-text('Disabled')")
    await sam.goto(base + "/")
    assert sam.url.startswith(base + "/login")  # its session ended at once
    await context.close()

    await page.click("nav[aria-label=Main] >> text=Audit log")
    await page.select_option("#a-action", "user disabled")
    await page.click("form[role=search] >> text=Show")
    await page.wait_for_selector("#audit tbody tr:has-text('sam')")
    assert await page.locator("#audit tbody tr").count() == 1
    await shot(page, "43-audit-log")
