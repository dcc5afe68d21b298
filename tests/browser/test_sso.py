"""SSO in a real browser: "Sign in with SSO" on the login page, the simulated provider's page
(app.simulator.oidc, on loopback) to pick a user, and back to TermPulse logged in with the role
the user's groups map to. Its own server (SSO settings) over a fresh SQLite database."""

import asyncio
import socket

import pytest
import uvicorn

from app.auth.models import User
from app.config import Settings
from app.db import Database
from app.main import create_app
from app.migrate import migrate
from app.simulator.oidc import DEFAULT_ROLE_MAP, OidcSim
from tests.browser.conftest import shot


@pytest.fixture
async def sso_server(tmp_path):
    provider = await OidcSim().start()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'termpulse.db'}")
    await migrate(database.engine)
    async with database.sessionmaker() as session:
        session.add(User(username="root", role="admin", password_hash=""))  # out of the open mode
        await session.commit()
    settings = Settings(
        database_url=database.url,
        secret_key="browser-test-sso",
        allowed_networks=["127.0.0.0/8"],  # the provider is on loopback
        base_url=url,
        **{**provider.settings(), "oidc_role_map": DEFAULT_ROLE_MAP},
    )
    app = create_app(settings, database=database)
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="on"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        assert not task.done(), "uvicorn did not start"
        await asyncio.sleep(0.05)
    yield url
    server.should_exit = True
    await asyncio.wait_for(task, 15)
    sock.close()
    await database.dispose()
    await provider.stop()


async def test_sign_in_with_sso(page, sso_server):
    await page.goto(f"{sso_server}/stores")
    assert page.url.startswith(f"{sso_server}/login")
    await shot(page, "login-sso")
    await page.click("text=Sign in with SSO")
    await page.wait_for_selector("text=Simulated identity provider")
    await page.click("button:has-text('mia (tp-managers)')")
    await page.wait_for_selector("text=mia (manager)")
    assert page.url == f"{sso_server}/stores"


async def test_no_mapped_group_gets_a_page_saying_so(page, sso_server):
    await page.goto(f"{sso_server}/login")
    await page.click("text=Sign in with SSO")
    await page.click("button:has-text('nobody (marketing)')")
    banner = page.locator(".banner.error")
    await banner.wait_for()
    assert "none of your groups (marketing)" in await banner.inner_text()
    await shot(page, "login-sso-refused")
