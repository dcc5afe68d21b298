"""dns and tcp probes against the simulator: each failure named for real."""

import asyncio
import errno
import socket

import pytest

from app.checks import net
from app.checks.probes import run_probe
from tests.checks.conftest import ENDPOINTS

NAME = "prodssl.protectedtransactions.com"


@pytest.fixture
def dns_mode(network):
    """Set a DNS mode for the test, restored afterwards."""
    changed = []

    def set_mode(name, mode):
        changed.append(name)
        network.dns.set_mode(name, mode)

    yield set_mode
    for name in changed:
        network.dns.set_mode(name, "answer")


async def test_dns_ok_records_the_answers(ctx):
    r = await run_probe("dns", NAME, {}, 1.0, ctx)
    assert r.outcome == "ok" and r.diagnosis is None
    assert ENDPOINTS[NAME][0] in r.detail and r.steps[0]["step"] == "resolve" and r.steps[0]["ok"]


@pytest.mark.parametrize(
    "mode, code",
    [
        ("nxdomain", "dns_nxdomain"),
        ("servfail", "dns_servfail"),
        ("refused", "dns_servfail"),
        ("drop", "dns_timeout"),
        ("no_a", "dns_no_answer"),
    ],
)
async def test_dns_failures_are_told_apart(ctx, dns_mode, mode, code):
    dns_mode(NAME, mode)
    r = await run_probe("dns", NAME, {}, 0.4, ctx)
    assert (r.outcome, r.diagnosis) == ("fail", code), r
    assert NAME in r.detail and not r.steps[-1]["ok"]
    assert r.explain().cause == r.detail


async def test_dns_failure_inside_a_tcp_check(ctx, dns_mode):
    dns_mode(NAME, "nxdomain")
    r = await run_probe("tcp", f"{NAME}:443", {}, 1.0, ctx)
    assert r.diagnosis == "dns_nxdomain" and [s["step"] for s in r.steps] == ["resolve"]


async def test_dns_server_not_listening_is_a_timeout(network):
    from app.checks.guard import TargetGuard
    from app.checks.probes import ProbeContext
    from app.checks.resolver import Resolver

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = ProbeContext(Resolver(["127.0.0.1"], port), TargetGuard(["127.0.0.0/8"]))
    r = await run_probe("dns", NAME, {}, 0.5, ctx)
    assert r.diagnosis == "dns_timeout"


async def test_tcp_ok_by_name_on_the_real_port(ctx):
    r = await run_probe("tcp", "temterminalsnar01.icloud.ingenico.com:7003", {}, 1.0, ctx)
    assert r.outcome == "ok", r
    assert [s["step"] for s in r.steps] == ["resolve", "connect"]
    assert r.latency_ms == r.steps[1]["ms"]


async def test_tcp_refused(ctx, terminal):
    t = await terminal("tcp", "refusing")
    r = await run_probe("tcp", f"{t.host}:{t.port}", {}, 1.0, ctx)
    assert (r.outcome, r.diagnosis) == ("fail", "tcp_refused")
    assert f"{t.host} refused the connection on port 2000" in r.detail


async def test_tcp_filtered_really_times_out(ctx, terminal):
    t = await terminal("tcp", "filtered", port=7003)
    loop = asyncio.get_running_loop()
    started = loop.time()
    r = await run_probe("tcp", f"{t.host}:7003", {}, 0.4, ctx)
    assert (r.outcome, r.diagnosis) == ("fail", "tcp_timeout"), r
    assert loop.time() - started >= 0.38
    assert (
        r.explain().cause
        == f"Port 7003 to {t.host} is filtered: the connection timed out, a firewall drops it."
    )


async def test_tcp_reset(ctx, terminal):
    t = await terminal("tcp", "reset")
    r = await run_probe("tcp", f"{t.host}:{t.port}", {"settle_ms": 300}, 1.0, ctx)
    assert (r.outcome, r.diagnosis) == ("fail", "tcp_reset"), r


