"""Errors as HTTP answers, in one place.

* An `AppError` (app.errors) raised by any route: under /api a JSON `{"detail": ...}` with its
  4xx status; a page gets the message in the page, an htmx request only the message fragment.
* An HTTP refusal (`HTTPException`: 401, 403, an unknown page's 404, 405): a page gets the
  error page in words (who is logged in, what the page needs), never raw JSON; the API and the
  operations endpoints keep FastAPI's JSON `{"detail": ...}`.
* A database that cannot be reached: a page gets a banner (503) instead of a stack trace; the
  JSON API, static files and the operations endpoints keep their own answers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.db import is_bad_value, is_unreachable
from app.errors import AppError, InvalidInput, RateLimited
from app.web.templating import is_htmx, render

log = logging.getLogger(__name__)

API_PREFIX = "/api/"
# Paths that are not pages: a database error there is theirs to answer.
NOT_PAGES = (API_PREFIX, "/static/", "/metrics", "/healthz", "/readyz")
DB_ERRORS = (DBAPIError, OperationalError, InterfaceError, OSError, ConnectionError, asyncio.TimeoutError)


def json_error(exc: AppError) -> JSONResponse:
    headers = {"Retry-After": f"{exc.retry_after_s:.0f}"} if isinstance(exc, RateLimited) else None
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers)


def html_error(request: Request, exc: AppError) -> Response:
    return render(request, "web/error.html", {"error": exc}, block="message", status_code=exc.status_code)


async def app_error(request: Request, exc: Exception) -> Response:
    """The exception handler create_app registers for AppError."""
    if not isinstance(exc, AppError):  # registered for AppError only
        raise exc
    if request.url.path.startswith(API_PREFIX):
        return json_error(exc)
    return html_error(request, exc)


def too_large_message(limit_mb: float) -> str:
    return (
        f"This upload is larger than TermPulse takes ({limit_mb:g} MB, TERMPULSE_UPLOAD_MAX_MB): "
        "split the file, or ask whoever runs TermPulse to raise the limit."
    )


@dataclass(frozen=True)
class Refusal:
    """What web/error.html shows for an HTTP refusal (the fields an AppError has)."""

    status_code: int
    title: str
    message: str
    what: str = ""  # no "No store 'X'" page: that is NotFound's


def refusal(request: Request, exc: HTTPException) -> Refusal:
    identity = getattr(request.state, "identity", None)
    if exc.status_code == 403:
        who = f"You are logged in as {identity.username} ({identity.role}). " if identity else ""
        needed = getattr(request.state, "needed_role", "admin")
        page_is_for = "admins" if needed == "admin" else f"the {needed} role and above"
        return Refusal(
            403, "Not for your role", f"{who}This page is for {page_is_for}: ask an admin to do it for you."
        )
    if exc.status_code == 401:
        return Refusal(401, "Log in first", "This page needs a login.")
    if exc.status_code == 404:
        return Refusal(404, "No such page", f"There is no page at {request.url.path[:200]}.")
    if exc.status_code == 413:  # a body over the limit, found while reading it (app.web.limits)
        return Refusal(413, "Too large", str(exc.detail))
    if exc.status_code == 405:
        return Refusal(405, "Not possible here", f"{request.method} is not possible on this page.")
    return Refusal(exc.status_code, "Not possible", str(exc.detail)[:300])


async def http_error(request: Request, exc: Exception) -> Response:
    """The exception handler create_app registers for HTTPException: pages get an HTML page."""
    if not isinstance(exc, HTTPException):  # registered for HTTPException only
        raise exc
    if request.url.path.startswith(NOT_PAGES):
        return await http_exception_handler(request, exc)
    response = render(
        request,
        "web/error.html",
        {"error": refusal(request, exc)},
        block="message",
        status_code=exc.status_code,
    )
    for name, value in (exc.headers or {}).items():
        response.headers[name] = value
    return response


def forbidden(request: Request, detail: str, needed: str) -> Response:
    """The answer to a role below what the request needs (app.auth.rules): JSON under /api,
    else the refusal page saying who is logged in and which role the page is for."""
    if request.url.path.startswith(NOT_PAGES):
        return JSONResponse({"detail": detail}, status_code=403)
    request.state.needed_role = needed
    error = refusal(request, HTTPException(403, detail))
    return render(request, "web/error.html", {"error": error}, block="message", status_code=403)


async def unusable_input(request: Request, exc: Exception) -> Response:
    """The handler for a value the database cannot take (a number out of range, a NUL
    character): the input's fault, so a 422 with the reason, never a 500 nor a banner saying
    the database is down. Any other database error is not the input's: raised on."""
    if not is_bad_value(exc):
        raise exc
    log.info("unusable input for %s: %s", request.url.path, exc)
    error = InvalidInput(
        {"input": "a value is out of range or holds a character that cannot be stored (such as NUL)"}
    )
    return json_error(error) if request.url.path.startswith(API_PREFIX) else html_error(request, error)


