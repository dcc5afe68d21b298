"""Who is asking: a server-side session (pages), an API token (`Authorization: Bearer`), or
HTTP Basic with a password when the setting turns it on.

Until the first user is created (`termpulse create-user`), TermPulse runs open, as a fresh
install or the demo; from then on every page but login and the health endpoints needs a user,
and what each may do follows its role (app.auth.roles, app.auth.rules).

Sessions: the cookie carries a random id; the database keeps only its SHA-256 with the user,
when it started and was last used, when it ends at the latest, the browser and the address.
A session ends when unused for `session_idle_h`, `session_max_days` after the login, on
logout, and for all of a user's sessions on a password change, "log out everywhere", or
when an admin disables the user or resets the password.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from fastapi import HTTPException, Request
from fastapi.responses import Response
from sqlalchemy import bindparam, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.models import ApiToken, User, UserSession
from app.auth.oidc import password_allowed
from app.auth.passwords import check_password
from app.auth.roles import RANK, at_least, lower_of, normalize
from app.config import Settings
from app.db import utcnow
from app.web.ratelimit import Limiter, app_limiter

COOKIE = "termpulse_session"
_USER_COUNT_TTL_S = 5.0
_TOUCH_EVERY = timedelta(seconds=60)  # last_seen_at is written at most this often per session
# /api/agent/: store agents authenticate each call with their own token (app.agents), not a user.
# /demo/inbox: the demo's own webhook channel posting to the demo (only mounted by `termpulse
# demo`), which must keep working if someone creates a user there.
PUBLIC_PREFIXES = (
    "/login",
    "/setup",
    "/healthz",
    "/readyz",
    "/metrics",
    "/static/",
    "/api/agent/",
    "/demo/inbox",
)


@dataclass(frozen=True)
class Identity:
    user_id: int | None
    username: str
    role: str
    via: str = "session"  # session, token, basic, open
    session_id: int | None = None
    token_id: int | None = None  # the API token's (its own rate limit)

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def can(self, minimum: str) -> bool:
        """Whether this role may do what `minimum` may (templates: who.can('support'))."""
        return at_least(self.role, minimum)


OPEN = Identity(None, "setup", "admin", via="open")  # no users yet


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def client_address(request: Request) -> str:
    return request.client.host if request.client else "?"


async def _users_exist(request: Request, session: AsyncSession) -> bool:
    cache = getattr(request.app.state, "user_count_cache", None) or [0.0, 0]
    if time.monotonic() - cache[0] > _USER_COUNT_TTL_S:
        cache = [time.monotonic(), await session.scalar(select(func.count()).select_from(User))]
        if cache[1]:  # only a yes is kept: the first user, made through any process, closes the
            request.app.state.user_count_cache = cache  # open mode in every process at once
    return cache[1] > 0


async def identify(request: Request) -> Identity | None:
    """The caller's identity, OPEN when no user exists yet, None when unknown."""
    async with request.app.state.db.sessionmaker() as session:
        if not await _users_exist(request, session):
            return OPEN
        cookie = request.cookies.get(COOKIE)
        authorization = request.headers.get("authorization", "")
        # A stale cookie beside a token (a script keeping cookies) falls through to the token.
        if cookie and (identity := await _session_identity(request, session, cookie)) is not None:
            return identity
        if authorization[:7].lower() == "bearer ":
            return await _token_identity(session, authorization[7:].strip())
        if authorization[:6].lower() == "basic " and _settings(request).basic_auth:
            user = await _basic_user(request, session, authorization[6:])
            if user is not None and password_allowed(_settings(request), user.role):
                await session.commit()  # the failure counters are in memory; nothing else
                return Identity(user.id, user.username, normalize(user.role), via="basic")
    return None


# --- sessions ---------------------------------------------------------------------------------


def _idle(settings: Settings) -> timedelta:
    return timedelta(hours=settings.session_idle_h)


# Every page asks it: built once (building a statement costs more CPU than running it), the
# columns it reads as a plain row (no ORM objects to load on every request).
_BY_TOKEN = (
    select(
        UserSession.id,
        UserSession.expires_at,
        UserSession.last_seen_at,
        User.id.label("user_id"),
        User.username,
        User.role,
        User.active,
    )
    .join(User, User.id == UserSession.user_id)
    .where(UserSession.token_hash == bindparam("token"))
)


async def _session_identity(request: Request, session: AsyncSession, cookie: str) -> Identity | None:
    # Whatever a client sends (non-ASCII, too long) is "no session", never an error.
    if not cookie.isascii() or len(cookie) > 200:
        return None
    found = (await session.execute(_BY_TOKEN, {"token": token_hash(cookie)})).first()
    if found is None:
        return None
    login = found
    now = utcnow()
    if login.expires_at <= now or login.last_seen_at + _idle(_settings(request)) <= now or not login.active:
        await session.execute(delete(UserSession).where(UserSession.id == login.id))
        await session.commit()
        return None
    if now - login.last_seen_at >= _TOUCH_EVERY:
        await session.execute(update(UserSession).where(UserSession.id == login.id).values(last_seen_at=now))
        await session.commit()
    return Identity(login.user_id, login.username, normalize(login.role), via="session", session_id=login.id)