async def test_tcp_stalled_terminal_still_has_its_port_open(ctx, terminal):
    t = await terminal("tcp", "stalled")
    r = await run_probe("tcp", f"{t.host}:{t.port}", {}, 1.0, ctx)
    assert r.outcome == "ok"


async def test_behaviour_switches_while_running(ctx, terminal, network):
    t = await terminal("tcp")
    target = f"{t.host}:{t.port}"
    assert (await run_probe("tcp", target, {}, 0.4, ctx)).outcome == "ok"
    for behaviour, code in [
        ("refusing", "tcp_refused"),
        ("filtered", "tcp_timeout"),
        ("reset", "tcp_reset"),
        ("healthy", None),
    ]:
        await network.sim.set_behaviour(t.key, behaviour)
        # A budget well past the 300 ms settle: a loaded machine's late event loop must not
        # turn a reset into an overrun (the filtered case waits it out: 1.5 s).
        r = await run_probe("tcp", target, {"settle_ms": 300}, 1.5, ctx)
        assert r.diagnosis == code, (behaviour, r)


async def test_flapping_alternates(ctx, terminal, network):
    """Flapping flips healthy -> refusing -> healthy ..., and a probe sees the state it flipped to.

    Each probe runs holding the terminal's lock (the one its flips take), so the state cannot
    change under it: no sampling on the flip grid, which a loaded machine would shift."""
    t = await terminal("tcp")
    endpoint = network.sim.endpoints[t.key]
    await network.sim.set_behaviour(t.key, "flapping", period_s=0.3)
    expected = {"healthy": None, "refusing": "tcp_refused"}
    states: list[str] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    try:
        while len(states) < 4:  # healthy, refusing, healthy, refusing: three flips seen
            assert loop.time() < deadline, f"flapping seen as {states}"
            async with endpoint._lock:
                state = endpoint.effective
                r = await run_probe("tcp", f"{t.host}:{t.port}", {"settle_ms": 0}, 2.0, ctx)
            assert state in expected and r.diagnosis == expected[state], (state, r)
            if not states or states[-1] != state:
                states.append(state)
            await asyncio.sleep(0.05)
    finally:
        await network.sim.set_behaviour(t.key, "healthy")
    assert set(states) == set(expected), states


@pytest.mark.parametrize(
    "err, code",
    [
        (errno.EHOSTUNREACH, "host_unreachable"),
        (errno.ENETUNREACH, "host_unreachable"),
        (errno.ECONNREFUSED, "tcp_refused"),
        (errno.ECONNRESET, "tcp_reset"),
        (errno.ETIMEDOUT, "tcp_timeout"),
        (errno.EMFILE, "internal_error"),
        (errno.EADDRNOTAVAIL, "internal_error"),
    ],
)
def test_connect_errno_mapping(err, code):
    assert net.classify_errno(err) == code


async def test_host_unreachable_from_the_os_error(ctx, monkeypatch):
    """Loopback can't produce EHOSTUNREACH: the kernel's answer is injected at sock_connect."""
    loop = asyncio.get_running_loop()

    async def unreachable(sock, address):
        raise OSError(errno.EHOSTUNREACH, "No route to host")

    monkeypatch.setattr(loop, "sock_connect", unreachable)
    r = await run_probe("tcp", "127.0.0.1:9", {}, 1.0, ctx)
    monkeypatch.undo()
    assert (r.outcome, r.diagnosis) == ("fail", "host_unreachable")
    assert "DHCP" in r.explain().fix


async def test_our_failures_are_errors_not_failures(ctx):
    r = await run_probe("nope", "x", {}, 1.0, ctx)
    assert (r.outcome, r.diagnosis) == ("error", "internal_error")
    r = await run_probe("tcp", "127.0.0.1", {}, 1.0, ctx)  # no port
    assert (r.outcome, r.diagnosis) == ("error", "internal_error")
