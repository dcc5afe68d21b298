"""API tokens per user for `Authorization: Bearer`: shown once, stored hashed, a role no higher
than the user's, expiry, last used, revocable; HTTP Basic off unless the setting turns it on.
Both databases."""

from datetime import timedelta

import httpx
from sqlalchemy import select, update

from app.auth.models import ApiToken, User
from app.auth.sessions import token_hash
from app.db import utcnow
from app.main import create_app
from tests.html import dom, one, text
from tests.test_auth import add_user, basic
from tests.test_sessions import COOKIE, login


async def make_token(client, name, role, days="30", password="correct horse"):
    cookie = await login(client, name, password)
    client.cookies.clear()
    page = await client.post(
        "/account/tokens",
        data={"name": f"{role} script", "role": role, "days": days},
        headers={"Cookie": f"{COOKIE}={cookie}"},
    )
    return page


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


async def test_a_token_is_shown_once_stored_hashed_and_acts_with_its_role(db, client):
    await add_user(db, "root", "admin")
    client._transport.app.state.user_count_cache = [0.0, 0]
    page = await make_token(client, "root", "viewer")
    assert page.status_code == 200
    token = text(one(dom(page), "#token-value"))
    assert token.startswith("tp_") and len(token) > 40
    async with db.sessionmaker() as session:
        row = await session.scalar(select(ApiToken))
    assert row.token_hash == token_hash(token) and row.prefix == token[:10] and row.role == "viewer"
    assert row.last_used_at is None and row.expires_at - utcnow() > timedelta(days=29)
    # Shown once: the account page lists it by its first characters, never whole.
    cookie = await login(client, "root")
    client.cookies.clear()
    again = await client.get("/account", headers={"Cookie": f"{COOKIE}={cookie}"})
    assert token not in again.text and f"{token[:10]}…" in text(one(dom(again), f"#token-{row.id}"))

    assert (await client.get("/api/v1/stores", headers=bearer(token))).status_code == 200
    refused = await client.post("/api/v1/stores", json={"code": "S-1", "name": "x"}, headers=bearer(token))
    assert refused.status_code == 403 and refused.json() == {"detail": "root is not an admin"}
    async with db.sessionmaker() as session:
        assert (await session.scalar(select(ApiToken))).last_used_at is not None

    admin_token = text(one(dom(await make_token(client, "root", "admin")), "#token-value"))
    made = await client.post("/api/v1/stores", json={"code": "S-1", "name": "x"}, headers=bearer(admin_token))
    assert made.status_code == 201
    stale = {**bearer(admin_token), "Cookie": "termpulse_session=ended-long-ago"}
    assert (await client.get("/api/v1/stores", headers=stale)).status_code == 200  # the token counts
    for junk in ("tp_nope", "x" * 500, "tp_é", ""):  # non-ASCII as a client may send it
        answer = await client.get("/api/v1/stores", headers=[(b"authorization", f"Bearer {junk}".encode())])
        assert answer.status_code == 401, junk


async def test_a_token_is_never_above_its_user(db, client):
    await add_user(db, "sam", "support")
    client._transport.app.state.user_count_cache = [0.0, 0]
    above = await make_token(client, "sam", "admin")
    assert above.status_code == 422 and "At most your own role (support)" in above.text
    token = text(one(dom(await make_token(client, "sam", "support")), "#token-value"))
    assert (
        await client.post("/api/v1/terminals/x/check", headers=bearer(token))
    ).status_code == 404  # allowed
    async with db.sessionmaker() as session:  # sam moved down: the token follows
        await session.execute(update(User).values(role="viewer"))
        await session.commit()
    assert (await client.post("/api/v1/terminals/x/check", headers=bearer(token))).status_code == 403


async def test_expired_revoked_or_disabled_tokens_are_refused(db, client):
    await add_user(db, "root", "admin")
    await add_user(db, "other", "admin")
    client._transport.app.state.user_count_cache = [0.0, 0]
    expiring = text(one(dom(await make_token(client, "root", "viewer", days="7")), "#token-value"))
    revoked = text(one(dom(await make_token(client, "root", "viewer", days="")), "#token-value"))
    async with db.sessionmaker() as session:
        await session.execute(
            update(ApiToken)
            .where(ApiToken.token_hash == token_hash(expiring))
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
        await session.commit()
        revoked_id = await session.scalar(
            select(ApiToken.id).where(ApiToken.token_hash == token_hash(revoked))
        )
    assert (await client.get("/api/v1/stores", headers=bearer(expiring))).status_code == 401
    assert (await client.get("/api/v1/stores", headers=bearer(revoked))).status_code == 200  # never expires

    # Another user cannot revoke it; its own user can.
    other = await login(client, "other")
    client.cookies.clear()
    root = await login(client, "root")
    client.cookies.clear()
    async with db.sessionmaker() as session:
        await session.execute(update(User).where(User.username == "other").values(role="viewer"))
        await session.commit()
    foreign = await client.post(
        f"/account/tokens/{revoked_id}/revoke", headers={"Cookie": f"{COOKIE}={other}"}
    )
    assert foreign.status_code == 404
    assert (await client.get("/api/v1/stores", headers=bearer(revoked))).status_code == 200
    own = await client.post(f"/account/tokens/{revoked_id}/revoke", headers={"Cookie": f"{COOKIE}={root}"})
    assert own.status_code == 200 and "revoked" in text(one(dom(own), f"#token-{revoked_id}"))
    assert (await client.get("/api/v1/stores", headers=bearer(revoked))).status_code == 401

    live = text(one(dom(await make_token(client, "root", "viewer")), "#token-value"))
    assert (await client.get("/api/v1/stores", headers=bearer(live))).status_code == 200
    async with db.sessionmaker() as session:
        await session.execute(update(User).where(User.username == "root").values(active=False))
        await session.commit()
    assert (await client.get("/api/v1/stores", headers=bearer(live))).status_code == 401


async def test_http_basic_is_off_by_default(db, settings):
    await add_user(db, "root", "admin")
    assert settings.basic_auth  # the tests' settings turn it on (tests/conftest.py)
    app = create_app(settings.model_copy(update={"basic_auth": False}), database=db)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as http:
        refused = await http.get("/api/v1/stores", headers=basic("root"))
        assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Bearer")
        assert "Authorization: Bearer" in refused.json()["detail"]
