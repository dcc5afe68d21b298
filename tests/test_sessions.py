"""Server-side sessions: the cookie carries a random id whose hash alone is stored; logout, a
password change and "log out everywhere" end sessions (a replayed cookie is refused); idle and
absolute expiry; Secure over HTTPS or when configured. Both databases."""

from datetime import timedelta

import httpx
from sqlalchemy import select, update

from app.auth.models import User, UserSession
from app.auth.sessions import token_hash
from app.db import utcnow
from app.main import create_app
from tests.html import dom, one, text
from tests.test_auth import add_user

COOKIE = "termpulse_session"


async def login(client, name, password="correct horse"):
    done = await client.post(
        "/login",
        data={"username": name, "password": password, "next": "/account"},
        headers={"User-Agent": "pytest-ua"},
    )
    assert done.status_code == 303, done.text
    return done.cookies[COOKIE]


async def as_cookie(client, cookie, path="/account"):
    client.cookies.clear()
    return await client.get(path, headers={"Cookie": f"{COOKIE}={cookie}"})


async def sessions(db):
    async with db.sessionmaker() as session:
        return list(await session.scalars(select(UserSession).order_by(UserSession.id)))


async def test_the_cookie_is_a_random_id_stored_only_as_its_hash(db, client):
    await add_user(db, "root", "admin")
    client._transport.app.state.user_count_cache = [0.0, 0]
    first, second = await login(client, "root"), await login(client, "root")
    assert first != second and len(first) >= 40 and "root" not in first
    rows = await sessions(db)
    assert [r.token_hash for r in rows] == [token_hash(first), token_hash(second)]
    assert rows[0].user_agent == "pytest-ua" and rows[0].address == "127.0.0.1"
    assert rows[0].expires_at - rows[0].created_at == timedelta(days=7)
    page = await as_cookie(client, first)
    assert page.status_code == 200 and "Logged in as root (admin)" in text(dom(page))
    assert len(dom(page).cssselect("#sessions-h ~ table tbody tr")) == 2
    # The old signed cookies (user_id:expiry:signature) mean nothing any more.
    assert (await as_cookie(client, "1:99999999999:" + "0" * 64)).status_code == 303


async def test_logout_ends_the_session_so_a_replayed_cookie_is_refused(db, client):
    await add_user(db, "root", "admin")
    client._transport.app.state.user_count_cache = [0.0, 0]
    cookie, other = await login(client, "root"), await login(client, "root")
    client.cookies.clear()
    out = await client.post("/logout", headers={"Cookie": f"{COOKIE}={cookie}"})
    assert out.status_code == 303 and out.headers["location"] == "/login"
    replayed = await as_cookie(client, cookie, "/admin/stores")
    assert replayed.status_code == 303 and replayed.headers["location"].startswith("/login")
    assert (await as_cookie(client, other)).status_code == 200  # another browser stays in
    assert [r.token_hash for r in await sessions(db)] == [token_hash(other)]


async def test_idle_and_absolute_expiry(db, client):
    await add_user(db, "root", "admin")
    client._transport.app.state.user_count_cache = [0.0, 0]
    idle, old, fresh = await login(client, "root"), await login(client, "root"), await login(client, "root")
    now = utcnow()
    async with db.sessionmaker() as session:
        await session.execute(
            update(UserSession)
            .where(UserSession.token_hash == token_hash(idle))
            .values(last_seen_at=now - timedelta(hours=8, minutes=1))
        )
        await session.execute(
            update(UserSession)
            .where(UserSession.token_hash == token_hash(old))
            .values(expires_at=now - timedelta(seconds=1))
        )
        await session.commit()
    assert (await as_cookie(client, idle)).status_code == 303
    assert (await as_cookie(client, old)).status_code == 303
    assert (await as_cookie(client, fresh)).status_code == 200
    assert [r.token_hash for r in await sessions(db)] == [token_hash(fresh)]  # ended ones removed


