"""Log in and out, the account page (password, sessions, API tokens); the middleware that keeps
pages behind a login once users exist and lets each role only where the rule table says."""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
from collections.abc import Mapping
from datetime import timedelta
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from sqlalchemy import func, select, update
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.auth import audit
from app.auth.models import ApiToken, User
from app.auth.oidc import password_allowed
from app.auth.passwords import check_password, hash_password
from app.auth.roles import RANK, ROLES, normalize
from app.auth.rules import needed_role, refusal_detail
from app.auth.sessions import (
    COOKIE,
    PUBLIC_PREFIXES,
    Identity,
    count_failure,
    create_token,
    current_identity,
    end_all_sessions,
    end_session,
    identify,
    locked_out_s,
    password_user,
    sessions_of,
    set_session_cookie,
    start_session,
)
from app.auth.sso import login_options
from app.db import Database, utcnow
from app.errors import Forbidden, RateLimited
from app.web.deps import SessionDep
from app.web.errors import API_PREFIX, forbidden, html_error, json_error
from app.web.ratelimit import app_limiter
from app.web.security import SAFE_METHODS, csrf_matches, csrf_token_for, submitted_csrf_token
from app.web.templating import is_htmx, render

log = logging.getLogger(__name__)
router = APIRouter(include_in_schema=False)

MIN_PASSWORD = 8


class RequireLogin:
    """Middleware: once users exist, everything but the public paths needs a login, and a role
    at least the one the rule table (app.auth.rules) names for the method and path.

    Plain ASGI (no task and no body relay per request, as Starlette's BaseHTTPMiddleware
    has): the store agents alone make hundreds of calls a second."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # scope["path"] is request.url.path but for the escaping of "?", "#" and "\\", which
        # no prefix holds: the same answer without building the URL, on every request.
        if scope["type"] != "http" or scope["path"].startswith(PUBLIC_PREFIXES):
            if scope["type"] == "http" and scope["path"] == "/metrics" and not _metrics_allowed(scope):
                answer = JSONResponse(
                    {"detail": "/metrics needs its token: Authorization: Bearer <TERMPULSE_METRICS_TOKEN>"},
                    401,
                    headers={"WWW-Authenticate": 'Bearer realm="TermPulse metrics"'},
                )
                await answer(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        path = request.url.path
        identity = await identify(request)
        if identity is None:
            await _login_first(request, path)(scope, receive, send)
            return
        if identity.via == "open" and getattr(request.app.state, "setup_token", None):
            await _setup_first(path)(scope, receive, send)
            return
        request.state.identity = identity
        if identity.token_id is not None and (wait := await _token_limit(request, identity.token_id)):
            await _too_many_calls(request, wait)(scope, receive, send)
            return
        if identity.via == "session":
            expected = csrf_token_for(request.app.state.settings.secret_key, request.cookies[COOKIE])
            request.state.csrf_token = expected  # for the pages' forms and htmx's header
            if scope["method"] not in SAFE_METHODS:
                given, receive = await submitted_csrf_token(scope, receive)
                if not csrf_matches(expected, given):
                    await _csrf_refused(request, path)(scope, receive, send)
                    return
        needed = needed_role(scope["method"], path, scope.get("app"))
        if needed is not None and not identity.can(needed):
            await audit.record_request(request, identity, "refused", needed=needed)
            await forbidden(request, refusal_detail(identity, needed), needed)(scope, receive, send)
            return
        action = audit.action_for(scope["method"], path)
        if action is None:
            await self.app(scope, receive, send)
            return
        if action in CHECKS and (wait := await _check_limit(request, identity)) is not None:
            await audit.record_request(request, identity, "refused", action=action, status=429)
            await _too_many_checks(request, wait)(scope, receive, send)
            return
        status = 0

        async def send_watched(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        # A request that raised (a database that cannot be reached) leaves no entry: the answer
        # (the 503 banner) must not wait for an audit write that cannot succeed.
        with audit.collecting_changes() as changes:
            await self.app(scope, receive, send_watched)
        outcome = audit.outcome_of(status)
        await audit.record_request(request, identity, outcome, action=action, status=status, changes=changes)


def _csrf_refused(request: Request, path: str) -> Response:
    refusal = Forbidden(
        "This request did not carry this session's CSRF token, so nothing was changed: "
        "reload the page and try again."
    )
    return json_error(refusal) if path.startswith(API_PREFIX) else html_error(request, refusal)


def _metrics_allowed(scope: Scope) -> bool:
    """/metrics is open unless TERMPULSE_METRICS_TOKEN is set; then it needs that token."""
    expected: str = scope["app"].state.settings.metrics_token
    if not expected:
        return True
    given = Headers(scope=scope).get("authorization", "")
    return hmac.compare_digest(given.encode(), f"Bearer {expected}".encode())


# Check connection and Check store share one budget per user (a store check counts as one).
CHECKS = ("check connection", "check store")


async def _check_limit(request: Request, identity: Identity) -> float | None:
    """Seconds to wait before this user may press Check connection (or Check store) again, None if now."""
    state = request.app.state
    presses = app_limiter(state, "check-presses", state.settings.check_per_user_per_minute, 60.0)
    return await presses.hit(identity.username)


async def _token_limit(request: Request, token_id: int) -> float | None:
    """Seconds before this API token may call again (TERMPULSE_API_PER_TOKEN_PER_MINUTE), None if now."""
    state = request.app.state
    calls = app_limiter(state, "api-token", state.settings.api_per_token_per_minute, 60.0)
    return await calls.hit(str(token_id))


def _too_many_calls(request: Request, wait: float) -> Response:
    limit = request.app.state.settings.api_per_token_per_minute
    return json_error(
        RateLimited(
            f"This API token made {limit} calls within a minute (TERMPULSE_API_PER_TOKEN_PER_MINUTE): "
            f"try again in {max(1, math.ceil(wait))} s.",
            max(1, math.ceil(wait)),
        )
    )


def _too_many_checks(request: Request, wait: float) -> Response:
    """A page's htmx press gets the message where the result goes (htmx swaps no 4xx answer)."""
    limit = request.app.state.settings.check_per_user_per_minute
    button = "Check store or Check connection" if "/stores/" in request.url.path else "Check connection"
    error = RateLimited(
        f"You pressed {button} {limit} times within a minute: "
        f"try again in {max(1, math.ceil(wait))} s (the scheduled checks go on meanwhile).",
        wait,
    )
    if request.url.path.startswith(API_PREFIX):
        return json_error(error)
    response = html_error(request, error)
    if is_htmx(request):
        response.status_code = 200
    response.headers["Retry-After"] = f"{math.ceil(wait)}"
    return response


