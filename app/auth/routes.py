"""Log in and out; the middleware that keeps pages behind a login once users exist."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from sqlalchemy import select
from starlette.middleware.base import RequestResponseEndpoint

from app.auth.models import User
from app.auth.passwords import verify_password
from app.auth.sessions import COOKIE, PUBLIC_PREFIXES, SESSION_TTL_S, identify, session_cookie
from app.web.deps import SessionDep
from app.web.templating import render

router = APIRouter(include_in_schema=False)


async def require_login(request: Request, call_next: RequestResponseEndpoint) -> Response:
    path = request.url.path
    if path.startswith(PUBLIC_PREFIXES):
        return await call_next(request)
    identity = await identify(request)
    if identity is None:
        if path.startswith("/api/"):
            return JSONResponse(
                {"detail": "log in first (HTTP Basic or a session)"},
                401,
                headers={"WWW-Authenticate": 'Basic realm="TermPulse"'},
            )
        target = path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={quote(target)}", status_code=303)
    request.state.identity = identity
    return await call_next(request)


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
    user = await session.scalar(select(User).where(User.username == username))
    if user is None or not verify_password(password, user.password_hash):
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
