"""Simulated terminals and endpoints: asyncio servers on loopback with switchable behaviour.

    sim = TerminalSimulator()
    await sim.start(TerminalSpec.from_row(r) for r in fleet_rows)   # 127.1.x.y:port each
    await sim.set_behaviour("Move5000-203097992", "filtered")       # or fire and forget
    await sim.stop()

Behaviours (any endpoint, any time):
    healthy          plain tcp: accept and echo; TLS APIs: serve HTTPS
    refusing         nothing listens: the kernel answers RST (connection refused)
    filtered         a backlog-0 listener whose accept queue is full: SYNs are dropped,
                     connects time out, as behind a firewall that drops the port
    reset            accept, then RST (SO_LINGER 0)
    stalled          accept, never answer (no TLS handshake, no HTTP answer)
    hung             accept and finish TLS, then never answer the request
    tls_self_signed / tls_expired / tls_expiring / tls_wrong_host / tls_inspected
                     speak TLS with that certificate (inspected: signed by an unknown
                     "inspection" CA, as a TLS-inspecting firewall does; expiring: valid,
                     expires in 10 days)
    unpaired         the Paynt EPOS API forgets its tokens: 401 until paired again
    terminal_error   the HTTP APIs answer 500
    flapping         healthy / refusing alternating every `period_s` seconds

APIs (TerminalSpec.api): "tcp" (echo), "paynt_epos" (HTTPS, self-signed; GET
/payntpos/1.0.0/pair -> {"token"}; other paths need the token in Authorization),
"adyen_local" (HTTPS, self-signed, 200 JSON), "https" (HTTPS with a certificate from the
simulator CA for `cert_host`: the provider/processor endpoints), "tls" (TLS then echo),
"http" (plain HTTP answering 200: another device, such as a printer's web page),
"websocket" (plain HTTP accepting the WebSocket upgrade: Torgsoft's JSON service on 3000).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import secrets
import socket
import ssl
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import cast

from app.process import raise_fd_limit
from app.simulator.certs import CertAuthority, authority

log = logging.getLogger(__name__)

BEHAVIOURS = (
    "healthy",
    "refusing",
    "filtered",
    "reset",
    "stalled",
    "hung",
    "tls_self_signed",
    "tls_expired",
    "tls_expiring",
    "tls_wrong_host",
    "tls_inspected",
    "unpaired",
    "terminal_error",
    "flapping",
)
TLS_APIS = ("paynt_epos", "adyen_local", "https", "tls")
EPOS_BASE = "/payntpos/1.0.0"
_LINGER_RST = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST
_WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455


def epos_token(poiid: str) -> str:
    """The token a simulated EPOS terminal accepts from the start (the demo stores it)."""
    return "sim-" + hashlib.sha256(f"termpulse-sim:{poiid}".encode()).hexdigest()[:32]


@dataclass
class TerminalSpec:
    key: str  # POIID for terminals, "name:port" for network endpoints
    host: str
    port: int
    api: str = "tcp"
    cert_host: str | None = None  # the name in the certificate (default: see cert_name)
    behaviour: str = "healthy"

    @property
    def cert_name(self) -> str:
        """The name its certificate is for: endpoints their host name; a terminal its own
        identity, so a second terminal at the same address presents another certificate
        (Adyen terminals: `{POIID}.test.terminal.adyen.com`, as Adyen's local guide says)."""
        if self.cert_host:
            return self.cert_host
        if self.api == "adyen_local":
            return f"{self.key}.test.terminal.adyen.com"
        return self.key if self.api in ("paynt_epos", "tls") else self.host

    @classmethod
    def from_row(cls, row: dict) -> TerminalSpec | None:
        """A fleet CSV row (poiid, lan_host, lan_port, local_api); None without a LAN address."""
        if not row.get("lan_host") or not row.get("lan_port"):
            return None
        return cls(row["poiid"], row["lan_host"], int(row["lan_port"]), row.get("local_api") or "tcp")

    @property
    def default_cert(self) -> str:
        # Terminals present self-signed certificates; provider endpoints real-looking ones.
        return "valid" if self.api == "https" else "self_signed"


@dataclass
class _Stats:
    accepted: int = 0
    requests: int = 0


class Endpoint:
    """One simulated host:port whose behaviour can change while it runs."""

    def __init__(self, spec: TerminalSpec, certs: CertAuthority, flap_period_s: float = 5.0):
        self.spec = spec
        self.certs = certs
        self.flap_period_s = flap_period_s
        self.behaviour = "refusing"  # until started
        self.effective = "refusing"  # what flapping currently is
        self.tokens: set[str] = {epos_token(spec.key)}
        self.stats = _Stats()
        self._server: asyncio.base_events.Server | None = None
        self._filter_socks: list[socket.socket] = []
        self._conns: set[asyncio.Transport] = set()
        self._flap: asyncio.Task | None = None
        self._lock = asyncio.Lock()

    async def set_behaviour(self, name: str, period_s: float | None = None) -> None:
        if name not in BEHAVIOURS:
            raise ValueError(f"unknown behaviour {name!r}; one of {', '.join(BEHAVIOURS)}")
        if self._flap is not None:
            self._flap.cancel()
            self._flap = None
        self.behaviour = name
        if name == "flapping":
            self._flap = asyncio.create_task(self._flapping(period_s or self.flap_period_s))
            await asyncio.sleep(0)  # let it apply its first state
        else:
            await self._apply(name)

    async def _flapping(self, period_s: float) -> None:
        # Flips on a fixed grid from the start (no drift): healthy first, then refusing.
        loop = asyncio.get_running_loop()
        start, flips = loop.time(), 0
        while True:
            await self._apply("healthy" if flips % 2 == 0 else "refusing")
            flips += 1
            await asyncio.sleep(max(start + flips * period_s - loop.time(), 0))

    async def _apply(self, name: str) -> None:
        async with self._lock:
            self.effective = name
            if name == "unpaired":
                self.tokens.clear()
            elif name == "healthy":
                self.tokens.add(epos_token(self.spec.key))
            if name in ("refusing", "filtered"):
                self._drop_connections()
                await self._unlisten()
                if name == "filtered":
                    await self._fill_backlog()
            else:
                self._unfilter()
                if self._server is None:
                    await self._listen()

    async def stop(self) -> None:
        if self._flap is not None:
            self._flap.cancel()
        self._drop_connections()
        await self._unlisten()
        self._unfilter()

    # --- sockets ----------------------------------------------------------------------

    async def _listen(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self), self.spec.host, self.spec.port, reuse_address=True, backlog=1024
        )

    async def _unlisten(self) -> None:
        if self._server is not None:
            self._server.close()  # the listening socket closes now: new connects are refused
            self._server = None

    def _drop_connections(self) -> None:
        for transport in list(self._conns):
            transport.abort()
        self._conns.clear()

    async def _fill_backlog(self) -> None:
        """Listen with backlog 0 and fill the accept queue with connections nobody accepts:
        Linux then drops further SYNs, so a client's connect times out (filtered)."""
        loop = asyncio.get_running_loop()
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.spec.host, self.spec.port))
        listener.listen(0)
        self._filter_socks.append(listener)
        for _ in range(16):
            filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            filler.setblocking(False)
            try:
                await asyncio.wait_for(loop.sock_connect(filler, (self.spec.host, self.spec.port)), 0.05)
            except (TimeoutError, OSError):
                filler.close()  # this one was dropped: the queue is full
                return
            self._filter_socks.append(filler)
        log.warning("could not fill the accept queue of %s:%s", self.spec.host, self.spec.port)

    def _unfilter(self) -> None:
        for sock in self._filter_socks:
            sock.close()
        self._filter_socks.clear()

    # --- per connection ---------------------------------------------------------------

    def tls_context(self) -> ssl.SSLContext | None:
        """The certificate this endpoint presents now; None when it speaks plain TCP."""
        if self.effective.startswith("tls_"):
            mode = self.effective[4:]
        elif self.spec.api in TLS_APIS:
            mode = self.spec.default_cert
        else:
            return None
        return self.certs.server_context(self.spec.cert_name, mode)

    def respond(self, method: str, path: str, headers: dict[str, str]) -> tuple[int, dict]:
        """The HTTP answer of the simulated API."""
        self.stats.requests += 1
        if self.spec.api == "paynt_epos":
            return self._epos(method, path, headers)
        if self.spec.api == "websocket":  # a plain request to a WebSocket service
            if self.effective == "terminal_error":
                return 500, {"error": "service error"}
            return 426, {"error": "upgrade required"}
        if self.spec.api == "http":  # another device's web page (a printer) on plain HTTP
            return 200, {"device": "printer", "status": "ready", "id": self.spec.key}
        if self.effective == "terminal_error":
            return 500, {"error": "internal terminal error"}
        return 200, {"status": "ok", "id": self.spec.key, "path": path}

    def _epos(self, method: str, path: str, headers: dict[str, str]) -> tuple[int, dict]:
        if not path.startswith(EPOS_BASE):
            return 404, {"error": "not found"}
        if path.rstrip("/") == f"{EPOS_BASE}/pair":
            token = secrets.token_hex(16)
            self.tokens.add(token)
            return 200, {"token": token}
        if self.effective == "terminal_error":
            return 500, {"error": "terminal error", "code": "E500"}
        given = headers.get("authorization", "").removeprefix("Bearer ").strip()
        if given not in self.tokens:
            return 401, {"error": "unauthorised: pair the terminal"}
        return 200, {"status": "ready", "poiid": self.spec.key, "api": "payntpos/1.0.0"}


