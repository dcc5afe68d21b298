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
from app.auth.passwords import verify_password

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
    try:
        user_id, expires, signature = value.split(":")
    except ValueError:
        return None
    if (
        not hmac.compare_digest(signature, _sign(secret, f"{user_id}:{expires}"))
        or int(expires) < time.time()
    ):
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
            user = await _basic_user(session, request.headers["authorization"][6:])
    return Identity(user.id, user.username, user.role) if user else None


async def _basic_user(session: AsyncSession, encoded: str) -> User | None:
    try:
        username, password = base64.b64decode(encoded).decode().split(":", 1)
    except (ValueError, UnicodeDecodeError):
        return None
    user = await session.scalar(select(User).where(User.username == username))
    return user if user and verify_password(password, user.password_hash) else None


async def require_admin(request: Request) -> Identity:
    identity = getattr(request.state, "identity", None) or await identify(request)
    if identity is None:
        raise HTTPException(401, "log in first", headers={"WWW-Authenticate": 'Basic realm="TermPulse"'})
    if not identity.is_admin:
        raise HTTPException(403, f"{identity.username} is not an admin")
    return identity