def _login_first(request: Request, path: str) -> Response:
    if path.startswith(API_PREFIX):
        return JSONResponse(
            {"detail": "log in first (an API token: Authorization: Bearer, or a session)"},
            401,
            headers={"WWW-Authenticate": 'Bearer realm="TermPulse"'},
        )
    target = path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/login?next={quote(target)}", status_code=303)


def _setup_first(path: str) -> Response:
    """A fresh install (no user yet, not the demo) serves nothing but the setup page."""
    if path.startswith(API_PREFIX):
        detail = "TermPulse is not set up yet: create the first user at /setup (or termpulse create-user)"
        return JSONResponse({"detail": detail}, 503)
    return RedirectResponse("/setup", status_code=303)


def _safe_next(target: str) -> str:
    return target if target.startswith("/") and not target.startswith("//") else "/"


def _login_page(request: Request, context: Mapping[str, object], status_code: int = 200) -> Response:
    return render(request, "auth/login.html", {**context, **login_options(request)}, status_code=status_code)


@router.get("/login")
async def login_page(request: Request, next: str = "/") -> Response:
    return _login_page(request, {"next": _safe_next(next), "error": None})


@router.post("/login")
async def login(request: Request, session: SessionDep) -> Response:
    form = await request.form()
    username, password = str(form.get("username", ""))[:100], str(form.get("password", ""))
    target = _safe_next(str(form.get("next", "/")))
    if (wait := await locked_out_s(request, username)) is not None:
        minutes = max(1, math.ceil(wait / 60))
        error = f"Too many failed attempts. Try again in {minutes} minute{'s' if minutes > 1 else ''}."
        await audit.record(
            session, request, None, "login", outcome="refused", who=username, detail="locked out"
        )
        await session.commit()
        context = {"next": target, "error": error, "username": username}
        return _login_page(request, context, 429)
    user = await password_user(request, session, username, password)
    if user is None:
        await audit.record(session, request, None, "login", outcome="failed", who=username)
        await session.commit()
        context = {"next": target, "error": "Wrong user name or password.", "username": username}
        return _login_page(request, context, 401)
    if not password_allowed(request.app.state.settings, user.role):  # TERMPULSE_OIDC_ONLY
        await audit.record(
            session, request, None, "login", outcome="refused", who=user.username, detail="SSO only"
        )
        await session.commit()
        error = "This account signs in with SSO only: use “Sign in with SSO”."
        return _login_page(request, {"next": target, "error": error, "username": username}, 403)
    token = await start_session(session, request, user)
    await audit.record(session, request, None, "login", who=user.username)
    await session.commit()
    response = RedirectResponse(target, status_code=303)
    set_session_cookie(response, request, token)
    return response


