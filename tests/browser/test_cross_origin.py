"""A page on another port of the same host (same site, another origin) cannot make changes
through the browser's TermPulse session: its form post is refused before any handler runs."""

from __future__ import annotations

import asyncio

from sqlalchemy import select

from app.inventory.models import Store
from tests.monitoring.helpers import wait_for


async def _serve_once_per_request(html: str) -> tuple[asyncio.Server, int]:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        body = html.encode()
        head = f"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {len(body)}\r\n"
        writer.write(head.encode() + b"Connection: close\r\n\r\n" + body)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def test_a_form_posted_from_another_port_is_refused(page, live_server):
    target = live_server["url"] + "/admin/stores/new"
    attacker, port = await _serve_once_per_request(
        f"""<form id="f" method="post" action="{target}">
        <input name="code" value="S-EVIL"><input name="name" value="Planted by another page">
        <input name="timezone" value="UTC"></form><script>document.getElementById('f').submit()</script>"""
    )
    try:
        response_seen = asyncio.get_running_loop().create_future()
        page.on(
            "response",
            lambda r: r.url == target and not response_seen.done() and response_seen.set_result(r.status),
        )
        await page.goto(f"http://127.0.0.1:{port}/")
        assert await asyncio.wait_for(response_seen, 30) == 403
        await page.wait_for_load_state()
        assert "another origin" in await page.inner_text("body")
    finally:
        attacker.close()
    async with live_server["db"].sessionmaker() as s:
        assert (await s.scalar(select(Store.id).where(Store.code == "S-EVIL"))) is None

    # The same form on TermPulse's own page goes through (same origin).
    await page.goto(live_server["url"] + "/admin/stores/new")
    await page.fill("#f-code", "S-OWN1")
    await page.fill("#f-name", "Made here")
    await page.click("text=Save store")

    async def made() -> bool:
        async with live_server["db"].sessionmaker() as s:
            return (await s.scalar(select(Store.id).where(Store.code == "S-OWN1"))) is not None

    await wait_for(made, within=30)
    # The save leads away from the form; wait until that page has loaded (closing the browser
    # context in the middle of that navigation left Chromium never answering the close).
    await page.wait_for_url(lambda url: "/admin/stores/new" not in url)
    await page.wait_for_load_state()
