"""Limits on requests: their bodies and how many pages a process works on at once.

The request body limit (TERMPULSE_UPLOAD_MAX_MB) is answered in words: a 413 with the reason,
the error page for a page, JSON under /api, as every other refusal. A body that says
beforehand it is larger (Content-Length) is refused before anything reads it; one that does
not say (chunked) is counted as it is read and refused once it passes the limit.

Pages are served in turn (TERMPULSE_PAGE_CONCURRENCY at once per process, the others wait in
the order they came): see `PagesInTurn`.
"""

from __future__ import annotations

import asyncio

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import TooLarge
from app.web.errors import API_PREFIX, html_error, json_error, too_large_message


class _OverLimit(HTTPException):
    """Raised from `receive` to whoever reads the body: the exception handlers answer it as an
    HTTP refusal (app.web.errors); RefuseLargeBodies if it gets past them."""


class RefuseLargeBodies:
    """Middleware: 413 for a request body over the limit (see the module)."""

    def __init__(self, app: ASGIApp, limit_mb: float) -> None:
        self.app = app
        self.limit_mb = limit_mb
        self.limit = int(limit_mb * 1024 * 1024)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = Headers(scope=scope).get("content-length", "")
        if length.isdecimal() and (len(length) >= 20 or int(length) > self.limit):
            await self._refuse(scope, receive, send)
            return
        received = 0
        answering = False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise _OverLimit(413, too_large_message(self.limit_mb))
            return message

        async def watched(message: Message) -> None:
            nonlocal answering
            answering = answering or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except _OverLimit:
            if answering:
                raise
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        error = TooLarge(too_large_message(self.limit_mb))
        request = Request(scope, receive)
        answer = json_error(error) if scope["path"].startswith(API_PREFIX) else html_error(request, error)
        answer.headers["Connection"] = "close"  # the rest of the body is not read
        await answer(scope, receive, send)


# Requests that wait on something else than this process's CPU, or for long: they never queue.
_NOT_PAGES = ("/api/", "/live/events", "/static/", "/healthz", "/metrics")


class PagesInTurn:
    """Middleware: at most `limit` page requests (GET, HEAD) at once per process; the others
    wait their turn in the order they came.

    A process has one core. A hundred pages worked on at once all share it: each takes a
    hundred times its work and the unlucky ones far longer (a round trip's p95 was two to three
    times its median under 100 clients). In turn, each takes about the queue ahead of it, and
    the pages done meanwhile are the same. A few at once, not one: a page waits on its queries
    part of the time. Streams, long polls, exports and the API pass by."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.turns = asyncio.Semaphore(limit)  # FIFO: a waiter is woken in the order it came
        self.waiting = 0  # pages waiting for their turn now

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] not in ("GET", "HEAD")
            or scope["path"].startswith(_NOT_PAGES)
            or "/export" in scope["path"]
        ):
            await self.app(scope, receive, send)
            return
        self.waiting += 1
        try:
            await self.turns.acquire()
        finally:
            self.waiting -= 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.turns.release()