class _Connection(asyncio.Protocol):
    """One accepted connection; what it does is decided when it is accepted."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        # Both set by connection_made, which asyncio calls before anything else.
        self.transport: asyncio.Transport  # TLS: the TLS transport once start_tls returns
        self.raw: asyncio.Transport  # the TCP connection
        self.buffer = b""
        self.pending = b""
        self.mode = "echo"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        ep = self.endpoint
        ep.stats.accepted += 1
        transport = cast(asyncio.Transport, transport)  # a stream server's connections are Transports
        self.transport = self.raw = transport
        ep._conns.add(transport)
        if ep.effective == "reset":
            transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
            transport.abort()
            return
        if ep.effective == "stalled":
            self.mode = "silent"
            return
        ctx = ep.tls_context()
        self.mode = (
            "http" if ep.spec.api in ("paynt_epos", "adyen_local", "https", "http", "websocket") else "echo"
        )
        if ep.effective == "hung":
            self.mode = "silent"
        if ctx is not None:
            # Hold the ClientHello in the socket until start_tls takes the transport over.
            transport.pause_reading()
            asyncio.get_running_loop().create_task(self._start_tls(ctx, self.mode))
            self.mode = "tls_pending"

    async def _start_tls(self, ctx: ssl.SSLContext, mode: str) -> None:
        loop = asyncio.get_running_loop()
        try:
            tls = await loop.start_tls(self.raw, self, ctx, server_side=True, ssl_handshake_timeout=10)
        except Exception:  # the client gave up or spoke something else: just hang up
            self.raw.abort()
            return
        assert tls is not None  # asyncio returns the TLS transport; typeshed says Optional
        self.transport = tls
        self.mode = mode
        if self.pending:  # decrypted data that arrived before start_tls returned
            data, self.pending = self.pending, b""
            self.data_received(data)

    def _upgrade(self, headers: dict[str, str]) -> bool:
        """The WebSocket opening handshake (RFC 6455): 101, then the connection stays open."""
        key = headers.get("sec-websocket-key")
        if "websocket" not in headers.get("upgrade", "").lower() or not key:
            return False  # a plain request: answered below (426)
        if self.endpoint.effective == "terminal_error":
            return False
        accept = base64.b64encode(hashlib.sha1((key + _WS_GUID).encode()).digest()).decode()
        self.transport.write(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {accept}\r\n\r\n".encode()
        )
        self.endpoint.stats.requests += 1
        self.mode = "done"  # frames from the client are read and dropped
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.endpoint._conns.discard(self.raw)

    def data_received(self, data: bytes) -> None:
        if self.mode == "tls_pending":
            self.pending += data
        elif self.mode == "echo":
            self.transport.write(data)
        elif self.mode == "http":
            self.buffer += data
            if not self.buffer[:1].isupper():  # not a request line (a TLS ClientHello): as web servers do
                self.transport.write(
                    b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
                )
                self.mode = "done"
                self.transport.close()
            elif b"\r\n\r\n" in self.buffer:
                self._answer_http()
            elif len(self.buffer) > 65536:
                self.transport.abort()

    def _answer_http(self) -> None:
        head = self.buffer.split(b"\r\n\r\n", 1)[0].decode("latin-1")
        lines = head.split("\r\n")
        method, path, *_ = [*lines[0].split(" "), "", ""][:3]
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if self.endpoint.spec.api == "websocket" and self._upgrade(headers):
            return
        status, body = self.endpoint.respond(method, path.split("?", 1)[0], headers)
        payload = json.dumps(body).encode()
        reason = {
            200: "OK",
            401: "Unauthorized",
            404: "Not Found",
            426: "Upgrade Required",
            500: "Internal Server Error",
        }
        self.transport.write(
            f"HTTP/1.1 {status} {reason.get(status, 'Status')}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
            + payload
        )
        self.mode = "done"
        self.transport.close()


@dataclass
class TerminalSimulator:
    """Many endpoints in this process, addressed by key (the terminal's POIID)."""

    certs: CertAuthority = field(default_factory=authority)
    flap_period_s: float = 5.0
    endpoints: dict[str, Endpoint] = field(default_factory=dict)

    async def start(self, specs: Iterable[TerminalSpec | None], chunk: int = 500) -> TerminalSimulator:
        raise_fd_limit()
        new = []
        for spec in specs:
            if spec is None:
                continue
            ep = Endpoint(spec, self.certs, self.flap_period_s)
            self.endpoints[spec.key] = ep
            new.append(ep)
        for i in range(0, len(new), chunk):  # in chunks: thousands of binds at once gain nothing
            await asyncio.gather(*(ep.set_behaviour(ep.spec.behaviour) for ep in new[i : i + chunk]))
        return self

    async def add(self, spec: TerminalSpec) -> Endpoint:
        await self.start([spec])
        return self.endpoints[spec.key]

    async def remove(self, key: str) -> None:
        """Take a terminal off the network (its address is free for another device)."""
        await self.endpoints.pop(key).stop()

    def set_behaviour(self, key: str, name: str, period_s: float | None = None) -> asyncio.Task:
        """Switch a terminal's behaviour; await the returned task to know it is in place."""
        return asyncio.get_running_loop().create_task(self.endpoints[key].set_behaviour(name, period_s))

    def behaviour(self, key: str) -> str:
        return self.endpoints[key].behaviour

    def token(self, key: str) -> str:
        return epos_token(key)

    async def stop(self) -> None:
        await asyncio.gather(*(ep.stop() for ep in self.endpoints.values()), return_exceptions=True)
        self.endpoints.clear()
