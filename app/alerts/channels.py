"""Channels: Apprise URLs (email, Slack, Teams, Telegram, PagerDuty, ntfy, JSON webhooks ...),
kept encrypted at rest like provider keys (they carry tokens), shown masked, sent through Apprise.

No per-service code lives here: Apprise speaks every service through its URL scheme."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import apprise

from app.errors import InvalidInput
from app.providers.crypto import KeyUnavailable, decrypt_api_key, encrypt_api_key

# Apprise says "Notifying 1 service(s)" for every message; what a channel answered is kept on
# the delivery attempt (and a failure still logs its warning).
logging.getLogger("apprise").setLevel(logging.WARNING)

_TYPES = {
    "opened": apprise.NotifyType.FAILURE,
    "reminder": apprise.NotifyType.WARNING,
    "escalation": apprise.NotifyType.FAILURE,
    "resolved": apprise.NotifyType.SUCCESS,
    "test": apprise.NotifyType.INFO,
}


@dataclass(frozen=True)
class SendResult:
    ok: bool
    detail: str
    duration_ms: int


def check_url(url: str) -> str:
    """The URL, stripped, if Apprise can send to it; InvalidInput (field `url`) otherwise."""
    url = url.strip()
    if not url:
        raise InvalidInput({"url": "enter an Apprise URL, e.g. json://host:port/path or mailto://..."})
    if len(url) > 2000:
        raise InvalidInput({"url": "at most 2,000 characters"})
    if not apprise.Apprise().add(url):
        raise InvalidInput(
            {"url": "Apprise does not understand this URL (see the Apprise wiki for each service's form)"}
        )
    return url


def url_hint(url: str) -> str:
    """What people may see of a channel URL: its scheme and, when it is a host name or an
    address, its host; everything else (tokens, passwords, paths) masked."""
    parts = urlsplit(url)
    host = ""
    try:
        hostname = parts.hostname or ""
    except ValueError:
        hostname = ""
    if "." in hostname and len(hostname) <= 80:
        host = hostname
    return f"{parts.scheme}://{host}/••••" if host else f"{parts.scheme}://••••"


def encrypt_url(secret_key: str, url: str) -> bytes:
    return encrypt_api_key(secret_key, url)


def decrypt_url(secret_key: str, token: bytes) -> str:
    try:
        return decrypt_api_key(secret_key, token)
    except KeyUnavailable:
        raise KeyUnavailable(
            "the channel's URL cannot be decrypted (TERMPULSE_SECRET_KEY changed?): enter it again"
        ) from None


async def send(url: str, title: str, body: str, *, kind: str = "test", timeout_s: float = 20.0) -> SendResult:
    """Send one message through Apprise; what the service answered, in words."""
    started = time.monotonic()
    sender = apprise.Apprise()
    if not sender.add(url):
        return SendResult(False, "Apprise does not understand this channel's URL", 0)
    try:
        result = await asyncio.wait_for(
            sender.async_notify(
                body=body,
                title=title,
                notify_type=_TYPES.get(kind, apprise.NotifyType.INFO),
                body_format=apprise.NotifyFormat.TEXT,
                timeout=timeout_s,
            ),
            timeout_s + 5,
        )
    except TimeoutError:
        return SendResult(False, f"no answer within {timeout_s:g} s", _ms(started))
    except Exception as exc:  # a plugin's own failure is this channel's failure, never the worker's
        return SendResult(False, f"{type(exc).__name__}: {exc}", _ms(started))
    lines = [_log_text(entry) for entry in result.logs()]
    ok = bool(result)
    detail = "; ".join(line for line in lines if line) or (
        "delivered" if ok else f"failed ({result.status.name})"
    )
    return SendResult(ok, detail[:2000], _ms(started))


def _log_text(entry: object) -> str:
    text = str(entry)
    # "2026-11-28 08:27:53,523 - WARNING - Failed to send ...": keep the message.
    return text.split(" - ", 2)[-1].strip()


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
