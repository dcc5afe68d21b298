"""Roles and /docs in a real browser, on a server of their own (users make every page need a
login, which the session's shared live server must not): a viewer logs in, sees no admin menu
or Edit link, and an admin page refuses it with a page; /docs renders with every request
answered by this server (anything else is blocked, as on a machine without internet)."""

from __future__ import annotations

import asyncio
import socket
from urllib.parse import urlsplit

import pytest

from app.auth.models import User
from app.auth.passwords import hash_password
from app.db import Database
from app.inventory.csvimport import import_fleet
from app.migrate import migrate
from tests.browser.conftest import fleet_files, shot

pytestmark = pytest.mark.browser
PASSWORD = "correct horse battery"


@pytest.fixture
async def own_server(tmp_path):
    import uvicorn

    from app.config import Settings
    from app.main import create_app

    url = f"sqlite+aiosqlite:///{tmp_path / 'roles.db'}"
    database = Database(url)
    await migrate(database.engine)
    async with database.sessionmaker() as session:
        await import_fleet(session, fleet_files())
        for name, role in (("vera", "viewer"), ("root", "admin")):
            session.add(User(username=name, role=role, password_hash=hash_password(PASSWORD)))
        await session.commit()
    settings = Settings(database_url=url, secret_key="browser-test-roles", allowed_networks=["127.0.0.0/8"])
    application = create_app(settings, database=database, run_worker=False)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(application, log_config=None, access_log=False, lifespan="on"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    for _ in range(600):
        if server.started:
            break
        await asyncio.sleep(0.05)
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    await asyncio.wait_for(task, 15)
    sock.close()
    await database.dispose()


async def log_in(page, base: str, name: str) -> None:
    await page.goto(base + "/login")
    await page.fill("#username", name)
    await page.fill("#password", PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_url(base + "/")


async def admin_links(page) -> list[str]:
    hrefs = await page.locator("a[href]").evaluate_all("els => els.map(e => e.getAttribute('href'))")
    return [h for h in hrefs if h.startswith("/admin")]


async def test_a_viewer_sees_no_admin_links_and_a_refusal_page(page, own_server):
    base = own_server
    await log_in(page, base, "vera")
    assert await page.locator("nav[aria-label=Main] >> text=Stores").count() == 1
    terminal = await page.evaluate("fetch('/api/v1/terminals?store=S-0001').then(r => r.json())")
    poiid = terminal["items"][0]["poiid"]
    for path in ("/", "/terminals", "/stores/S-0001", f"/terminals/{poiid}", "/history"):
        await page.goto(base + path)
        assert await admin_links(page) == [], path
        assert await page.get_by_text("Edit terminal").count() == 0
        assert await page.get_by_text("Edit store").count() == 0
    response = await page.goto(base + "/admin/stores")
    assert response.status == 403 and response.headers["content-type"].startswith("text/html")
    await page.wait_for_selector("h1:has-text('Not for your role')")
    assert "vera (viewer)" in await page.locator(".banner.error").inner_text()
    await shot(page, "40-refused-viewer")

    await page.context.clear_cookies()
    await log_in(page, base, "root")
    await page.goto(base + f"/terminals/{poiid}")
    assert "/admin/stores" in await admin_links(page)
    assert await page.get_by_text("Edit terminal").count() == 1


async def test_docs_render_offline(page, own_server):
    """Every request of /docs goes to this server; a blocked outside request would leave it blank."""
    base = own_server
    outside: list[str] = []

    async def only_loopback(route):
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            await route.continue_()
        else:
            outside.append(route.request.url)
            await route.abort()

    await page.route("**/*", only_loopback)
    await log_in(page, base, "vera")
    await page.goto(base + "/docs")
    await page.wait_for_selector(".swagger-ui .info .title:has-text('TermPulse')")
    await page.wait_for_selector('.opblock-summary-path[data-path="/api/v1/terminals"]')
    assert outside == []
    await shot(page, "41-api-docs-offline")
