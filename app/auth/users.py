"""The Users page (admins): create users, change their role, disable or enable them, reset a
password, end their sessions, revoke their API tokens. The command line has create-user.

Every change is in the audit log. The last active admin cannot be demoted or disabled (nobody
could manage users any more), not by SSO groups either. A user who signs in with SSO has no
password here: a reset is refused."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth import audit
from app.auth.models import ApiToken, AuditEvent, OidcIdentity, User, UserSession
from app.auth.passwords import hash_password
from app.auth.roles import ROLES, WHAT_EACH_MAY_DO, normalize
from app.auth.sessions import Identity, end_all_sessions, require_admin, sessions_of
from app.db import utcnow
from app.errors import NotFound
from app.web.deps import SessionDep
from app.web.templating import render

router = APIRouter(prefix="/admin/users", include_in_schema=False, dependencies=[Depends(require_admin)])

MIN_PASSWORD = 8
# An SSO sign-in whose groups would demote the last active admin keeps the admin role.
ROLE_KEPT = "user role kept"
LAST_ADMIN_KEPT = "kept admin: the last active admin stays (make another admin first)"


async def _user(session: AsyncSession, user_id: int) -> User:
    user = await session.get(User, user_id)
    if user is None:
        raise NotFound("user", user_id)
    return user


async def other_active_admins(session: AsyncSession, user: User) -> int:
    count = await session.scalar(
        select(func.count())
        .select_from(User)
        .where(User.role == "admin", User.active.is_(True), User.id != user.id)
    )
    return int(count or 0)


def _password_error(password: str) -> str | None:
    return f"At least {MIN_PASSWORD} characters." if len(password) < MIN_PASSWORD else None


async def _list_page(
    request: Request, session: AsyncSession, status_code: int = 200, **context: object
) -> Response:
    users = list(await session.scalars(select(User).order_by(User.username)))
    counts = {
        user_id: int(n)
        for user_id, n in await session.execute(
            select(UserSession.user_id, func.count()).group_by(UserSession.user_id)
        )
    }
    live_tokens = {
        user_id: int(n)
        for user_id, n in await session.execute(
            select(ApiToken.user_id, func.count())
            .where(ApiToken.revoked_at.is_(None))
            .group_by(ApiToken.user_id)
        )
    }
    values: dict[str, object] = {
        "users": users,
        "sessions": counts,
        "tokens": live_tokens,
        "sso": set(await session.scalars(select(OidcIdentity.user_id))),
        "roles": ROLES,
        "what": WHAT_EACH_MAY_DO,
        "values": {"role": "viewer"},
        "errors": {},
        "message": _message(request),
    }
    values.update(context)
    return render(request, "auth/users.html", values, status_code=status_code)


@router.get("")
async def users_page(request: Request, session: SessionDep) -> Response:
    return await _list_page(request, session)


@router.post("")
async def create_user(request: Request, session: SessionDep) -> Response:
    identity: Identity = request.state.identity
    form = await request.form()
    username, role, password = (str(form.get(k, "")) for k in ("username", "role", "password"))
    username = username.strip()
    errors: dict[str, str] = {}
    if not username or len(username) > 100 or any(not c.isprintable() for c in username):
        errors["username"] = "A user name of 1 to 100 printable characters."
    elif await session.scalar(select(User.id).where(User.username == username)):
        errors["username"] = f"{username} already exists."
    try:
        role = normalize(role)
    except ValueError:
        errors["role"] = f"One of {', '.join(ROLES)}."
    if message := _password_error(password):
        errors["password"] = message
    if errors:
        values = {"username": username, "role": role}
        return await _list_page(request, session, 422, errors=errors, values=values)
    session.add(
        User(username=username, role=role, password_hash=await asyncio.to_thread(hash_password, password))
    )
    await audit.record(session, request, identity, "user created", target=username, detail=f"role {role}")
    await session.commit()
    request.app.state.user_count_cache = None  # the first user closes the open mode at once
    return RedirectResponse("/admin/users?m=created", status_code=303)


async def _user_page(
    request: Request, session: AsyncSession, user: User, status_code: int = 200, **context: object
) -> Response:
    tokens = list(
        await session.scalars(select(ApiToken).where(ApiToken.user_id == user.id).order_by(ApiToken.id))
    )
    values: dict[str, object] = {
        "user": user,
        "role": normalize(user.role),
        "logins": await sessions_of(session, user.id),
        "tokens": tokens,
        "sso": await session.scalar(select(OidcIdentity).where(OidcIdentity.user_id == user.id)),
        "role_kept": await _role_kept(session, user),
        "roles": ROLES,
        "what": WHAT_EACH_MAY_DO,
        "now": utcnow(),
        "errors": {},
        "message": _message(request),
    }
    values.update(context)
    return render(request, "auth/user.html", values, status_code=status_code)


async def _role_kept(session: AsyncSession, user: User) -> AuditEvent | None:
    """The last role entry for this user if it kept the admin role against the SSO groups."""
    last = await session.scalar(
        select(AuditEvent)
        .where(AuditEvent.target == user.username, AuditEvent.action.in_((ROLE_KEPT, "user role changed")))
        .order_by(AuditEvent.id.desc())
        .limit(1)
    )
    return last if last is not None and last.action == ROLE_KEPT else None


@router.get("/{user_id}")
async def user_page(request: Request, user_id: int, session: SessionDep) -> Response:
    return await _user_page(request, session, await _user(session, user_id))


# What a page says after a change (?m=<code>: a link cannot make the page say anything else).
MESSAGES = {
    "created": "User created.",
    "role": "Role changed.",
    "enabled": "Enabled.",
    "disabled": "Disabled: its sessions ended and its API tokens stopped working.",
    "password": "Password reset: every session of this user ended.",
    "logout": "Every session of this user ended.",
}


def _message(request: Request) -> str | None:
    return MESSAGES.get(request.query_params.get("m", ""))


def _back(user: User, code: str) -> Response:
    return RedirectResponse(f"/admin/users/{user.id}?m={code}", status_code=303)


@router.post("/{user_id}/role")
async def change_role(request: Request, user_id: int, session: SessionDep) -> Response:
    user = await _user(session, user_id)
    form = await request.form()
    try:
        role = normalize(str(form.get("role", "")))
    except ValueError:
        return await _user_page(request, session, user, 422, errors={"role": f"One of {', '.join(ROLES)}."})
    was = normalize(user.role)
    if was == "admin" and role != "admin" and not await other_active_admins(session, user):
        error = "This is the last active admin: make another admin first."
        return await _user_page(request, session, user, 409, errors={"role": error})
    user.role = role
    await audit.record(
        session,
        request,
        request.state.identity,
        "user role changed",
        target=user.username,
        detail=f"{was} -> {role}",
    )
    await session.commit()
    return _back(user, "role")


@router.post("/{user_id}/active")
async def set_active(request: Request, user_id: int, session: SessionDep) -> Response:
    user = await _user(session, user_id)
    form = await request.form()
    active = str(form.get("active", "")) == "yes"
    if not active and normalize(user.role) == "admin" and not await other_active_admins(session, user):
        error = "This is the last active admin: it cannot be disabled."
        return await _user_page(request, session, user, 409, errors={"active": error})
    user.active = active
    ended = 0 if active else await end_all_sessions(session, user.id)
    action = "user enabled" if active else "user disabled"
    detail = "" if active else f"{ended} session(s) ended; API tokens stop working"
    await audit.record(session, request, request.state.identity, action, target=user.username, detail=detail)
    await session.commit()
    return _back(user, "enabled" if active else "disabled")


@router.post("/{user_id}/password")
async def reset_password(request: Request, user_id: int, session: SessionDep) -> Response:
    user = await _user(session, user_id)
    form = await request.form()
    password = str(form.get("password", ""))
    if linked := await session.scalar(select(OidcIdentity).where(OidcIdentity.user_id == user.id)):
        refusal = (
            f"{user.username} signs in with SSO at {linked.issuer}: TermPulse keeps no password for them."
        )
        return await _user_page(request, session, user, 409, errors={"password": refusal})
    if message := _password_error(password):
        return await _user_page(request, session, user, 422, errors={"password": message})
    user.password_hash = await asyncio.to_thread(hash_password, password)  # scrypt off the event loop
    ended = await end_all_sessions(session, user.id)
    await audit.record(
        session,
        request,
        request.state.identity,
        "password reset",
        target=user.username,
        detail=f"{ended} session(s) ended",
    )
    await session.commit()
    return _back(user, "password")


@router.post("/{user_id}/logout")
async def end_sessions(request: Request, user_id: int, session: SessionDep) -> Response:
    user = await _user(session, user_id)
    ended = await end_all_sessions(session, user.id)
    await audit.record(
        session,
        request,
        request.state.identity,
        "sessions ended",
        target=user.username,
        detail=f"{ended} session(s)",
    )
    await session.commit()
    return _back(user, "logout")
