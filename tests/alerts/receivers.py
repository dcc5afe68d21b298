"""Real receivers on loopback for the alert tests: an HTTP webhook receiver (asyncio, what
Apprise's json:// posts to) and an SMTP server (aiosmtpd, what mailto:// sends to)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from email import message_from_bytes
from email.policy import default as default_policy

from aiosmtpd.controller import Controller


class WebhookReceiver:
    """Answers POSTs with `status` (or 500 for the first `fail_first` requests); keeps every
    request's JSON. `hold_first`: the first request is read, then never answered (a worker
    killed mid-delivery sees no answer either)."""

    def __init__(self, host: str = "127.0.0.1"):
        self.host = host
        self.port = 0
        self.requests: list[dict] = []  # every request read, answered or not
        self.answered: list[tuple[int, dict]] = []
        self.fail_first = 0
        self.hold_first = False
        self._server: asyncio.base_events.Server | None = None
        self._held: list[asyncio.StreamWriter] = []

    @property
    def delivered(self) -> list[dict]:
        """Messages answered with a 2xx: what the channel accepted."""
        return [body for status, body in self.answered if status < 300]

    def url(self, path: str = "/hook") -> str:
        return f"json://{self.host}:{self.port}{path}"

    async def start(self) -> WebhookReceiver:
        self._server = await asyncio.start_server(self._handle, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.decode("latin-1").split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            raw = await reader.readexactly(length) if length else b""
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                body = {"raw": raw.decode("utf-8", "replace")}
            self.requests.append(body)
            if self.hold_first and len(self.requests) == 1:
                self._held.append(writer)  # never answered
                return
            status = 500 if len(self.requests) <= self.fail_first else 200
            self.answered.append((status, body))
            reason = "OK" if status == 200 else "Internal Server Error"
            writer.write(
                f"HTTP/1.1 {status} {reason}\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}".encode()
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        with contextlib.suppress(Exception):
            writer.close()

    async def stop(self) -> None:
        for w in self._held:
            w.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


class _Collect:
    def __init__(self, inbox: list):
        self.inbox = inbox

    async def handle_DATA(self, server, session, envelope):
        self.inbox.append(message_from_bytes(envelope.content, policy=default_policy))
        return "250 Message accepted for delivery"


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class SmtpReceiver:
    """aiosmtpd on loopback (its own thread); `messages` are email.message.EmailMessage."""

    def __init__(self, host: str = "127.0.0.1"):
        self.host = host
        self.messages: list = []
        self.port = _free_port(host)
        self.controller = Controller(_Collect(self.messages), hostname=host, port=self.port)

    def url(self, to: str = "ops@example.test") -> str:
        return f"mailto://{self.host}:{self.port}?from=termpulse@example.test&to={to}"

    def start(self) -> SmtpReceiver:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()
