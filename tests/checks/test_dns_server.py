"""The simulated DNS server, over UDP and TCP, with its modes and per-source views."""

import dns.asyncquery
import dns.exception
import dns.message
import dns.rcode
import pytest

from app.simulator.dns import SimDNS


@pytest.fixture
async def server():
    s = await SimDNS({"prodssl.protectedtransactions.com": ["127.3.0.1"]}, port=0).start()
    yield s
    await s.stop()


async def ask(server, name, rdtype="A", tcp=False, source="127.0.0.1", wait=1.0):
    q = dns.message.make_query(name, rdtype)
    send = dns.asyncquery.tcp if tcp else dns.asyncquery.udp
    return await send(q, server.host, timeout=wait, port=server.port, source=source)


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
async def test_modes(server, tcp):
    name = "prodssl.protectedtransactions.com"
    r = await ask(server, name, tcp=tcp)
    assert r.rcode() == dns.rcode.NOERROR and [a.to_text() for a in r.answer[0]] == ["127.3.0.1"]
    assert (await ask(server, "unknown.example", tcp=tcp)).rcode() == dns.rcode.NXDOMAIN
    assert not (await ask(server, name, "AAAA", tcp=tcp)).answer  # no IPv6: empty NOERROR
    for mode, rcode in [
        ("nxdomain", dns.rcode.NXDOMAIN),
        ("servfail", dns.rcode.SERVFAIL),
        ("refused", dns.rcode.REFUSED),
        ("no_a", dns.rcode.NOERROR),
    ]:
        server.set_mode(name, mode)
        r = await ask(server, name, tcp=tcp)
        assert r.rcode() == rcode and not r.answer, mode
    server.set_mode(name, "drop")
    with pytest.raises(dns.exception.Timeout):
        await ask(server, name, tcp=tcp, wait=0.3)
    server.set_mode(name, "answer")
    assert (await ask(server, name, tcp=tcp)).answer


async def test_views_answer_one_source_differently(server):
    name = "prodssl.protectedtransactions.com"
    server.set_view("127.2.0.7", name, addresses=["127.4.0.7"])
    server.set_view("127.2.0.8", name, mode="servfail")
    assert (await ask(server, name, source="127.2.0.7")).answer[0][0].to_text() == "127.4.0.7"
    assert (await ask(server, name, source="127.2.0.8")).rcode() == dns.rcode.SERVFAIL
    assert (await ask(server, name, source="127.0.0.1")).answer[0][0].to_text() == "127.3.0.1"
    server.clear_view("127.2.0.8", name)
    assert (await ask(server, name, source="127.2.0.8")).answer
    assert server.queries[name] == 4


def test_unknown_mode_is_rejected():
    with pytest.raises(ValueError):
        SimDNS().set_mode("x", "bogus")
