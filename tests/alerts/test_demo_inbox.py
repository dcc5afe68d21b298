"""The demo's channel: Apprise posts to the demo's own webhook, and the "Notifications sent"
page lists what arrived (a real server on loopback, as in `termpulse demo`)."""

from __future__ import annotations

import asyncio
import socket

import httpx
import uvicorn

from app.alerts.runner import AlertRunner
from app.demo import _demo_channel
from app.main import create_app
from app.simulator.inbox import INBOX_PATH, DemoInbox
from app.simulator.inbox import router as inbox_router
from tests.alerts.conftest import alert_settings, failing_store
from tests.html import dom, texts
from tests.monitoring.helpers import wait_for


async def test_demo_notifications_arrive_on_the_notifications_sent_page(db):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = alert_settings(db, base_url=f"http://127.0.0.1:{port}")
    app = create_app(settings, database=db, run_worker=False)
    app.state.demo_inbox = DemoInbox()
    app.include_router(inbox_router)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False)
    )
    serving = asyncio.create_task(server.serve())
    try:
        await wait_for(lambda: _started(server), within=20)
        await _demo_channel(db, settings, f"json://127.0.0.1:{port}{INBOX_PATH}")
        await failing_store(db, "S-DEMO", terminals=3, ago_s=120)
        runner = AlertRunner(settings, db)

        async def arrived() -> bool:
            await runner.evaluate()
            await runner.deliver()
            return bool(app.state.demo_inbox.items)

        await wait_for(arrived, within=30)
        async with httpx.AsyncClient() as http:
            page = await http.get(f"http://127.0.0.1:{port}/demo/notifications")
        assert page.status_code == 200
        titles = texts(dom(page), ".inbox strong")
        assert titles == ["[TermPulse] S-DEMO Shop S-DEMO: cannot take cards (all 3 terminals down)"]
        assert f"http://127.0.0.1:{port}/stores/S-DEMO" in page.text
    finally:
        server.should_exit = True
        await serving


async def _started(server) -> bool:
    return server.started


async def test_the_incidents_page_points_to_the_demo_inbox_in_the_demo_only(db, client):
    from tests.html import one

    page = await client.get("/incidents")
    assert "/demo/notifications" not in page.text
    client._transport.app.state.demo_inbox = DemoInbox()
    page = await client.get("/incidents")
    assert one(dom(page), 'a[href="/demo/notifications"]') is not None


async def test_the_demo_inbox_takes_its_channel_posts_once_users_exist(db):
    """Someone created a user in the demo: the demo's own channel still delivers (the inbox
    is public), while the page that lists what arrived needs a login like every page."""
    from tests.test_auth import add_user

    settings = alert_settings(db, base_url="http://testserver")
    app = create_app(settings, database=db, run_worker=False)
    app.state.demo_inbox = DemoInbox()
    app.include_router(inbox_router)
    await add_user(db, "root", "admin")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as http:
        sent = await http.post(
            INBOX_PATH, json={"title": "[TermPulse] S-1 down", "body": "x", "type": "failure"}
        )
        assert sent.status_code == 204
        assert [item.title for item in app.state.demo_inbox.items] == ["[TermPulse] S-1 down"]
        page = await http.get("/demo/notifications")
        assert page.status_code == 303 and page.headers["location"].startswith("/login")
