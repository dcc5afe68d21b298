"""SSO pages: "Sign in with SSO" sends the browser to the OpenID Connect provider, the callback
takes it back, links the user and starts the same server-side session a password login does.

* A sign-in under way is a row (state, nonce, PKCE verifier, where to go after) bound to the
  browser by a cookie of its own; the callback takes it once, within SIGN_IN_MINUTES.
* A user is linked by (issuer, subject), never by name: the first SSO sign-in creates the user
  (with no password) under the role the groups map to; each later one sets the role from the
  groups again. No mapped group, or a disabled user: refused, with a page saying why.
* Every sign-in and refusal is in the audit log (action "sso login").
"""

from __future__ import annotations

import hashlib
import logging
import math
import secrets
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth import audit
from app.auth.models import OidcIdentity, OidcLogin, User
from app.auth.oidc import OidcClient, OidcConfig, OidcError, groups_of, password_allowed
from app.auth.roles import normalize
from app.auth.sessions import client_address, set_session_cookie, start_session
from app.auth.users import LAST_ADMIN_KEPT, ROLE_KEPT, other_active_admins
from app.checks.guard import TargetGuard
from app.config import Settings
from app.db import utcnow
from app.web.deps import SessionDep
from app.web.ratelimit import Limiter, app_limiter
from app.web.templating import render

log = logging.getLogger(__name__)
router = APIRouter(include_in_schema=False)

BROWSER_COOKIE = "termpulse_sso"
SIGN_IN_MINUTES = 10
ACTION = "sso login"
# Sign-ins started per client address (each keeps a row until its callback or its end).
STARTS_PER_ADDRESS = (30, SIGN_IN_MINUTES * 60.0)


def oidc_client(settings: Settings) -> OidcClient | None:
    """The app's SSO client, None when TERMPULSE_OIDC_ISSUER is unset; a wrong setting stops
    the start with a ValueError that names it."""
    config = OidcConfig.from_settings(settings)
    return OidcClient(config, TargetGuard.from_settings(settings)) if config else None


def _client(request: Request) -> OidcClient | None:
    client: OidcClient | None = getattr(request.app.state, "oidc", None)
    return client


def login_options(request: Request) -> dict[str, bool]:
    """What the login page offers: the SSO button, and the password form unless nobody may use
    it (TERMPULSE_OIDC_ONLY=all), saying when only administrators may (non-admins)."""
    settings: Settings = request.app.state.settings
    return {
        "sso": _client(request) is not None,
        "passwords": password_allowed(settings, "admin"),
        "password_for_all": password_allowed(settings, "viewer"),
    }


def _refused(request: Request, message: str, status_code: int, next_path: str = "/") -> Response:
    context = {"next": next_path, "error": message, **login_options(request)}
    response = render(request, "auth/login.html", context, status_code=status_code)
    response.delete_cookie(BROWSER_COOKIE, path="/login/sso")
    return response


def _starts(request: Request) -> Limiter:
    return app_limiter(request.app.state, "sso-starts", *STARTS_PER_ADDRESS)


def _safe_next(target: str) -> str:
    return target if target.startswith("/") and not target.startswith("//") else "/"


def _hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


@router.get("/login/sso")
async def sign_in(request: Request, session: SessionDep, next: str = "/") -> Response:
    client = _client(request)
    if client is None:
        return _refused(request, "Single sign-on is not configured here: log in with a password.", 404)
    target = _safe_next(next[:1000])
    if (wait := await _starts(request).hit(client_address(request))) is not None:
        message = f"Too many sign-ins started from here: try again in {math.ceil(wait / 60)} minute(s)."
        return _refused(request, message, 429, target)
    try:
        start = await client.start()
    except OidcError as exc:
        log.warning("SSO sign-in not started: %s", exc)
        await audit.record(session, request, None, ACTION, outcome="failed", detail=str(exc))
        await session.commit()
        return _refused(request, f"The sign-in service cannot be used right now: {exc}.", 502, target)
    browser = secrets.token_urlsafe(32)
    now = utcnow()
    await session.execute(delete(OidcLogin).where(OidcLogin.expires_at <= now))  # ended ones, on the way
    session.add(
        OidcLogin(
            state=start.state,
            browser_hash=_hash(browser),
            nonce=start.nonce,
            code_verifier=start.code_verifier,
            next_path=target,
            expires_at=now + timedelta(minutes=SIGN_IN_MINUTES),
        )
    )
    await session.commit()
    response = RedirectResponse(start.url, status_code=303)
    # Lax: sent on the provider's top-level redirect back to the callback, not on other sites' posts.
    response.set_cookie(
        BROWSER_COOKIE,
        browser,
        max_age=SIGN_IN_MINUTES * 60,
        path="/login/sso",
        httponly=True,
        samesite="lax",
        secure=request.app.state.settings.cookie_secure or request.url.scheme == "https",
    )
    return response


async def _take_sign_in(request: Request, session: AsyncSession, state: str) -> OidcLogin | None:
    """The sign-in this state names, if this browser started it and it has not ended; used once."""
    found = await session.scalar(select(OidcLogin).where(OidcLogin.state == state[:64]))
    if found is None:
        return None
    await session.execute(delete(OidcLogin).where(OidcLogin.id == found.id))
    browser = request.cookies.get(BROWSER_COOKIE, "")
    if found.expires_at <= utcnow() or not secrets.compare_digest(_hash(browser), found.browser_hash):
        return None
    return found


