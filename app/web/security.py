"""What keeps other pages out: security headers on every answer, and the refusal of a
state-changing request a browser sends from another origin.

Cross-origin requests:

A session cookie goes with every request the browser makes to this host, whoever's page
asks: SameSite=Lax stops other sites' POSTs, not a page on another port of the same host
("same site", different origin). Browsers name the page that sent a request in `Origin`
(every cross-origin POST, form or fetch) or at least `Referer`: when either names another
origin than the one the request was sent to, the request is refused (403) before any
handler runs. Requests without either header are not a browser's cross-origin ones (API
clients, the store agents, the command line) and go on; token-authenticated calls are not
exposed to this at all.
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import Forbidden
from app.web.errors import API_PREFIX, html_error, json_error

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


def _origin_of(url: str) -> str | None:
    """scheme://host[:port] of a URL, lower-cased, default ports dropped (None if not a URL)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if not parts.scheme or not parts.hostname:
        return None
    default = {"http": 80, "https": 443}.get(parts.scheme)
    host = parts.hostname if port in (None, default) else f"{parts.hostname}:{port}"
    return f"{parts.scheme.lower()}://{host.lower()}"


def own_origin(scope: Scope, headers: Headers) -> str | None:
    """The origin the request was sent to, as the browser saw it (Host, or a proxy's
    X-Forwarded-Host/-Proto when uvicorn trusts it and has set the scheme)."""
    host = headers.get("x-forwarded-host") or headers.get("host")
    if not host:
        return None
    return _origin_of(f"{scope.get('scheme', 'http')}://{host.split(',')[0].strip()}")


def cross_origin(scope: Scope) -> str | None:
    """The foreign origin a state-changing browser request came from, else None."""
    if scope["method"] in SAFE_METHODS:
        return None
    headers = Headers(scope=scope)
    sender = headers.get("origin") or headers.get("referer")
    if sender is None:
        return None
    if sender == "null":  # a sandboxed frame, a data: URL, a redirect from elsewhere
        return "null"
    theirs = _origin_of(sender)
    return None if theirs is not None and theirs == own_origin(scope, headers) else (theirs or sender)


class RefuseCrossOrigin:
    """Middleware: 403 for a state-changing request from another origin (see the module)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (sender := cross_origin(scope)) is not None:
            refusal = Forbidden(
                f"This request was sent by a page of another origin ({sender}), so it was refused: "
                "make changes from TermPulse's own pages."
            )
            request = Request(scope, receive)
            answer = (
                json_error(refusal) if scope["path"].startswith(API_PREFIX) else html_error(request, refusal)
            )
            await answer(scope, receive, send)
            return
        await self.app(scope, receive, send)


# Scripts and styles only from this server's files: no inline <script>, no on* attribute, no
# eval (htmx runs with allowEval off: no hx-on, no trigger filters), no <style> or style
# attribute (static/app.css has the layout helpers). Nothing is fetched from elsewhere. No
# framing (clickjacking), no MIME sniffing, no referrer to other sites, forms post only here.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; font-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'self'; object-src 'none'; form-action 'self'"
)
# /docs: Swagger UI (vendored) draws some icons as data: images; no inline script or style
# either (static/swagger-init.js starts it).
DOCS_CONTENT_SECURITY_POLICY = CONTENT_SECURITY_POLICY.replace("img-src 'self'", "img-src 'self' data:")
DOCS_PATH = "/docs"


def _headers(policy: str) -> list[tuple[bytes, bytes]]:
    return [
        (b"content-security-policy", policy.encode()),
        (b"x-frame-options", b"DENY"),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"same-origin"),
    ]


_HEADERS = _headers(CONTENT_SECURITY_POLICY)
_DOCS_HEADERS = _headers(DOCS_CONTENT_SECURITY_POLICY)
_HSTS = (b"strict-transport-security", b"max-age=31536000")


class SecurityHeaders:
    """Middleware: the headers above on every HTTP answer (HSTS too when served over HTTPS)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = _DOCS_HEADERS if scope["path"] == DOCS_PATH else _HEADERS
        if scope.get("scheme") == "https":
            extra = [*extra, _HSTS]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)


# --- CSRF tokens ------------------------------------------------------------------------------
#
# On top of the Origin/Referer check: a state-changing request that a browser authenticates with
# the session cookie must carry the session's CSRF token, in the X-CSRF-Token header (htmx sends
# it: base.html sets hx-headers on <body>) or in the form field csrf_token (every POST form has
# it as a hidden input). The token is an HMAC of the session's cookie under the secret key: one
# per session, never stored, unknown to a page that cannot read the cookie. API tokens, agent
# tokens and HTTP Basic are not sent by a browser on its own, so they need none.

CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def csrf_token_for(secret_key: str, session_cookie: str) -> str:
    return hmac.new(secret_key.encode(), b"csrf:" + session_cookie.encode(), hashlib.sha256).hexdigest()


def csrf_matches(expected: str, given: str | None) -> bool:
    return given is not None and given.isascii() and hmac.compare_digest(expected.encode(), given.encode())


async def submitted_csrf_token(scope: Scope, receive: Receive) -> tuple[str | None, Receive]:
    """The CSRF token a request carries (header, else form field) and a `receive` that gives
    the app the body again (a form's body is read here to find the field)."""
    headers = Headers(scope=scope)
    if (given := headers.get(CSRF_HEADER)) is not None:
        return given, receive
    content_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type not in _FORM_TYPES:
        return None, receive
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None, receive  # the client went away
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    body = b"".join(chunks)

    def replay() -> Receive:
        sent = False

        async def again() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # a disconnect, as the server reports it

        return again

    form = await Request(scope, replay()).form()
    try:
        value = form.get(CSRF_FIELD)
    finally:
        await form.close()
    return (value if isinstance(value, str) else None), replay()