async def start_session(session: AsyncSession, request: Request, user: User) -> str:
    """A new session for `user` (the caller commits); returns the cookie's value, shown once."""
    settings, now = _settings(request), utcnow()
    # Ended ones of anybody go on the way (no job needed).
    await session.execute(
        delete(UserSession).where(
            or_(UserSession.expires_at <= now, UserSession.last_seen_at <= now - _idle(settings))
        )
    )
    token = secrets.token_urlsafe(32)
    session.add(
        UserSession(
            token_hash=token_hash(token),
            user_id=user.id,
            created_at=now,
            last_seen_at=now,
            expires_at=now + timedelta(days=settings.session_max_days),
            user_agent=request.headers.get("user-agent", "")[:300],
            address=client_address(request)[:64],
        )
    )
    return token


def set_session_cookie(response: Response, request: Request, token: str) -> None:
    settings = _settings(request)
    response.set_cookie(
        COOKIE,
        token,
        max_age=int(settings.session_max_days * 86400),
        httponly=True,
        samesite="lax",
        secure=settings.cookie_secure or request.url.scheme == "https",
    )


async def end_session(session: AsyncSession, cookie: str | None) -> None:
    if cookie and cookie.isascii():
        await session.execute(delete(UserSession).where(UserSession.token_hash == token_hash(cookie)))


async def end_all_sessions(session: AsyncSession, user_id: int) -> int:
    """Ends every session of the user (password change, log out everywhere, disabled)."""
    result = await session.execute(delete(UserSession).where(UserSession.user_id == user_id))
    return int(getattr(result, "rowcount", 0) or 0)


async def sessions_of(session: AsyncSession, user_id: int) -> list[UserSession]:
    rows = await session.scalars(
        select(UserSession).where(UserSession.user_id == user_id).order_by(UserSession.last_seen_at.desc())
    )
    return list(rows)


# --- API tokens -------------------------------------------------------------------------------

TOKEN_PREFIX = "tp_"


async def _token_identity(session: AsyncSession, token: str) -> Identity | None:
    if not token.isascii() or len(token) > 200 or not token.startswith(TOKEN_PREFIX):
        return None
    found = (
        await session.execute(
            select(ApiToken, User)
            .join(User, User.id == ApiToken.user_id)
            .where(ApiToken.token_hash == token_hash(token))
        )
    ).first()
    if found is None:
        return None
    api_token, user = found
    now = utcnow()
    if api_token.revoked_at is not None or not user.active:
        return None
    if api_token.expires_at is not None and api_token.expires_at <= now:
        return None
    if api_token.last_used_at is None or now - api_token.last_used_at >= _TOUCH_EVERY:
        await session.execute(update(ApiToken).where(ApiToken.id == api_token.id).values(last_used_at=now))
        await session.commit()
    # Never above the user's role as it is now (a user moved down takes its tokens down).
    role = lower_of(normalize(api_token.role), normalize(user.role))
    return Identity(user.id, user.username, role, via="token", token_id=api_token.id)


async def create_token(
    session: AsyncSession, user: User, name: str, role: str, expires_at: datetime | None
) -> tuple[ApiToken, str]:
    """A new token for `user` (the caller commits): the row and the token, shown once."""
    role = normalize(role)
    if RANK[role] > RANK[normalize(user.role)]:
        raise ValueError(f"a token's role cannot be above its user's ({normalize(user.role)})")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(
        user_id=user.id,
        name=name,
        token_hash=token_hash(token),
        prefix=token[:10],
        role=role,
        created_at=utcnow(),
        expires_at=expires_at,
    )
    session.add(row)
    return row, token


# --- passwords --------------------------------------------------------------------------------

# Failed password checks (login form and HTTP Basic alike), per account and per client
# address: past either, no password is checked until the window lets one in again, and the
# answer is the same whether the account exists or not. Shared by every process on PostgreSQL
# (app.web.ratelimit).
FAILED_PER_ACCOUNT = (10, 15 * 60.0)
FAILED_PER_ADDRESS = (50, 15 * 60.0)


def _failures(request: Request) -> tuple[Limiter, Limiter]:
    state = request.app.state
    return (
        app_limiter(state, "login-account", *FAILED_PER_ACCOUNT),
        app_limiter(state, "login-address", *FAILED_PER_ADDRESS),
    )


async def locked_out_s(request: Request, username: str) -> float | None:
    """Seconds until a password may be tried again for this account from this client."""
    per_account, per_address = _failures(request)
    waits = [await per_account.wait_s(username.lower()), await per_address.wait_s(client_address(request))]
    return max((w for w in waits if w is not None), default=None)


async def password_user(request: Request, session: AsyncSession, username: str, password: str) -> User | None:
    """The user these credentials name, or None (wrong, unknown, disabled, or locked out)."""
    if await locked_out_s(request, username) is not None:
        return None
    user = await session.scalar(select(User).where(User.username == username))
    if await check_password(password, user.password_hash if user else None) and user and user.active:
        return user
    await count_failure(request, username)
    return None


async def count_failure(request: Request, account: str) -> None:
    """A failed secret (a password, a setup token) counts for the account and the address."""
    per_account, per_address = _failures(request)
    await per_account.hit(account.lower())
    await per_address.hit(client_address(request))


async def _basic_user(request: Request, session: AsyncSession, encoded: str) -> User | None:
    try:
        username, password = base64.b64decode(encoded).decode().split(":", 1)
    except (ValueError, UnicodeDecodeError):
        return None
    return await password_user(request, session, username, password)


async def current_identity(request: Request) -> Identity:
    identity: Identity | None = getattr(request.state, "identity", None) or await identify(request)
    if identity is None:
        raise HTTPException(401, "log in first", headers={"WWW-Authenticate": 'Bearer realm="TermPulse"'})
    return identity


async def require_admin(request: Request) -> Identity:
    identity = await current_identity(request)
    if not identity.is_admin:
        raise HTTPException(403, f"{identity.username} is not an admin")
    return identity
