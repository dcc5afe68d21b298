"""Live updates pushed to open pages over Server-Sent Events (the htmx SSE extension).

One `LiveHub` per web process hears every published change (`app.monitoring.changes`) and
fans it out in memory to the pages this process serves. Each page subscribes with what it
shows (`OverviewView`: its stores page and filters; `RowsView`: the terminal rows of a store
page or a terminals list; `TerminalView`: one terminal's badges) and gets only those rows, as
one named event (`update`) of out-of-band fragments that htmx swaps in place.

The database is read once per change, not once per page: a batch of changes is one session,
one query per distinct overview page (however many screens show it) and one for the changed
terminal rows; each fragment is rendered once and the same bytes go to every page showing it.

Pages poll as before whenever no event came for a while (`static/dashboard.js`): a proxy that
buffers the stream, a process whose writer is elsewhere on SQLite, a reconnection (a `resync`
asks the pages to poll once: what happened meanwhile was not heard).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from fastapi.sse import EventSourceResponse, format_sse_event
from markupsafe import Markup
from sqlalchemy.ext.asyncio import AsyncSession

from app.dashboard import queries
from app.dashboard.routes import STORES_PER_PAGE, _overview_params, _qs
from app.db import Database, utcnow
from app.monitoring.changes import Changes, listen
from app.relay import Relay
from app.web.errors import DB_ERRORS
from app.web.templating import templates

log = logging.getLogger(__name__)
router = APIRouter(include_in_schema=False)

PING_S = 15.0  # an idle stream says it is alive this often (pages poll after 40 s of silence)
QUEUE_MAX = 64  # messages a slow page may owe; past that its stream ends and it reconnects
# A stream ends after this long and the page connects again: through the login check again
# (a session ended or a user disabled meanwhile stops getting updates), with one catch-up poll.
STREAM_MAX_S = 15 * 60
MAX_IDS = 500  # terminal rows one page may follow (a terminals list's largest page)
_PING = format_sse_event(event="ping", data_str="", retry=5000)
_RESYNC = format_sse_event(event="resync", data_str="")


@dataclass(frozen=True)
class OverviewView:
    region: str = ""
    q: str = ""
    page: int = 1
    sort: str = "status"
    desc: bool = False

    @property
    def qs(self) -> str:
        return _qs(self.region, self.q, self.sort, self.desc)  # the page's own links


@dataclass(frozen=True)
class RowsView:
    """Terminal rows: those listed, or every terminal of a store (its page lists them all)."""

    terminal_ids: frozenset[int] = frozenset()
    store_id: int | None = None
    show_store: bool = True

    def shows(self, row: queries.TerminalRow) -> bool:
        return row.id in self.terminal_ids or row.store_id == self.store_id


@dataclass(frozen=True)
class TerminalView:
    terminal_id: int


View = OverviewView | RowsView | TerminalView


class Subscriber:
    """One open page: the messages waiting for its stream (None ends the stream)."""

    def __init__(self, view: View) -> None:
        self.view = view
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue(QUEUE_MAX + 1)

    def send(self, message: bytes) -> None:
        if self.queue.qsize() >= QUEUE_MAX:
            self.end()  # too slow to keep up: it reconnects and polls once to catch up
            return
        self.queue.put_nowait(message)

    def end(self) -> None:
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(None)

    async def stream(self) -> AsyncIterator[bytes]:
        yield _PING  # at once: the page knows the stream works (and a proxy sends the headers)
        ends = asyncio.get_running_loop().time() + STREAM_MAX_S
        while asyncio.get_running_loop().time() < ends:
            try:
                async with asyncio.timeout(PING_S):
                    message = await self.queue.get()
            except TimeoutError:
                message = _PING
            if message is None:
                return
            yield message


class LiveHub:
    """This process's subscribers, fed by the changes its relay hears."""

    def __init__(self, database: Database, relay: Relay) -> None:
        self.database = database
        self.subscribers: set[Subscriber] = set()
        listen(relay, self._heard)  # the process's one LISTEN connection carries the changes too
        self.pushes = 0  # batches of changes pushed
        self._pending: Changes | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # What each overview page showed after the last push: (summary signature, rows).
        self._shown: dict[OverviewView, tuple[str, list[tuple[int, str]]]] = {}
        self._remembering: dict[OverviewView, asyncio.Future[None]] = {}

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="termpulse-live-hub")

    def end_streams(self) -> None:
        """A stop begins: every open stream ends now rather than holding the graceful stop."""
        for sub in list(self.subscribers):
            sub.end()

    async def stop(self) -> None:
        self.end_streams()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def subscribe(self, view: View) -> Subscriber:
        self.start()
        sub = Subscriber(view)
        self.subscribers.add(sub)
        return sub

    async def remember(self, view: View) -> None:
        """What a new overview page shows now, so the next change sends it only what changed
        (the page itself polls once on connecting for what changed before)."""
        if not isinstance(view, OverviewView) or view in self._shown:
            return
        reading = self._remembering.get(view)
        if reading is None:  # pages that open together (a server restart) share one read
            reading = self._remembering[view] = asyncio.ensure_future(self._read_shown(view))
            reading.add_done_callback(lambda _done: self._remembering.pop(view, None))
        await asyncio.shield(reading)

    async def _read_shown(self, view: OverviewView) -> None:
        async with self.database.sessionmaker() as session:
            summary, stores = await _overview_page(session, view, fresh=False)
        self._shown.setdefault(view, (summary.signature(), [(s.id, s.signature()) for s in stores]))

    def unsubscribe(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)
        view = sub.view
        if isinstance(view, OverviewView) and not any(s.view == view for s in self.subscribers):
            self._shown.pop(view, None)

    def _heard(self, changes: Changes) -> None:
        # Changes that arrive while a push renders are merged into the next one.
        self._pending = changes if self._pending is None else self._pending | changes
        self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            changes, self._pending = self._pending, None
            if changes is None or not self.subscribers:
                continue
            try:
                await self._push(changes)
            except Exception as exc:  # the pages' polling catches up; the next change is pushed
                log.warning("live updates: could not push a change (%s: %s)", type(exc).__name__, exc)
            self.pushes += 1

    async def _push(self, changes: Changes) -> None:
        if changes.resync:
            self._shown.clear()
            for sub in list(self.subscribers):
                sub.send(_RESYNC)
        if not (changes.terminals or changes.stores):
            return
        overviews: dict[OverviewView, list[Subscriber]] = defaultdict(list)
        row_groups: dict[RowsView | TerminalView, list[Subscriber]] = defaultdict(list)
        for sub in self.subscribers:
            if isinstance(sub.view, OverviewView):
                overviews[sub.view].append(sub)
            else:
                row_groups[sub.view].append(sub)
        now = utcnow()
        async with self.database.sessionmaker() as session:
            for view, subs in overviews.items():
                message = await self._overview(session, view, changes, now)
                if message is not None:
                    _send_all(subs, message)
            if row_groups:
                await self._rows(session, row_groups, changes, now)

    async def _overview(
        self, session: AsyncSession, view: OverviewView, changes: Changes, now: datetime
    ) -> bytes | None:
        """The summary bar and the rows of this stores page that changed, or None when nothing
        it shows changed. When the worst-first order moved: the rows that came onto the page
        too, and an `order` event (the rows' ids in order: the page sorts its rows by it and
        drops the others), not the whole body again (a hundred kilobytes, to every screen)."""
        summary, stores = await _overview_page(session, view, fresh=True)
        # What its pages show is not known yet (or nothing is left on it): the whole body.
        whole = view not in self._shown or not stores
        before_summary, before = self._shown.get(view, ("", []))
        shown = [(s.id, s.signature()) for s in stores]
        self._shown[view] = (summary.signature(), shown)
        order_changed = [i for i, _ in before] != [i for i, _ in shown]
        old = dict(before)
        changed = [s for s in stores if old.get(s.id) != s.signature() or s.id in changes.stores]
        summary_changed = summary.signature() != before_summary
        if not (whole or order_changed or changed or summary_changed):
            return None
        html = templates.env.get_template("dashboard/overview_live.html").render(
            summary=summary,
            stores=stores,
            changed=[s for s in changed if s.id in old],
            order_changed=whole,
            summary_changed=summary_changed,
            region=view.region,
            q=view.q,
            page=view.page,
            now=now,
            qs=view.qs,
            pushed=True,
        )
        entered = [s for s in stores if s.id not in old]
        if entered and not whole:  # appended, then put in place by the order
            ui: Any = templates.env.get_template("dashboard/_ui.html").module
            rows = "".join(str(ui.store_row(s)) for s in entered)
            html += f'<template><tbody hx-swap-oob="beforeend:#stores-body">{rows}</tbody></template>'
        message = format_sse_event(event="update", data_str=html)
        if order_changed and not whole:
            message += format_sse_event(event="order", data_str=",".join(str(i) for i, _ in shown))
        return message

    async def _rows(
        self,
        session: AsyncSession,
        groups: dict[RowsView | TerminalView, list[Subscriber]],
        changes: Changes,
        now: datetime,
    ) -> None:
        """Terminal rows and badges: the changed terminals some page shows, read once, each
        fragment rendered once."""
        wanted: set[int] = set()
        for view in groups:
            if isinstance(view, TerminalView) and view.terminal_id in changes.terminals:
                wanted.add(view.terminal_id)
            elif isinstance(view, RowsView):
                wanted |= view.terminal_ids & changes.terminals
                if view.store_id in changes.stores:
                    wanted |= changes.terminals  # which of them are that store's: the rows say
        if not wanted:
            return
        rows = await queries.terminal_rows(session, sorted(wanted))
        listed = [r for r in rows.values() if any(isinstance(v, RowsView) and v.shows(r) for v in groups)]
        figures = await queries.uptime_24h(session, listed, now) if listed else {}
        for r in listed:
            r.uptime_24h = figures.get(r.id)
        ui: Any = templates.env.get_template("dashboard/_ui.html").module
        status = templates.env.get_template("dashboard/terminal_status.html")
        fragments: dict[tuple[int, bool | None], str] = {}

        def fragment(row: queries.TerminalRow, show_store: bool | None) -> str:
            key = (row.id, show_store)
            if key not in fragments:
                if show_store is None:  # the terminal page's badges
                    fragments[key] = status.render(row=row, now=now, oob=True)
                else:
                    fragments[key] = str(ui.terminal_row(row, show_store=show_store, oob=True))
            return fragments[key]

        for view, subs in groups.items():
            if isinstance(view, TerminalView):
                parts = [fragment(rows[view.terminal_id], None)] if view.terminal_id in rows else []
            else:
                assert isinstance(view, RowsView)
                parts = [fragment(r, view.show_store) for r in rows.values() if view.shows(r)]
            if parts:
                html = Markup("<template>{}</template>").format(Markup("".join(parts)))
                _send_all(subs, format_sse_event(event="update", data_str=str(html)))


