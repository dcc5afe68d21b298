"""The target guard: CIDR list, checked on the resolved address before connecting."""

from app.checks.guard import TargetGuard
from app.checks.probes import run_probe


def test_allows_only_listed_networks():
    g = TargetGuard(["127.0.0.0/8", "10.1.0.0/16"])
    assert g.allows("127.1.2.3") and g.allows("10.1.200.1")
    assert not g.allows("10.2.0.1") and not g.allows("8.8.8.8") and not g.allows("::1")
    assert not g.allows("not-an-address")
    assert g.allows("::ffff:127.0.0.1")  # IPv4-mapped IPv6 is its IPv4 address


def test_default_is_everything_and_host_bits_are_tolerated():
    everything = TargetGuard(["0.0.0.0/0", "::/0"])
    assert everything.allows("192.0.2.1") and everything.allows("2001:db8::1")
    assert TargetGuard(["127.0.0.1/8"]).allows("127.255.0.1")
    assert not TargetGuard([]).allows("127.0.0.1")


def test_from_settings_reads_the_comma_separated_env(monkeypatch):
    from app.config import Settings

    monkeypatch.setenv("TERMPULSE_ALLOWED_NETWORKS", "127.0.0.0/8, 10.0.0.0/8")
    g = TargetGuard.from_settings(Settings())
    assert [str(n) for n in g.networks] == ["127.0.0.0/8", "10.0.0.0/8"]


async def test_a_name_resolving_outside_is_refused_before_connecting(network, ctx):
    # 192.0.2.1 (TEST-NET-1) is never contacted: the guard refuses first.
    network.dns.set_record("outside.sim.test", ["192.0.2.1"])
    for kind, target in [
        ("tcp", "outside.sim.test:443"),
        ("tls", "outside.sim.test:443"),
        ("https", "https://outside.sim.test/"),
        ("paynt_epos", "192.0.2.1:8080"),
    ]:
        r = await run_probe(kind, target, {}, 1.0, ctx)
        assert (r.outcome, r.diagnosis) == ("error", "target_refused"), (kind, r)
        assert not any(s["step"] == "connect" for s in r.steps)
        assert "192.0.2.1" in r.detail


async def test_loopback_only_guard_still_checks_loopback(ctx, terminal):
    t = await terminal("tcp")
    r = await run_probe("tcp", f"{t.host}:{t.port}", {}, 1.0, ctx)
    assert r.outcome == "ok"
