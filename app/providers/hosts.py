"""Where a provider API key may be sent: the official API hosts, and what an admin adds.

A provider account's URLs are checked against this when the account is saved (a field error)
and every call is checked again right before it is sent (`ProviderHTTP`), so a stored key never
leaves for a host that is not on the list, whatever the database says.

* official: HTTPS to `api.stripe.com` or to a host under `adyen.com` (device-api-live-us...,
  management-test...);
* `TERMPULSE_PROVIDER_HOSTS`: `host` or `host:port` entries an admin adds on purpose (a proxy, a
  simulator on loopback), over http or https.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from app.config import Settings

OFFICIAL_HOSTS = frozenset({"api.stripe.com"})
OFFICIAL_DOMAINS = ("adyen.com",)


def _host_port(entry: str) -> tuple[str, int | None]:
    entry = entry.strip().lower()
    parts = urlsplit(entry if "//" in entry else f"//{entry}")
    try:
        port = parts.port
    except ValueError:
        port = None
    return (parts.hostname or entry).rstrip("."), port


class ProviderHosts:
    def __init__(self, extra: Iterable[str] = ()) -> None:
        self.extra = frozenset(_host_port(e) for e in extra if e.strip())

    @classmethod
    def from_settings(cls, settings: Settings) -> ProviderHosts:
        return cls(settings.provider_hosts)

    def refusal(self, url: str) -> str | None:
        """Why a key must not be sent to `url` (None: it may)."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            return f"{url!r} is not a URL"
        host = (parts.hostname or "").lower().rstrip(".")
        if not host or parts.scheme not in ("http", "https"):
            return f"{url!r} is not an http(s) URL"
        default_port = 443 if parts.scheme == "https" else 80
        if (host, None) in self.extra or (host, port or default_port) in self.extra:
            return None
        official = host in OFFICIAL_HOSTS or any(host.endswith(f".{d}") for d in OFFICIAL_DOMAINS)
        if official and parts.scheme == "https":
            return None
        if official:
            return f"{host} is called over HTTPS only"
        return (
            f"{host} is not a provider API host: the official hosts (api.stripe.com, *.adyen.com) "
            "or one an administrator lists in TERMPULSE_PROVIDER_HOSTS"
        )

    def allows(self, url: str) -> bool:
        return self.refusal(url) is None