async def _overview_page(
    session: AsyncSession, view: OverviewView, *, fresh: bool
) -> tuple[queries.Summary, list[queries.StoreRow]]:
    summary = await queries.fleet_summary(session, region=view.region, fresh=fresh)
    stores, _ = await queries.store_page(
        session,
        region=view.region,
        q=view.q,
        page=view.page,
        per_page=STORES_PER_PAGE,
        sort=view.sort,
        desc=view.desc,
        fresh=fresh,
    )
    return summary, stores


def _send_all(subs: list[Subscriber], message: bytes) -> None:
    for sub in subs:
        sub.send(message)


def _int_list(raw: str) -> frozenset[int]:
    return frozenset(int(p) for p in raw.split(",")[:MAX_IDS] if p.isdigit())


def view_of(request: Request) -> View | None:
    """What the page shows, from its stream's query: `view=overview` with the overview's own
    parameters, `store=<id>`, `terminal=<id>`, or `terminals=<id>,<id>...`."""
    p = request.query_params
    if p.get("view") == "overview":
        return OverviewView(*_overview_params(request))
    if (store := p.get("store", "")).isdigit():
        return RowsView(store_id=int(store), show_store=False)
    if (terminal := p.get("terminal", "")).isdigit():
        return TerminalView(int(terminal))
    if ids := _int_list(p.get("terminals", "")):
        return RowsView(terminal_ids=ids)
    return None


@router.get("/live/events")
async def live_events(request: Request) -> Response:
    """The page's stream of live updates (text/event-stream). 204 (the browser stops asking;
    the page polls) when this process hears no changes: SQLite with the checker elsewhere."""
    hub: LiveHub | None = getattr(request.app.state, "live", None)
    view = view_of(request)
    if view is None:
        return Response("Say what the page shows: view=overview, store, terminal or terminals.", 400)
    if hub is None:
        return Response(status_code=204)
    sub = hub.subscribe(view)

    async def stream() -> AsyncIterator[bytes]:
        try:
            try:
                await hub.remember(view)
            except DB_ERRORS as exc:  # the first change sends the whole page then
                log.warning("live updates: %s", type(exc).__name__)
            async for message in sub.stream():
                yield message
        finally:
            hub.unsubscribe(sub)

    # No caching, and no buffering by a proxy that honours it (nginx).
    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return EventSourceResponse(stream(), headers=headers)
