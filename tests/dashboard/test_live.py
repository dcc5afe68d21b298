"""Live updates pushed over Server-Sent Events, on both databases: a real uvicorn on loopback,
httpx streaming clients as the open pages, state changes written by the one writer.

Each page gets the changes of the rows it shows and nothing else; on PostgreSQL the listener
hears again after its connection was killed (pg_terminate_backend)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from datetime import timedelta

import httpx
import pytest
import uvicorn
from sqlalchemy import select, text

from app.dashboard.live import LiveHub
from app.db import Database, utcnow
from app.inventory.models import Monitor, Store, Terminal
from app.monitoring.writer import CheckOutcome, write_outcomes
from app.vocabulary import Outcome, State
from tests.dashboard.fleet import import_sample, seed_states


@pytest.fixture
async def server(db: Database, settings):
    """The app on a free loopback port. On SQLite the writer runs in this process (the test),
    as the embedded checker does in `serve`, so the in-process bus reaches the pages."""
    from app.main import create_app

    await import_sample(db)
    await seed_states(db)
    application = create_app(settings, database=db, run_worker=False)
    if application.state.live is None:
        application.state.live = LiveHub(db, application.state.relay)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(application, log_config=None, access_log=False, lifespan="on")
    uv = uvicorn.Server(config)
    task = asyncio.create_task(uv.serve(sockets=[sock]))
    for _ in range(500):
        if uv.started:
            break
        await asyncio.sleep(0.02)
    yield {"url": f"http://127.0.0.1:{sock.getsockname()[1]}", "hub": application.state.live}
    application.state.live.end_streams()
    uv.should_exit = True
    await asyncio.wait_for(task, 15)
    sock.close()


class Page:
    """An open page's event stream: every event (name, data) it received, in order."""

    def __init__(self, http: httpx.AsyncClient, query: str) -> None:
        self.events: list[tuple[str, str]] = []
        self.changed = asyncio.Condition()
        self.task = asyncio.create_task(self._read(http, query))

    async def _read(self, http: httpx.AsyncClient, query: str) -> None:
        async with http.stream("GET", f"/live/events?{query}") as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            name, data = "message", []
            async for line in r.aiter_lines():
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: "):
                    data.append(line[6:])
                elif line == "":
                    async with self.changed:
                        self.events.append((name, "\n".join(data)))
                        self.changed.notify_all()
                    name, data = "message", []

    async def wait_for(self, predicate) -> None:
        async with asyncio.timeout(20), self.changed:
            await self.changed.wait_for(lambda: predicate(self.updates))

    @property
    def updates(self) -> list[str]:
        return [data for name, data in self.events if name == "update"]

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


async def _ids(db: Database) -> dict[str, dict[str, int]]:
    async with db.sessionmaker() as s:
        stores = dict((await s.execute(select(Store.code, Store.id))).all())
        up = (
            await s.execute(
                select(Terminal.poiid, Terminal.id, Terminal.store_id)
                .where(Terminal.status == State.UP)
                .order_by(Terminal.id)
            )
        ).all()
    return {"stores": stores, "up": {p: i for p, i, _ in up}, "store_of": {p: sid for p, _, sid in up}}


async def take_down(db: Database, terminal_id: int) -> None:
    """Two failed checks of each of the terminal's monitors, through the one writer: down."""
    async with db.sessionmaker() as s:
        monitors = list(await s.scalars(select(Monitor.id).where(Monitor.terminal_id == terminal_id)))
    now = utcnow()
    for n in (2, 1):
        at = now - timedelta(seconds=n)
        await write_outcomes(
            db, [CheckOutcome(m, Outcome.FAIL, at, diagnosis="tcp_refused") for m in monitors]
        )


