"""Which requests count as cross-origin (app.web.origin), and the API's JSON refusal."""

from __future__ import annotations

import pytest

from app.web.origin import cross_origin


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
