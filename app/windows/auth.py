"""Who may change maintenance windows and trading hours: admins (every other role reads), as
the rule table says (app.auth.rules)."""

from __future__ import annotations

from fastapi import HTTPException, Request

from app.auth.sessions import Identity, identify

WRITERS = ("admin",)


async def require_operator(request: Request) -> Identity:
    identity = getattr(request.state, "identity", None) or await identify(request)
    if identity is None:
        raise HTTPException(401, "log in first", headers={"WWW-Authenticate": 'Basic realm="TermPulse"'})
    if identity.role not in WRITERS:
        raise HTTPException(403, f"{identity.username} may not change maintenance windows (admins may)")
    return identity