@router.get("/login/sso/callback")
async def callback(request: Request, session: SessionDep) -> Response:
    client = _client(request)
    if client is None:
        return _refused(request, "Single sign-on is not configured here: log in with a password.", 404)
    params = request.query_params
    sign_in = await _take_sign_in(request, session, params.get("state", ""))
    if sign_in is None:
        await audit.record(session, request, None, ACTION, outcome="refused", detail="state does not match")
        await session.commit()
        message = (
            "This sign-in does not match the one this browser started (or it took more than "
            f"{SIGN_IN_MINUTES} minutes): nothing was done. Sign in again."
        )
        return _refused(request, message, 400)
    target = sign_in.next_path
    if error := params.get("error"):
        detail = f"the provider answered {error[:60]}: {params.get('error_description', '')[:200]}"
        await audit.record(session, request, None, ACTION, outcome="refused", detail=detail)
        await session.commit()
        return _refused(request, f"The sign-in service did not sign you in ({error[:60]}).", 403, target)
    try:
        claims = await client.finish(params.get("code", ""), sign_in.nonce, sign_in.code_verifier)
    except OidcError as exc:
        log.warning("SSO sign-in refused: %s", exc)
        await audit.record(session, request, None, ACTION, outcome="failed", detail=str(exc))
        await session.commit()
        return _refused(request, f"The sign-in could not be verified: {exc}. Nothing was done.", 403, target)
    return await _sign_in_user(request, session, client.config, claims, target)


async def _sign_in_user(
    request: Request, session: AsyncSession, config: OidcConfig, claims: dict[str, Any], target: str
) -> Response:
    subject = str(claims["sub"])[:255]
    name = _display_name(claims)
    groups = groups_of(claims, config.groups_claim)
    role = config.role_for(groups)
    linked = await session.scalar(
        select(OidcIdentity).where(OidcIdentity.issuer == config.issuer, OidcIdentity.subject == subject)
    )
    user = await session.get(User, linked.user_id) if linked else None
    if user is not None and not user.active:
        await audit.record(
            session, request, None, ACTION, outcome="refused", who=user.username, detail="disabled"
        )
        await session.commit()
        return _refused(
            request, f"{user.username} is disabled in TermPulse: ask an administrator.", 403, target
        )
    if role is None:
        said = ", ".join(groups[:20]) or "none"
        detail = f"{name} (subject {subject}): no group maps to a role; groups: {said}"[:1000]
        await audit.record(session, request, None, ACTION, outcome="refused", who=name, detail=detail)
        await session.commit()
        message = (
            f"You signed in as {name}, but none of your groups ({said}) is given a TermPulse role: "
            "ask an administrator to add you to a group that is (TERMPULSE_OIDC_ROLE_MAP)."
        )
        return _refused(request, message, 403, target)
    if user is None or linked is None:
        user = await _create_user(session, request, config, name, subject, role)
    else:
        role = await _role_from_groups(session, request, user, role)
        linked.last_login_at = utcnow()
    token = await start_session(session, request, user)
    host = urlsplit(config.issuer).hostname or config.issuer
    await audit.record(session, request, None, ACTION, who=user.username, detail=f"via {host}, role {role}")
    await session.commit()
    request.app.state.user_count_cache = None  # a first user ends the open mode at once
    response = RedirectResponse(target, status_code=303)
    set_session_cookie(response, request, token)
    response.delete_cookie(BROWSER_COOKIE, path="/login/sso")
    return response


async def _role_from_groups(session: AsyncSession, request: Request, user: User, role: str) -> str:
    """The role a sign-in gives a known user: its groups' role, except that the last active
    admin stays admin (as on the Users page), audited with the reason ("user role kept")."""
    was = normalize(user.role)
    if was == role:
        return role
    if was == "admin" and not await other_active_admins(session, user):
        detail = f"SSO groups give {role}; {LAST_ADMIN_KEPT}"
        await audit.record(
            session, request, None, ROLE_KEPT, who=user.username, target=user.username, detail=detail
        )
        return was
    user.role = role
    detail = f"{was} -> {role} (SSO groups)"
    await audit.record(
        session, request, None, "user role changed", who=user.username, target=user.username, detail=detail
    )
    return role


def _display_name(claims: dict[str, Any]) -> str:
    for claim in ("preferred_username", "email", "name", "sub"):
        value = claims.get(claim)
        if isinstance(value, str) and value.strip() and value.isprintable():
            return value.strip()[:80]
    return "sso-user"


async def _create_user(
    session: AsyncSession, request: Request, config: OidcConfig, name: str, subject: str, role: str
) -> User:
    """A new user for this issuer and subject, named after the claims (another name when a
    user already has it: a name never links an account), with no password."""
    host = urlsplit(config.issuer).hostname or "sso"
    candidates = [name, f"{name}@{host}", *(f"{name}@{host}-{n}" for n in range(2, 100))]
    taken = set(await session.scalars(select(User.username).where(User.username.in_(candidates))))
    username = next((c for c in candidates if c not in taken), f"{name}-{secrets.token_hex(4)}")
    user = User(username=username, role=role, password_hash="", active=True)  # "" matches no password
    session.add(user)
    await session.flush()
    session.add(OidcIdentity(user_id=user.id, issuer=config.issuer, subject=subject))
    await audit.record(
        session,
        request,
        None,
        "user created",
        who=username,
        target=username,
        detail=f"by SSO ({host}, subject {subject}), role {role}",
    )
    return user
