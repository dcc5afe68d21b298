"""The websocket check (the opening handshake) against simulated services on loopback: a
WebSocket service such as Torgsoft's JSON service on 3000, and what else may answer there."""

import pytest

from app.checks.probes import run_probe


async def test_a_websocket_service_accepts_the_upgrade(ctx, terminal):
    t = await terminal("websocket", port=3000)
    r = await run_probe("websocket", f"ws://{t.host}:3000/", {}, 1.0, ctx)
    assert r.outcome == "ok", r
    assert [s["step"] for s in r.steps] == ["connect", "handshake"]
    assert r.detail == "HTTP 101 Switching Protocols"


async def test_a_printer_page_refuses_the_upgrade(ctx, terminal):
    t = await terminal("http", port=3000)
    r = await run_probe("websocket", f"ws://{t.host}:3000/", {}, 1.0, ctx)
    assert (r.outcome, r.diagnosis) == ("fail", "ws_rejected"), r
    d = r.explain()
    assert "answered HTTP 200 instead of accepting the WebSocket upgrade" in d.cause
    assert d.owner == "terminal" and "WebSocket (ECR) service" in d.fix


async def test_a_service_that_is_not_websocket(ctx, terminal):
    t = await terminal("tcp", port=3000)  # echoes our request back: not an HTTP answer
    r = await run_probe("websocket", f"ws://{t.host}:3000/", {}, 1.0, ctx)
    assert (r.outcome, r.diagnosis) == ("fail", "ws_handshake_failed"), r
    assert "does not speak WebSocket" in r.detail


@pytest.mark.parametrize(
    "behaviour, code",
    [
        ("terminal_error", "http_5xx"),
        ("stalled", "stalled"),
        ("refusing", "tcp_refused"),
        ("reset", "tcp_reset"),
    ],
)
async def test_failures_are_named(ctx, terminal, behaviour, code):
    t = await terminal("websocket", behaviour, port=3000)
    r = await run_probe("websocket", f"ws://{t.host}:3000/", {}, 0.4, ctx)
    assert (r.outcome, r.diagnosis) == ("fail", code), r


async def test_not_a_websocket_url_is_ours(ctx):
    r = await run_probe("websocket", "http://127.0.0.1:3000/", {}, 1.0, ctx)
    assert (r.outcome, r.diagnosis) == ("error", "internal_error")