async def test_a_used_session_stays_alive_past_the_idle_time_from_its_login(db, client):
    await add_user(db, "root", "admin")
    client._transport.app.state.user_count_cache = [0.0, 0]
    cookie = await login(client, "root")
    seven_hours_ago = utcnow() - timedelta(hours=7)
    async with db.sessionmaker() as session:
        await session.execute(update(UserSession).values(last_seen_at=seven_hours_ago))
        await session.commit()
    assert (await as_cookie(client, cookie)).status_code == 200  # used now: last seen moves on
    assert (await sessions(db))[0].last_seen_at > seven_hours_ago + timedelta(hours=6)


async def test_a_password_change_ends_every_other_session(db, client):
    await add_user(db, "root", "admin")
    client._transport.app.state.user_count_cache = [0.0, 0]
    here, elsewhere = await login(client, "root"), await login(client, "root")
    client.cookies.clear()
    wrong = await client.post(
        "/account/password",
        data={"current": "nope", "new": "new password 1", "again": "new password 1"},
        headers={"Cookie": f"{COOKIE}={here}"},
    )
    assert wrong.status_code == 422 and "not your current password" in text(
        one(dom(wrong), "#pw-current-error")
    )
    differ = await client.post(
        "/account/password",
        data={"current": "correct horse", "new": "new password 1", "again": "new password 2"},
        headers={"Cookie": f"{COOKIE}={here}"},
    )
    assert differ.status_code == 422 and "differ" in text(one(dom(differ), "#pw-again-error"))
    assert (await as_cookie(client, elsewhere)).status_code == 200  # nothing changed yet
    changed = await client.post(
        "/account/password",
        data={"current": "correct horse", "new": "new password 1", "again": "new password 1"},
        headers={"Cookie": f"{COOKIE}={here}"},
    )
    assert changed.status_code == 200 and "every other session of yours has ended" in changed.text
    new_cookie = changed.cookies[COOKIE]
    assert (await as_cookie(client, elsewhere)).status_code == 303
    assert (await as_cookie(client, here)).status_code == 303
    assert (await as_cookie(client, new_cookie)).status_code == 200
    await login(client, "root", "new password 1")


async def test_log_out_everywhere(db, client):
    await add_user(db, "root", "admin")
    await add_user(db, "vera", "viewer")
    client._transport.app.state.user_count_cache = [0.0, 0]
    a, b, vera = await login(client, "root"), await login(client, "root"), await login(client, "vera")
    client.cookies.clear()
    out = await client.post("/account/logout-everywhere", headers={"Cookie": f"{COOKIE}={a}"})
    assert out.status_code == 303 and out.headers["location"] == "/login"
    assert (await as_cookie(client, a)).status_code == 303
    assert (await as_cookie(client, b)).status_code == 303
    assert (await as_cookie(client, vera)).status_code == 200  # another user's are not touched


async def test_a_disabled_user_loses_its_sessions_at_once(db, client):
    await add_user(db, "vera", "viewer")
    client._transport.app.state.user_count_cache = [0.0, 0]
    cookie = await login(client, "vera")
    async with db.sessionmaker() as session:
        await session.execute(update(User).values(active=False))
        await session.commit()
    assert (await as_cookie(client, cookie)).status_code == 303
    refused = await client.post("/login", data={"username": "vera", "password": "correct horse", "next": "/"})
    assert refused.status_code == 401 and "Wrong user name or password" in refused.text


async def test_the_cookie_is_secure_over_https_or_when_configured(db, settings):
    await add_user(db, "root", "admin")
    for base_url, forced, secure in (
        ("http://testserver", False, False),
        ("https://testserver", False, True),
        ("http://testserver", True, True),
    ):
        app = create_app(settings.model_copy(update={"cookie_secure": forced}), database=db)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url) as http:
            done = await http.post(
                "/login", data={"username": "root", "password": "correct horse", "next": "/"}
            )
        header = done.headers["set-cookie"].lower()
        assert "httponly" in header and "samesite=lax" in header
        assert ("; secure" in header) is secure, (base_url, forced, header)
