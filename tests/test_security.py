"""Which requests count as cross-origin (app.web.origin), and the API's JSON refusal."""

from __future__ import annotations

import pytest

from app.web.security import cross_origin


def _scope(method="POST", **headers):
    raw = [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()]
    return {"type": "http", "method": method, "scheme": "http", "path": "/x", "headers": raw}


@pytest.mark.parametrize(
    ("headers", "foreign"),
    [
        ({"host": "127.0.0.1:8000"}, None),  # no Origin/Referer: not a browser's cross-origin post
        ({"host": "127.0.0.1:8000", "origin": "http://127.0.0.1:8000"}, None),
        ({"host": "127.0.0.1:8000", "origin": "http://127.0.0.1:8001"}, "http://127.0.0.1:8001"),
        ({"host": "dash.example", "origin": "http://dash.example:80"}, None),  # default port
        ({"host": "dash.example", "origin": "https://dash.example"}, "https://dash.example"),  # scheme
        ({"host": "dash.example", "origin": "null"}, "null"),
        ({"host": "dash.example", "referer": "http://evil.example/page"}, "http://evil.example"),
        ({"host": "dash.example", "referer": "http://dash.example/admin/stores"}, None),
        (
            {
                "host": "dash.example",
                "x_forwarded_host": "tp.shop.example",
                "origin": "http://tp.shop.example",
            },
            None,
        ),
    ],
)
def test_cross_origin(headers, foreign):
    assert cross_origin(_scope(**headers)) == foreign


def test_safe_methods_are_never_refused():
    assert cross_origin(_scope("GET", host="a.example", origin="http://b.example")) is None


async def test_the_api_refuses_in_json(client):
    r = await client.post("/api/v1/stores", json={"code": "S-X"}, headers={"origin": "http://127.0.0.1:1"})
    assert r.status_code == 403 and "another origin" in r.json()["detail"]
    page = await client.post(
        "/admin/stores/new", data={"code": "S-X"}, headers={"origin": "http://127.0.0.1:1"}
    )
    assert page.status_code == 403 and "another origin" in page.text and "<" in page.text  # a page


async def test_every_answer_carries_the_security_headers(client):
    for path in ("/", "/api/v1/stores", "/static/app.css", "/healthz"):
        r = await client.get(path)
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"], path
        assert r.headers["x-frame-options"] == "DENY" and r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["referrer-policy"] == "same-origin" and "strict-transport-security" not in r.headers


async def test_unusable_input_is_a_422_never_a_500_nor_a_database_banner(client, db):
    huge = "99999999999999999999"
    for path in (f"/api/v1/stores?page={huge}", f"/admin/stores?page={huge}", f"/?page={huge}"):
        r = await client.get(path)
        assert r.status_code in (200, 422), (path, r.status_code)
    r = await client.post("/api/v1/stores", json={"code": "S-NUL", "name": "a\\u0000b"})
    assert r.status_code in (201, 422), r.text  # SQLite stores a NUL; PostgreSQL cannot: 422 then
    page = await client.post(
        "/admin/stores/new", data={"code": "S-NUL2", "name": "a\\x00b", "timezone": "UTC"}
    )
    assert page.status_code in (303, 422) and "database cannot be reached" not in page.text


async def test_a_malformed_session_cookie_is_no_session(client, db):
    from tests.test_auth import add_user

    await add_user(db, "root", "admin")
    client._transport.app.state.user_count_cache = [0.0, 0]
    for cookie in ("é:1:x", "1:notanumber:sig", "::", "x" * 5000, "1:99999999999999999999999:00"):
        raw = f"termpulse_session={cookie}".encode()  # as a client may send it, non-ASCII included
        r = await client.get("/admin/stores", headers=[(b"cookie", raw)])
        assert r.status_code == 303 and r.headers["location"].startswith("/login"), cookie
