"""A small authoritative DNS server on loopback (UDP and TCP) for tests and the demo.

    dns = SimDNS({"prodssl.protectedtransactions.com": ["127.3.0.1"]}, port=0)
    await dns.start();  dns.port  # the port it got
    dns.set_mode("prodssl.protectedtransactions.com", "servfail")

Modes per name, switchable while running:
    answer    the A records (AAAA and other types: an empty NOERROR answer)
    nxdomain  the name does not exist
    servfail  / refused   the server fails / refuses the query
    drop      no answer at all (the client times out)
    no_a      the name exists but has no A record (empty NOERROR)
    blocked   what a store's DNS filter answers for a blocked name: 0.0.0.0 (A) and :: (AAAA)

Addresses with a colon are served as AAAA records, the others as A records.

Split horizon: `set_view(source, name, ...)` changes the answer for queries *from* one
local address only, so one simulated store network (queries from its own 127.x source)
can resolve a name differently from the rest of the fleet.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections import Counter
from dataclasses import dataclass

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset

log = logging.getLogger(__name__)

DNS_MODES = ("answer", "nxdomain", "servfail", "refused", "drop", "no_a", "blocked")
TTL = 30


def _key(name: str) -> str:
    return name.strip().rstrip(".").lower()


@dataclass
class _Entry:
    mode: str = "answer"
    addresses: tuple[str, ...] = ()


class SimDNS:
    def __init__(self, records: dict[str, list[str]] | None = None, host: str = "127.0.0.1", port: int = 0):
        self.host = host
        self.port = port
        self._names: dict[str, _Entry] = {}
        self._views: dict[tuple[str, str], _Entry] = {}
        self.queries: Counter[str] = Counter()  # per name, for tests and the demo log
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        for name, addresses in (records or {}).items():
            self.set_record(name, addresses)

    # --- configuration (safe to call while running) ----------------------------------

    def set_record(self, name: str, addresses: list[str], mode: str = "answer") -> None:
        self._names[_key(name)] = _Entry(self._check(mode), tuple(addresses))

    def set_mode(self, name: str, mode: str) -> None:
        entry = self._names.setdefault(_key(name), _Entry())
        entry.mode = self._check(mode)

    def set_view(
        self, source: str, name: str, *, mode: str = "answer", addresses: list[str] | None = None
    ) -> None:
        """Answer queries for `name` coming from `source` differently."""
        base = self._names.get(_key(name), _Entry())
        self._views[(source, _key(name))] = _Entry(
            self._check(mode), tuple(addresses) if addresses is not None else base.addresses
        )

    def clear_view(self, source: str, name: str) -> None:
        self._views.pop((source, _key(name)), None)

    def mode(self, name: str) -> str:
        return self._names.get(_key(name), _Entry("nxdomain")).mode

    @staticmethod
    def _check(mode: str) -> str:
        if mode not in DNS_MODES:
            raise ValueError(f"unknown DNS mode {mode!r}; one of {', '.join(DNS_MODES)}")
        return mode

    # --- serving ---------------------------------------------------------------------

    async def start(self) -> SimDNS:
        # TCP first: with port 0 it picks the port, and UDP then takes the same number
        # (which may be taken for UDP: then try another).
        for attempt in range(20):
            try:
                await self._bind(self.port)
                return self
            except OSError:
                await self.stop()
                self._tcp = self._udp = None
                if self.port != 0 or attempt == 19:  # a fixed port: nothing else to try
                    raise
        return self

    async def _bind(self, port: int) -> None:
        loop = asyncio.get_running_loop()
        self._tcp = await asyncio.start_server(self._serve_tcp, self.host, port)
        bound = self._tcp.sockets[0].getsockname()[1]
        self._udp, _ = await loop.create_datagram_endpoint(
            lambda: _UdpProtocol(self), local_addr=(self.host, bound)
        )
        self.port = bound

    async def stop(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
            await self._tcp.wait_closed()

    def answer(self, wire: bytes, source: str) -> bytes | None:
        """The response to one query (None: stay silent)."""
        try:
            query = dns.message.from_wire(wire)
        except Exception:  # not DNS: a real server would ignore it too
            return None
        if not query.question:
            return None
        question = query.question[0]
        name = _key(question.name.to_text())
        self.queries[name] += 1
        entry = self._views.get((source, name)) or self._names.get(name)
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if entry is None or entry.mode == "nxdomain":
            response.set_rcode(dns.rcode.NXDOMAIN)
        elif entry.mode == "drop":
            return None
        elif entry.mode in ("servfail", "refused"):
            response.set_rcode(dns.rcode.SERVFAIL if entry.mode == "servfail" else dns.rcode.REFUSED)
        elif entry.mode in ("answer", "blocked") and question.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
            v6 = question.rdtype == dns.rdatatype.AAAA
            if entry.mode == "blocked":
                addresses = ["::"] if v6 else ["0.0.0.0"]
            else:
                addresses = [a for a in entry.addresses if (":" in a) == v6]
            if addresses:
                rdtype = "AAAA" if v6 else "A"
                response.answer.append(dns.rrset.from_text_list(question.name, TTL, "IN", rdtype, addresses))
        # otherwise (no_a, no address of that family, other types): NOERROR with an empty answer
        return response.to_wire()

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        source = writer.get_extra_info("peername")[0]
        try:
            while True:
                (length,) = struct.unpack("!H", await reader.readexactly(2))
                reply = self.answer(await reader.readexactly(length), source)
                if reply is None:
                    continue  # 'drop': keep the connection silent
                writer.write(struct.pack("!H", len(reply)) + reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: SimDNS) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    # A datagram endpoint's transport is a DatagramTransport: typeshed's DatagramProtocol narrows
    # BaseProtocol's parameter the same way, with the same ignore.
    def connection_made(self, transport: asyncio.DatagramTransport) -> None:  # type: ignore[override]
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        reply = self.server.answer(data, addr[0])
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("simulated DNS: %s", exc)