async def test_a_change_reaches_the_pages_that_show_its_row_only(db, server):
    ids = await _ids(db)
    s1 = ids["stores"]["S-0001"]
    in_s1 = [p for p, sid in ids["store_of"].items() if sid == s1]
    elsewhere = [p for p, sid in ids["store_of"].items() if sid != s1]
    first, third, other = ids["up"][in_s1[0]], ids["up"][in_s1[1]], ids["up"][elsewhere[0]]
    async with httpx.AsyncClient(base_url=server["url"], timeout=30) as http:
        store_page = Page(http, f"store={s1}")
        terminal_page = Page(http, f"terminal={other}")
        overview = Page(http, "view=overview")
        for page in (store_page, terminal_page, overview):
            async with asyncio.timeout(20), page.changed:  # subscribed: the stream's first ping
                await page.changed.wait_for(lambda p=page: p.events)

        await take_down(db, first)
        await store_page.wait_for(lambda u: any(f'id="t-{first}"' in d for d in u))
        row = next(d for d in store_page.updates if f'id="t-{first}"' in d)
        assert "row-down" in row and 'hx-swap-oob="true"' in row
        await overview.wait_for(lambda u: any(f'id="s-{s1}"' in d and "degraded" in d for d in u))

        await take_down(db, other)
        await terminal_page.wait_for(lambda u: any('id="tstatus"' in d and "down" in d.lower() for d in u))
        # Its store now cannot take cards (all its terminals down): first on the overview, which
        # gets the changed row and the new order, not the page body again.
        other_store = ids["store_of"][elsewhere[0]]

        def first_in_order(_updates) -> bool:
            orders = [data for name, data in overview.events if name == "order"]
            return bool(orders) and orders[-1].split(",")[0] == str(other_store)

        await overview.wait_for(first_in_order)
        assert not any('id="stores-body"' in d for d in overview.updates)  # never the whole body
        # A change the store page shows, after the other's: the store page got nothing between.
        await take_down(db, third)
        await store_page.wait_for(lambda u: any(f'id="t-{third}"' in d for d in u))

        assert not any(f'id="t-{other}"' in d for d in store_page.updates)
        assert all('id="tstatus"' in d and f"t-{first}" not in d for d in terminal_page.updates)
        assert not any('id="t-' in d for d in overview.updates)  # stores, not terminal rows
        assert len(server["hub"].subscribers) == 3
        for page in (store_page, terminal_page, overview):
            await page.close()


async def test_the_listener_hears_again_after_its_connection_is_killed(pg_db):
    """PostgreSQL: the relay's LISTEN connection terminated by the server; it connects again,
    says a resync is due, and the next change is heard."""
    from app.monitoring.changes import Changes, listen
    from app.relay import Relay

    await import_sample(pg_db)
    await seed_states(pg_db)
    heard: list[Changes] = []
    arrived = asyncio.Event()

    def deliver(changes: Changes) -> None:
        heard.append(changes)
        arrived.set()

    relay = Relay(pg_db)
    listen(relay, deliver)
    try:
        await asyncio.wait_for(relay.start(), 20)
        async with pg_db.engine.begin() as conn:
            killed = await conn.scalar(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND application_name = 'termpulse relay'"
                )
            )
        assert killed == 1
        async with asyncio.timeout(30):  # a resync is delivered once listening again
            while not any(c.resync for c in heard):
                arrived.clear()
                await arrived.wait()
        assert relay.reconnects == 1 and relay.listening
        heard.clear()
        async with pg_db.sessionmaker() as s:
            tid = await s.scalar(select(Terminal.id).where(Terminal.status == State.UP).limit(1))
        await take_down(pg_db, tid)
        async with asyncio.timeout(20):
            while not any(tid in c.terminals for c in heard):
                arrived.clear()
                await arrived.wait()
    finally:
        await relay.close()


async def test_overview_pages_opening_together_share_one_read(db):
    """A server restart: every wall screen connects at once; what their page shows is read once."""
    from sqlalchemy import event

    from app.dashboard.live import OverviewView

    await import_sample(db)
    await seed_states(db)
    from app.relay import Relay

    hub = LiveHub(db, Relay(db))
    reads: list[int] = []

    def count(_conn) -> None:
        reads.append(1)

    event.listen(db.engine.sync_engine, "begin", count)
    try:
        await asyncio.gather(*(hub.remember(OverviewView()) for _ in range(50)))
        await hub.remember(OverviewView())  # known now: no read
    finally:
        event.remove(db.engine.sync_engine, "begin", count)
    assert len(reads) == 1
