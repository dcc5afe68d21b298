"""CSRF tokens (issue 12, item 4): a state-changing request authenticated by the session cookie
carries the session's token, as a hidden form field or htmx's X-CSRF-Token header (hx-headers
on <body>); without it, or with another one, a 403 page (JSON under /api) and nothing done.
API tokens and HTTP Basic need none. On top of the Origin/Referer check (tests/test_security.py)."""

from __future__ import annotations

import json

import httpx
import pytest
from sqlalchemy import func, select

from app.auth.models import ApiToken
from app.main import create_app
from tests.html import dom, one
from tests.html import select as select_css
from tests.test_auth import add_user, basic


@pytest.fixture
async def browser(db, settings):
    """A client that logs in with the session cookie and sends only what a test gives it."""
    await add_user(db, "ada", "admin")
    app = create_app(settings, database=db, run_worker=False)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as http:
        done = await http.post("/login", data={"username": "ada", "password": "correct horse", "next": "/"})
        assert done.status_code == 303, done.text
        yield http


async def tokens(db) -> int:
    async with db.sessionmaker() as session:
        return await session.scalar(select(func.count()).select_from(ApiToken))


def form_token(page: httpx.Response, form: str) -> str:
    return one(dom(page), f'{form} input[name="csrf_token"]').get("value")


def header_token(page: httpx.Response) -> str:
    return json.loads(one(dom(page), "body").get("hx-headers"))["X-CSRF-Token"]


NEW_TOKEN = {"name": "ci", "role": "viewer", "days": "30"}


async def test_a_plain_form_needs_its_hidden_token(db, browser):
    page = await browser.get("/account")
    token = form_token(page, 'form[action="/account/tokens"]')
    assert len(token) == 64 and header_token(page) == token  # one token per session, both ways
    # Every POST form of the page carries it (logout in the top bar too).
    posts = select_css(dom(page), 'form[method="post"]')
    assert len(posts) >= 3 and all(select_css(f, 'input[name="csrf_token"]') for f in posts)

    for bad in ({}, {"csrf_token": "0" * 64}, {"csrf_token": ""}, {"csrf_token": "é"}):
        refused = await browser.post("/account/tokens", data={**NEW_TOKEN, **bad})
        assert refused.status_code == 403 and "CSRF token" in refused.text, bad
        assert "text/html" in refused.headers["content-type"]
    assert await tokens(db) == 0  # nothing was done

    done = await browser.post("/account/tokens", data={**NEW_TOKEN, "csrf_token": token})
    assert done.status_code == 200 and "Token “ci” created" in done.text
    assert await tokens(db) == 1


async def test_htmx_sends_it_in_its_header(db, browser):
    token = header_token(await browser.get("/account"))
    htmx = {"HX-Request": "true"}
    refused = await browser.post("/account/tokens", data=NEW_TOKEN, headers=htmx)
    assert refused.status_code == 403 and "CSRF token" in refused.text
    wrong = await browser.post("/account/tokens", data=NEW_TOKEN, headers={**htmx, "X-CSRF-Token": "x" * 64})
    assert wrong.status_code == 403
    assert await tokens(db) == 0
    done = await browser.post("/account/tokens", data=NEW_TOKEN, headers={**htmx, "X-CSRF-Token": token})
    assert done.status_code == 200 and await tokens(db) == 1


async def test_a_multipart_form_and_the_api_with_the_cookie(db, browser):
    token = header_token(await browser.get("/account"))
    files = {"files": ("stores.csv", b"code,name\nS-1,Shop\n", "text/csv")}
    refused = await browser.post("/admin/import/preview", files=files)
    assert refused.status_code == 403
    passed = await browser.post("/admin/import/preview", files=files, data={"csrf_token": token})
    assert passed.status_code != 403, passed.text  # the import's own answer (its preview)
    api = await browser.post("/api/v1/stores", json={"code": "S-2", "name": "Shop"})
    assert api.status_code == 403 and "CSRF token" in api.json()["detail"]
    ok = await browser.post(
        "/api/v1/stores", json={"code": "S-2", "name": "Shop"}, headers={"X-CSRF-Token": token}
    )
    assert ok.status_code == 201, ok.text


async def test_another_sessions_token_is_refused(db, browser, settings):
    mine = header_token(await browser.get("/account"))
    app = create_app(settings, database=db, run_worker=False)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as other:
        await other.post("/login", data={"username": "ada", "password": "correct horse", "next": "/"})
        theirs = header_token(await other.get("/account"))
        assert theirs != mine
        refused = await other.post("/account/tokens", data={**NEW_TOKEN, "csrf_token": mine})
        assert refused.status_code == 403


async def test_tokens_and_basic_need_none(db, client):
    """API clients are no browser sending a cookie on its own: Basic and Bearer go through."""
    await add_user(db, "bob", "admin")
    done = await client.post("/api/v1/stores", json={"code": "S-3", "name": "Shop"}, headers=basic("bob"))
    assert done.status_code == 201, done.text