@router.post("/logout")
async def logout(request: Request, session: SessionDep) -> Response:
    identity: Identity | None = getattr(request.state, "identity", None)
    await end_session(session, request.cookies.get(COOKIE))
    if identity is not None and identity.user_id is not None:
        await audit.record(session, request, identity, "logout")
    await session.commit()
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE)
    return response


# --- the account page: every user's own ------------------------------------------------------


async def _account_user(request: Request, session: SessionDep) -> tuple[Identity, User | None]:
    identity = await current_identity(request)
    user = await session.get(User, identity.user_id) if identity.user_id is not None else None
    return identity, user


async def _account_page(
    request: Request, session: SessionDep, status_code: int = 200, **context: object
) -> Response:
    identity, user = await _account_user(request, session)
    logins = await sessions_of(session, user.id) if user else []
    tokens = (
        list(await session.scalars(select(ApiToken).where(ApiToken.user_id == user.id).order_by(ApiToken.id)))
        if user
        else []
    )
    grantable = [r for r in ROLES if user and RANK[r] <= RANK[normalize(user.role)]]
    values: dict[str, object] = {
        "who": identity,
        "user": user,
        "logins": logins,
        "tokens": tokens,
        "grantable": grantable,
        "now": utcnow(),
        "errors": {},
        "message": None,
        "new_token": None,
    }
    values.update(context)
    return render(request, "auth/account.html", values, status_code=status_code)


@router.get("/account")
async def account_page(request: Request, session: SessionDep) -> Response:
    return await _account_page(request, session)


@router.post("/account/password")
async def change_password(request: Request, session: SessionDep) -> Response:
    identity, user = await _account_user(request, session)
    if user is None:
        return await _account_page(request, session, 409, message="No users exist yet: nothing to change.")
    if not user.password_hash:  # an SSO user (see the account page)
        message = "You sign in with SSO: your password is kept by your identity provider, not by TermPulse."
        return await _account_page(request, session, 409, message=message)
    form = await request.form()
    current, new, again = (str(form.get(k, "")) for k in ("current", "new", "again"))
    errors = {}
    if not await check_password(current, user.password_hash):
        errors["current"] = "This is not your current password."
    elif len(new) < MIN_PASSWORD:
        errors["new"] = f"At least {MIN_PASSWORD} characters."
    elif new != again:
        errors["again"] = "The two new passwords differ."
    if errors:
        return await _account_page(request, session, 422, errors=errors)
    user.password_hash = await asyncio.to_thread(hash_password, new)  # scrypt off the event loop
    ended = await end_all_sessions(session, user.id)
    token = await start_session(session, request, user)  # this browser stays logged in
    await audit.record(
        session,
        request,
        identity,
        "password change",
        target=user.username,
        detail=f"{ended} session(s) ended",
    )
    await session.commit()
    response = await _account_page(
        request, session, message="Password changed: every other session of yours has ended."
    )
    set_session_cookie(response, request, token)
    return response


@router.post("/account/logout-everywhere")
async def logout_everywhere(request: Request, session: SessionDep) -> Response:
    identity, user = await _account_user(request, session)
    if user is not None:
        ended = await end_all_sessions(session, user.id)
        await audit.record(
            session, request, identity, "log out everywhere", detail=f"{ended} session(s) ended"
        )
        await session.commit()
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE)
    return response


TOKEN_DAYS = (7, 30, 90, 365)


