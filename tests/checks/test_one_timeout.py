"""Less per check (issue 16): a tcp or tls check sets one timeout and starts no extra task
(asyncio.wait_for makes one); a timeout is still named by the step it cut short."""

import asyncio
import sys

import pytest

from app.checks import net
from app.checks.probes import run_probe
from tests.checks.test_probes_dns_tcp import NAME


@pytest.fixture
def timeouts(monkeypatch):
    """Counts the asyncio.timeout()s the checking engine (app.checks) sets; wait_for fails."""
    made = []
    real_timeout, real_wait_for = asyncio.timeout, asyncio.wait_for

    def ours() -> bool:
        """Set by the checking engine for a check this test runs: not by another test's
        background worker sharing the event loop (a browser test's live server checks too)."""
        if not sys._getframe(2).f_globals.get("__name__", "").startswith("app.checks"):
            return False
        frame = sys._getframe(2)
        while frame is not None:
            if frame.f_globals.get("__name__") == __name__:
                return True
            frame = frame.f_back
        return False

    def counting(delay):
        if ours():
            made.append(delay)
        return real_timeout(delay)

    def no_wait_for(*args, **kwargs):
        assert not ours(), "asyncio.wait_for in a check: an extra task per check"
        return real_wait_for(*args, **kwargs)

    monkeypatch.setattr(asyncio, "timeout", counting)
    monkeypatch.setattr(asyncio, "wait_for", no_wait_for)
    return made


async def test_healthy_tcp_check_sets_one_timeout(ctx, terminal, timeouts):
    t = await terminal("tcp")
    r = await run_probe("tcp", f"{t.host}:{t.port}", {}, 1.0, ctx)
    assert r.outcome == "ok", r
    assert len(timeouts) == 1


async def test_filtered_port_times_out_at_the_deadline_named_by_the_connect(ctx, terminal, timeouts):
    t = await terminal("tcp", "filtered", port=7003)
    r = await run_probe("tcp", f"{t.host}:7003", {}, 0.3, ctx)
    assert (r.outcome, r.diagnosis) == ("fail", "tcp_timeout"), r
    assert [(s["step"], s["ok"]) for s in r.steps] == [("connect", False)]
    assert r.steps[-1]["detail"] == f"no answer to connect to {t.host}:7003 within the timeout"
    assert len(timeouts) == 1


async def test_reset_after_accept_is_still_seen(ctx, terminal, timeouts):
    t = await terminal("tcp", "reset")
    r = await run_probe("tcp", f"{t.host}:{t.port}", {"settle_ms": 300}, 1.0, ctx)
    assert (r.outcome, r.diagnosis) == ("fail", "tcp_reset"), r
    assert len(timeouts) == 1


async def test_tls_check_sets_one_timeout_and_a_stall_is_named(ctx, terminal, timeouts):
    t = await terminal("paynt_epos", port=8080)
    r = await run_probe("tls", f"{t.host}:8080", {"accept_self_signed": True}, 1.0, ctx)
    assert r.outcome == "ok", r
    assert len(timeouts) == 1

    timeouts.clear()
    stalled = await terminal("paynt_epos", "stalled", port=8080)
    r = await run_probe("tls", f"{stalled.host}:8080", {"accept_self_signed": True}, 1.5, ctx)
    assert (r.outcome, r.diagnosis, r.steps[-1]["step"]) == ("fail", "tls_stalled", "tls"), r
    assert r.steps[-1]["detail"] == "the TLS handshake did not complete before the timeout"
    assert len(timeouts) == 1


async def test_name_that_never_resolves_is_a_dns_timeout(ctx, network):
    network.dns.set_mode(NAME, "drop")
    try:
        r = await run_probe("tcp", f"{NAME}:443", {}, 0.4, ctx)
    finally:
        network.dns.set_mode(NAME, "answer")
    assert (r.outcome, r.diagnosis) == ("fail", "dns_timeout"), r
    assert [s["step"] for s in r.steps] == ["resolve"]


async def test_a_check_cut_while_connecting_closes_its_socket(ctx, terminal, monkeypatch):
    """Cancelled from outside (a worker stopping) while connecting: the socket is closed."""
    t = await terminal("tcp", "filtered", port=7003)
    made = []
    connecting = asyncio.Event()
    real = net.socket.socket
    task: asyncio.Task | None = None

    def recording(*args, **kwargs):
        # Only this check's socket: the session's event loop also runs other fixtures' servers
        # and checks (the browser tests' live server checks its fleet), which make sockets too.
        sock = real(*args, **kwargs)
        try:
            mine = task is not None and asyncio.current_task() is task
        except RuntimeError:  # made outside the event loop's thread
            mine = False
        if mine:
            made.append(sock)
            connecting.set()
        return sock

    monkeypatch.setattr(net.socket, "socket", recording)
    task = asyncio.create_task(run_probe("tcp", f"{t.host}:7003", {}, 5.0, ctx))
    await asyncio.wait_for(connecting.wait(), 30)
    await asyncio.sleep(0.05)  # into the connect
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert made[0].fileno() == -1
