"""The ping check (icmplib): 127.0.0.1 and a simulated name answer; a host that never answers
is ping_lost (in a private network namespace: a tun link nobody reads, where nothing replies); a system
that allows no ICMP socket is ours, ping_not_permitted, with what to change."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.checks.context import ProbeContext
from app.checks.guard import TargetGuard
from app.checks.probes import run_probe
from tests.checks.conftest import ENDPOINTS
from tests.checks.test_unreachable_netns import _can_unshare

ROOT = Path(__file__).resolve().parents[2]
PROCESSOR = "prodssl.protectedtransactions.com"


def unprivileged_icmp_allowed() -> bool:
    low, high = map(int, Path("/proc/sys/net/ipv4/ping_group_range").read_text().split())
    return any(low <= gid <= high for gid in [*os.getgroups(), os.getgid()])


def may_ping() -> bool:
    return unprivileged_icmp_allowed() or os.geteuid() == 0


@pytest.mark.skipif(not may_ping(), reason="this system allows this user no ICMP socket")
async def test_ping_loopback_and_a_name(ctx):
    r = await run_probe("ping", "127.0.0.1", {"count": 2, "interval_s": 0.05}, 1.0, ctx)
    assert r.outcome == "ok", r
    assert [s["step"] for s in r.steps] == ["ping"] and "2/2 replies from 127.0.0.1" in r.detail
    r = await run_probe("ping", PROCESSOR, {"count": 1}, 1.0, ctx)
    assert r.outcome == "ok" and [s["step"] for s in r.steps] == ["resolve", "ping"], r
    assert ENDPOINTS[PROCESSOR][0] in r.detail


async def test_ping_is_guarded(ctx):
    guarded = ProbeContext(ctx.resolver, TargetGuard(["10.0.0.0/8"]))
    r = await run_probe("ping", "127.0.0.1", {}, 1.0, guarded)
    assert (r.outcome, r.diagnosis) == ("error", "target_refused")


@pytest.mark.skipif(unprivileged_icmp_allowed(), reason="unprivileged ICMP sockets are allowed here")
async def test_no_icmp_socket_allowed_is_ours_and_says_what_to_change(ctx):
    r = await run_probe("ping", "127.0.0.1", {"privileged": False}, 1.0, ctx)
    assert (r.outcome, r.diagnosis) == ("error", "ping_not_permitted"), r  # unknown, never down
    d = r.explain()
    assert "does not allow it ICMP sockets" in d.cause and d.ours
    assert "net.ipv4.ping_group_range" in d.fix and "CAP_NET_RAW" in d.fix


SCRIPT = """
import asyncio, json
from app.checks.guard import TargetGuard
from app.checks.probes import ProbeContext, run_probe
from app.checks.resolver import Resolver

async def main():
    ctx = ProbeContext(Resolver(["127.0.0.1"], 53), TargetGuard(["10.99.0.0/24"]))
    r = await run_probe("ping", "10.99.0.2", {"count": 2, "interval_s": 0.05}, 0.5, ctx)
    print(json.dumps([r.outcome, r.diagnosis, r.detail, r.explain().fix]))

asyncio.run(main())
"""


@pytest.mark.skipif(not _can_unshare(), reason="needs root and unshare -n")
def test_a_host_that_never_answers_is_ping_lost():
    shell = (
        "ip link set lo up && ip tuntap add mode tun dev t0 && ip addr add 10.99.0.1/24 dev t0 && "
        f'ip link set t0 up && exec {sys.executable} -c "$SCRIPT"'
    )
    done = subprocess.run(
        ["unshare", "-n", "sh", "-c", shell],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
        env={**os.environ, "SCRIPT": SCRIPT, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr
    outcome, code, detail, fix = json.loads(done.stdout.strip().splitlines()[-1])
    assert (outcome, code) == ("fail", "ping_lost"), detail
    assert "10.99.0.2 did not answer any of 2 pings" in detail
    assert "DHCP reservation" in fix  # a LAN address: worded for a terminal