def db_down_response(request: Request, exc: BaseException) -> Response:
    log.warning("database unavailable for %s: %r", request.url.path, exc)
    reason = exc.__class__.__name__
    if is_htmx(request):
        # Keep what is on screen; only the banner slot changes (out of band).
        response = render(request, "web/db_down.html", {"reason": reason}, block="banner")
        response.headers["HX-Reswap"] = "none"
        return response
    return render(request, "web/db_down.html", {"reason": reason}, status_code=503)


class DatabaseDownBanner:
    """Middleware: a page whose middleware (login) or handler cannot reach the database gets
    the banner instead of a bare 500. Pages also get a Server-Timing header (queries plus
    rendering until the answer starts, for the browser's network panel and bench/pages.py).

    Plain ASGI (no task and no body relay per request, as Starlette's BaseHTTPMiddleware has)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # scope["path"] is request.url.path but for the escaping of "?", "#" and "\\", which
        # no prefix holds: the same answer without building the URL, on every request.
        if scope["type"] == "http" and scope["path"].startswith(API_PREFIX):
            await self._api(scope, receive, send)
            return
        if scope["type"] != "http" or scope["path"].startswith(NOT_PAGES):
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        started = time.perf_counter()
        answering = False

        async def send_timed(message: Message) -> None:
            nonlocal answering
            if message["type"] == "http.response.start":
                answering = True
                headers = MutableHeaders(scope=message)
                headers["Server-Timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.1f}"
            await send(message)

        try:
            await self.app(scope, receive, send_timed)
        except DB_ERRORS as exc:
            # Too late for a banner once the page has begun; and an error of the database's
            # that is not "cannot be reached" is not a down database.
            if answering or not is_unreachable(exc):
                raise
            await db_down_response(request, exc)(scope, receive, send)

    async def _api(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The JSON API: a database that cannot be reached is a 503 with a reason (clients
        and store agents try again), never a bare 500; any other error stays what it is."""
        answering = False

        async def send_watched(message: Message) -> None:
            nonlocal answering
            answering = answering or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_watched)
        except Exception as exc:
            if answering or not is_unreachable(exc):
                raise
            log.warning("database unavailable for %s: %r", scope["path"], exc)
            detail = f"the database cannot be reached ({type(exc).__name__}); try again shortly"
            answer = JSONResponse({"detail": detail}, status_code=503, headers={"Retry-After": "5"})
            await answer(scope, receive, send)


ERROR_SCHEMA = {
    "title": "Error",
    "description": "Every refusal: a sentence, a {field, reason}, or a list of {field, message} "
    "(app.errors); FastAPI's own 422 lists its validation errors.",
    "type": "object",
    "properties": {"detail": {"title": "Detail"}},
    "required": ["detail"],
}
ANY_CALL = {
    "401": "no credentials, or a token that is unknown, expired or revoked",
    "403": "the token's role may not do this",
    "413": "the body is larger than TermPulse takes",
    "422": "input that cannot be used: FastAPI's list of {loc, msg, type}, or the field and the reason",
    "429": "too many calls: try again after Retry-After seconds",
    "503": "the database cannot be reached: try again after Retry-After seconds",
}
ONE_THING = {"404": "no such thing: the path names one that does not exist"}
A_WRITE = {
    "400": "not possible as asked",
    "409": "conflicts with what is stored (a name taken, a reference still in use)",
}
PROVIDER_CALL = {"502": "the provider did not answer usefully"}


def _refusals(path: str, method: str) -> dict[str, str]:
    refusals = dict(ANY_CALL)
    if "{" in path:
        refusals |= ONE_THING
    if method != "get":
        refusals |= A_WRITE
    if path.startswith("/api/v1/providers/") and path.endswith(("/test", "/sync")):
        refusals |= PROVIDER_CALL
    return refusals


def document_errors(app: FastAPI) -> None:
    """The refusals each JSON API operation can answer, added to the app's OpenAPI: every
    call's (login, role, body size, limits, database), 404 where the path names a thing, 400
    and 409 for writes, 502 where a provider is called. Here rather than per route: they come
    from the one error base (app.errors) and the middleware, not from each handler."""
    plain = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        spec = plain()
        spec.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
        body = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
        for path, operations in spec["paths"].items():
            if not path.startswith(API_PREFIX):
                continue
            for method, operation in operations.items():
                answers = operation.setdefault("responses", {})
                for status, description in _refusals(path, method).items():
                    # 422 too: FastAPI documents only its own shape, the app's refusals have theirs.
                    answers[status] = {"description": description, "content": body}
        app.openapi_schema = spec
        return spec

    app.openapi = openapi  # type: ignore[method-assign]