@router.post("/account/tokens")
async def new_token(request: Request, session: SessionDep) -> Response:
    identity, user = await _account_user(request, session)
    if user is None:
        return await _account_page(request, session, 409, message="No users exist yet: tokens need a user.")
    form = await request.form()
    name, role, days = (str(form.get(k, "")).strip() for k in ("name", "role", "days"))
    errors = {}
    if not name or len(name) > 100:
        errors["name"] = "Give the token a name (up to 100 characters), to recognise it later."
    try:
        role = normalize(role)
        if RANK[role] > RANK[normalize(user.role)]:
            errors["role"] = f"At most your own role ({normalize(user.role)})."
    except ValueError:
        errors["role"] = f"One of {', '.join(ROLES)}."
    if days not in ("", *map(str, TOKEN_DAYS)):
        errors["days"] = f"One of {', '.join(map(str, TOKEN_DAYS))} days, or never."
    if errors:
        return await _account_page(request, session, 422, errors=errors)
    expires = utcnow() + timedelta(days=int(days)) if days else None
    row, token = await create_token(session, user, name, role, expires)
    await audit.record(session, request, identity, "api token created", target=name, detail=f"role {role}")
    await session.commit()
    return await _account_page(request, session, new_token=token, message=f"Token “{row.name}” created.")


@router.post("/account/tokens/{token_id}/revoke")
async def revoke_token(request: Request, token_id: int, session: SessionDep) -> Response:
    identity, user = await _account_user(request, session)
    row = await session.get(ApiToken, token_id)
    # An admin may revoke anybody's (from the Users page); others only their own.
    if row is None or user is None or (row.user_id != user.id and not identity.is_admin):
        return await _account_page(request, session, 404, message="No such token.")
    if row.revoked_at is None:
        await session.execute(update(ApiToken).where(ApiToken.id == row.id).values(revoked_at=utcnow()))
        await audit.record(session, request, identity, "api token revoked", target=row.name)
        await session.commit()
    if row.user_id != user.id:
        return RedirectResponse(f"/admin/users/{row.user_id}", status_code=303)
    return await _account_page(request, session, message=f"Token “{row.name}” revoked.")


# --- first run: the first user, with the one-time token the server printed in its log --------


async def announce_setup(database: Database, token: str) -> None:
    """At start (termpulse serve): with no user yet, the log says where to set up, with the token."""
    async with database.sessionmaker() as session:
        if await session.scalar(select(func.count()).select_from(User)):
            return
    log.warning(
        "No user exists yet: TermPulse serves only its setup page. Open /setup and give this one-time "
        "setup token: %s (or run termpulse create-user NAME --role admin)",
        token,
    )


async def _setup_pending(request: Request, session: SessionDep) -> bool:
    if not getattr(request.app.state, "setup_token", None):
        return False
    if await session.scalar(select(func.count()).select_from(User)):
        request.app.state.setup_token = None  # a user was made meanwhile (create-user)
        return False
    return True


@router.get("/setup")
async def setup_page(request: Request, session: SessionDep) -> Response:
    if not await _setup_pending(request, session):
        return RedirectResponse("/login", status_code=303)
    return render(request, "auth/setup.html", {"values": {}, "errors": {}})


@router.post("/setup")
async def setup(request: Request, session: SessionDep) -> Response:
    if not await _setup_pending(request, session):
        return RedirectResponse("/login", status_code=303)
    form = await request.form()
    token, username, password, again = (
        str(form.get(k, "")) for k in ("token", "username", "password", "again")
    )
    username = username.strip()
    values, errors = {"username": username}, {}
    if (wait := await locked_out_s(request, "setup")) is not None:
        errors["token"] = f"Too many wrong tokens. Try again in {max(1, math.ceil(wait / 60))} minutes."
    elif not hmac.compare_digest(token.strip().encode(), str(request.app.state.setup_token).encode()):
        await count_failure(request, "setup")
        await audit.record(
            session, request, None, "setup", outcome="failed", who=username, detail="wrong token"
        )
        await session.commit()
        errors["token"] = (
            "This is not the setup token: copy it from the server's log (a new one at each start)."
        )
    if not username or len(username) > 100 or any(not c.isprintable() for c in username):
        errors["username"] = "A user name of 1 to 100 printable characters."
    if len(password) < MIN_PASSWORD:
        errors["password"] = f"At least {MIN_PASSWORD} characters."
    elif password != again:
        errors["again"] = "The two passwords differ."
    if errors:
        return render(request, "auth/setup.html", {"values": values, "errors": errors}, status_code=422)
    user = User(
        username=username, role="admin", password_hash=await asyncio.to_thread(hash_password, password)
    )
    session.add(user)
    await session.flush()
    cookie = await start_session(session, request, user)
    await audit.record(
        session, request, None, "first user created", target=username, who=username, detail="setup page"
    )
    await session.commit()
    request.app.state.setup_token = None  # one time
    request.app.state.user_count_cache = None
    response = RedirectResponse("/", status_code=303)
    set_session_cookie(response, request, cookie)
    return response
