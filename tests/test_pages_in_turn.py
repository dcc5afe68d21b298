"""Pages in turn (app.web.limits.PagesInTurn): at most N page requests at once per process, the
others served in the order they came; streams, the API, posts and exports never wait behind
them. A real uvicorn on loopback, a real HTTP client."""

from __future__ import annotations

import asyncio
import socket

import httpx
import pytest
import uvicorn
from starlette.types import Receive, Scope, Send

from app.web.limits import PagesInTurn
from tests.monitoring.helpers import wait_for


async def _arrived(pages: SlowPages, turns: PagesInTurn, n: int) -> bool:
    return len(pages.inside) + turns.waiting >= n


class SlowPages:
    """An app whose pages wait until the test lets them finish, and count who is inside."""

    def __init__(self) -> None:
        self.inside: list[str] = []
        self.most = 0
        self.started: list[str] = []
        self.release = asyncio.Event()
        self.arrived = asyncio.Condition()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        name = scope["path"] + ("?" + scope["query_string"].decode() if scope["query_string"] else "")
        async with self.arrived:
            self.inside.append(name)
            self.started.append(name)
            self.most = max(self.most, len(self.inside))
            self.arrived.notify_all()
        await self.release.wait()
        self.inside.remove(name)
        headers = [(b"content-type", b"text/plain")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": name.encode()})

    async def wait_for(self, predicate) -> None:
        async with asyncio.timeout(20), self.arrived:
            await self.arrived.wait_for(predicate)


def _started(server: uvicorn.Server):
    async def started() -> bool:
        return server.started

    return started


async def _waiting(turns: PagesInTurn) -> bool:
    return turns.waiting == 1


@pytest.fixture
async def served():
    pages = SlowPages()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    turns = PagesInTurn(pages, limit=2)
    config = uvicorn.Config(turns, log_config=None, access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    await wait_for(_started(server), within=20)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{sock.getsockname()[1]}", timeout=30) as http:
        yield pages, http, turns
    pages.release.set()
    server.should_exit = True
    await asyncio.wait_for(task, 15)
    sock.close()


async def test_pages_are_served_a_few_at_once_in_the_order_they_came(served):
    pages, http, turns = served
    asked = []
    for i in range(6):  # each sent once the one before is in or waiting: the order is known
        asked.append(asyncio.create_task(http.get(f"/terminals?page={i}")))
        await wait_for(lambda i=i: _arrived(pages, turns, i + 1), within=20)
    assert pages.inside == ["/terminals?page=0", "/terminals?page=1"]
    pages.release.set()
    answers = await asyncio.gather(*asked)
    assert [r.text for r in answers] == [f"/terminals?page={i}" for i in range(6)]
    assert pages.most == 2
    assert pages.started == [f"/terminals?page={i}" for i in range(6)]


async def test_streams_the_api_posts_and_exports_never_wait_behind_pages(served):
    pages, http, turns = served
    busy = [asyncio.create_task(http.get(f"/stores/S-{i}")) for i in range(2)]
    await pages.wait_for(lambda: len(pages.inside) == 2)
    others = ["/live/events?view=overview", "/api/v1/terminals", "/history/export.csv", "/healthz"]
    passing = [asyncio.create_task(http.get(p)) for p in others]
    passing.append(asyncio.create_task(http.post("/terminals/P-1/check")))
    # They all get in while both turns are taken, and a page behind them does not.
    await pages.wait_for(lambda: len(pages.inside) == 7)
    queued = asyncio.create_task(http.get("/"))
    await wait_for(lambda: _waiting(turns), within=20)
    assert "/" not in pages.inside and pages.most == 7
    pages.release.set()
    for r in await asyncio.gather(*busy, *passing, queued):
        assert r.status_code == 200
