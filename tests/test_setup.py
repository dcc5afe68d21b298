"""First run: a fresh install (termpulse serve, no user yet) serves nothing but the setup page,
which needs the one-time token printed in the server log; the demo (no token) stays open and
says so on every page. Both databases."""

import logging

import httpx
from sqlalchemy import select

from app.auth.models import AuditEvent, User
from app.auth.routes import announce_setup
from app.main import create_app
from tests.html import dom, one, text
from tests.test_auth import add_user

TOKEN = "one-time-setup-token"


def app_client(db, settings, token=TOKEN):
    app = create_app(settings, database=db, setup_token=token)
    return app, httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


async def test_a_fresh_install_serves_only_the_setup_page(db, settings):
    app, http = app_client(db, settings)
    async with http:
        for path in ("/", "/admin/stores", "/terminals", "/account"):
            page = await http.get(path)
            assert page.status_code == 303 and page.headers["location"] == "/setup", path
        api = await http.get("/api/v1/stores")
        assert api.status_code == 503 and "not set up yet" in api.json()["detail"]
        assert (await http.post("/api/v1/stores", json={"code": "S-1", "name": "x"})).status_code == 503
        assert (await http.get("/healthz")).status_code == 200
        form = dom(await http.get("/setup"))
        assert one(form, "#f-token") is not None and "termpulse create-user" in text(form)

        wrong = await http.post(
            "/setup",
            data={"token": "guess", "username": "root", "password": "long enough", "again": "long enough"},
        )
        assert wrong.status_code == 422 and "not the setup token" in text(one(dom(wrong), "#e-token"))
        short = await http.post(
            "/setup", data={"token": TOKEN, "username": "root", "password": "x", "again": "x"}
        )
        assert short.status_code == 422 and "At least 8" in text(one(dom(short), "#e-password"))
        made = await http.post(
            "/setup",
            data={"token": TOKEN, "username": "root", "password": "long enough", "again": "long enough"},
        )
        assert made.status_code == 303 and made.headers["location"] == "/"
        assert app.state.setup_token is None
        page = await http.get("/")
        assert page.status_code == 200 and "root (admin)" in text(dom(page))
        assert not dom(page).cssselect(".open-mode")
        # One time: the token is spent, the page sends to the login.
        http.cookies.clear()
        again = await http.post(
            "/setup",
            data={"token": TOKEN, "username": "evil", "password": "long enough", "again": "long enough"},
        )
        assert again.status_code == 303 and again.headers["location"] == "/login"
        assert (await http.get("/")).headers["location"] == "/login?next=/"
    async with db.sessionmaker() as session:
        assert [(u.username, u.role) for u in await session.scalars(select(User))] == [("root", "admin")]
        actions = [
            (e.action, e.outcome) for e in await session.scalars(select(AuditEvent).order_by(AuditEvent.id))
        ]
    assert actions == [("setup", "failed"), ("first user created", "ok")]


async def test_create_user_instead_of_the_setup_page(db, settings):
    app, http = app_client(db, settings)
    async with http:
        assert (await http.get("/")).headers["location"] == "/setup"
        await add_user(db, "root", "admin")  # termpulse create-user, meanwhile
        app.state.user_count_cache = [0.0, 0]
        assert (await http.get("/")).headers["location"] == "/login?next=/"
        assert (await http.get("/setup")).headers["location"] == "/login"
        assert app.state.setup_token is None


async def test_the_token_is_in_the_log_while_no_user_exists(db, caplog):
    with caplog.at_level(logging.WARNING, logger="app.auth.routes"):
        await announce_setup(db, TOKEN)
    assert TOKEN in caplog.text and "/setup" in caplog.text and "termpulse create-user" in caplog.text
    caplog.clear()
    await add_user(db, "root", "admin")
    await announce_setup(db, TOKEN)
    assert TOKEN not in caplog.text


async def test_open_mode_says_so_on_every_page(db, client):
    page = dom(await client.get("/"))
    assert "no user exists, so everyone who can reach this address" in text(one(page, ".open-mode"))
