"""Log in and out; the middleware that keeps pages behind a login once users exist."""

from __future__ import annotations

import math
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from app.auth.sessions import (
    COOKIE,
    PUBLIC_PREFIXES,
    SESSION_TTL_S,
    identify,
    locked_out_s,
    password_user,
    session_cookie,
)
from app.web.deps import SessionDep
from app.web.templating import render

router = APIRouter(include_in_schema=False)


class RequireLogin:
    """Middleware: once users exist, everything but the public paths needs a login.

    Plain ASGI (no task and no body relay per request, as Starlette's BaseHTTPMiddleware
    has): the store agents alone make hundreds of calls a second."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # scope["path"] is request.url.path but for the escaping of "?", "#" and "\\", which
        # no prefix holds: the same answer without building the URL, on every request.
        if scope["type"] != "http" or scope["path"].startswith(PUBLIC_PREFIXES):
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        path = request.url.path
        identity = await identify(request)
        if identity is None:
            await _login_first(request, path)(scope, receive, send)
            return
        request.state.identity = identity
        await self.app(scope, receive, send)


def _login_first(request: Request, path: str) -> Response:
    if path.startswith("/api/"):
        return JSONResponse(
            {"detail": "log in first (HTTP Basic or a session)"},
            401,
            headers={"WWW-Authenticate": 'Basic realm="TermPulse"'},
        )
    target = path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/login?next={quote(target)}", status_code=303)


def _safe_next(target: str) -> str:
    return target if target.startswith("/") and not target.startswith("//") else "/"


@router.get("/login")
async def login_page(request: Request, next: str = "/") -> Response:
    return render(request, "auth/login.html", {"next": _safe_next(next), "error": None})


@router.post("/login")
async def login(request: Request, session: SessionDep) -> Response:
    form = await request.form()
    username, password = str(form.get("username", "")), str(form.get("password", ""))
    target = _safe_next(str(form.get("next", "/")))
    if (wait := locked_out_s(request, username)) is not None:
        minutes = max(1, math.ceil(wait / 60))
        error = f"Too many failed attempts. Try again in {minutes} minute{'s' if minutes > 1 else ''}."
        context = {"next": target, "error": error, "username": username}
        return render(request, "auth/login.html", context, status_code=429)
    user = await password_user(request, session, username, password)
    if user is None:
        context = {"next": target, "error": "Wrong user name or password.", "username": username}
        return render(request, "auth/login.html", context, status_code=401)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        COOKIE,
        session_cookie(request.app.state.settings.secret_key, user.id),
        max_age=SESSION_TTL_S,
        httponly=True,
        samesite="lax",
    )
    return response


@router.post("/logout")
async def logout() -> Response:
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE)
    return response
