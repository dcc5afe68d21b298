"""Who is asking: a signed session cookie (pages) or HTTP Basic (API clients).

Until the first user is created (`termpulse create-user`), TermPulse runs open, as a fresh
install or the demo; from then on every page but login and the health endpoints needs a user,
and changes to the inventory and provider accounts need an admin.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass

from fastapi import HTTPException, Request
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.models import User
from app.auth.passwords import check_password
from app.web.ratelimit import MovingWindow

COOKIE = "termpulse_session"
SESSION_TTL_S = 12 * 3600
_USER_COUNT_TTL_S = 5.0
# /api/agent/: store agents authenticate each call with their own token (app.agents), not a user.
PUBLIC_PREFIXES = ("/login", "/healthz", "/readyz", "/metrics", "/static/", "/api/agent/")


@dataclass(frozen=True)
class Identity:
    user_id: int | None
    username: str
    role: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


OPEN = Identity(None, "setup", "admin")  # no users yet


def _sign(secret: str, payload: str) -> str:
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


def session_cookie(secret: str, user_id: int) -> str:
    payload = f"{user_id}:{int(time.time()) + SESSION_TTL_S}"
    return f"{payload}:{_sign(secret, payload)}"


def _cookie_user_id(secret: str, value: str) -> int | None:
    # Whatever a client sends (non-ASCII, not numbers) is "no session", never an error.
    if not value.isascii():
        return None
    user_id, _, rest = value.partition(":")
    expires, _, signature = rest.partition(":")
    if not (user_id.isdecimal() and expires.isdecimal()):
        return None
    if not hmac.compare_digest(signature, _sign(secret, f"{user_id}:{expires}")):
        return None
    if int(expires) < time.time():
        return None
    return int(user_id)


async def _users_exist(request: Request, session: AsyncSession) -> bool:
    cache = getattr(request.app.state, "user_count_cache", None) or [0.0, 0]
    if time.monotonic() - cache[0] > _USER_COUNT_TTL_S:
        cache = [time.monotonic(), await session.scalar(select(func.count()).select_from(User))]
        request.app.state.user_count_cache = cache
    return cache[1] > 0


async def identify(request: Request) -> Identity | None:
    """The caller's identity, OPEN when no user exists yet, None when unknown."""
    async with request.app.state.db.sessionmaker() as session:
        if not await _users_exist(request, session):
            return OPEN
        user = None
        cookie = request.cookies.get(COOKIE)
        if cookie and (user_id := _cookie_user_id(request.app.state.settings.secret_key, cookie)):
            user = await session.get(User, user_id)
        elif request.headers.get("authorization", "").lower().startswith("basic "):
            user = await _basic_user(request, session, request.headers["authorization"][6:])
    return Identity(user.id, user.username, user.role) if user else None


# Failed password checks (login form and HTTP Basic alike), per account and per client
# address: past either, no password is checked until the window lets one in again, and the
# answer is the same whether the account exists or not.
# Kept per app (one process serves it).
FAILED_PER_ACCOUNT = (10, 15 * 60.0)
FAILED_PER_ADDRESS = (50, 15 * 60.0)


def _failures(request: Request) -> tuple[MovingWindow, MovingWindow]:
    state = request.app.state
    if not hasattr(state, "failed_logins"):
        state.failed_logins = (MovingWindow(*FAILED_PER_ACCOUNT), MovingWindow(*FAILED_PER_ADDRESS))
    windows: tuple[MovingWindow, MovingWindow] = state.failed_logins
    return windows


def locked_out_s(request: Request, username: str) -> float | None:
    """Seconds until a password may be tried again for this account from this client."""
    per_account, per_address = _failures(request)
    waits = [per_account.wait_s(username.lower()), per_address.wait_s(_address(request))]
    return max((w for w in waits if w is not None), default=None)


async def password_user(request: Request, session: AsyncSession, username: str, password: str) -> User | None:
    """The user these credentials name, or None (wrong, unknown, or locked out for a while)."""
    if locked_out_s(request, username) is not None:
        return None
    user = await session.scalar(select(User).where(User.username == username))
    if await check_password(password, user.password_hash if user else None):
        return user
    per_account, per_address = _failures(request)
    per_account.hit(username.lower())
    per_address.hit(_address(request))
    return None


def _address(request: Request) -> str:
    return request.client.host if request.client else "?"


async def _basic_user(request: Request, session: AsyncSession, encoded: str) -> User | None:
    try:
        username, password = base64.b64decode(encoded).decode().split(":", 1)
    except (ValueError, UnicodeDecodeError):
        return None
    return await password_user(request, session, username, password)


async def require_admin(request: Request) -> Identity:
    identity = getattr(request.state, "identity", None) or await identify(request)
    if identity is None:
        raise HTTPException(401, "log in first", headers={"WWW-Authenticate": 'Basic realm="TermPulse"'})
    if not identity.is_admin:
        raise HTTPException(403, f"{identity.username} is not an admin")
    return identity
