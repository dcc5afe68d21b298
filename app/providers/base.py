"""What the adapters return: a store's cloud picture and a provider's terminal inventory."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from app.poiid import normalise_poiid


class AccountConfig(Protocol):
    """What the adapters read of a provider account: a ProviderAccount, or a snapshot of one
    (the adapters know no database model)."""

    @property
    def kind(self) -> str: ...
    @property
    def environment(self) -> str: ...
    @property
    def region(self) -> str: ...
    @property
    def merchant_account(self) -> str: ...
    @property
    def api_base_url(self) -> str | None: ...
    @property
    def management_base_url(self) -> str | None: ...
    @property
    def use_legacy_api(self) -> bool: ...


@dataclass
class DeviceState:
    connected: bool
    last_seen_at: datetime | None = None  # only when the provider tells it (Stripe)
    detail: str = ""


@dataclass
class StorePoll:
    """One provider call's answer for one store, keyed by the identifiers it can be matched on."""

    devices: dict[str, DeviceState] = field(default_factory=dict)
    empty_means_unknown: bool = False  # Adyen: an empty list may mean "WebSockets not enabled"

    def lookup(self, *keys: str | None) -> DeviceState | None:
        for key in keys:
            if key:
                state = self.devices.get(match_key(key))
                if state is not None:
                    return state
        return None


def match_key(value: str) -> str:
    """POIIDs, serials and ids compared after normalisation (Adyen prints U+2011 dashes)."""
    return normalise_poiid(value).lower()


@dataclass
class RemoteTerminal:
    """A terminal as the provider's inventory lists it."""

    provider: str
    store_ref: str | None  # Adyen store id / Stripe location id
    poiid: str
    model: str = ""
    serial: str = ""
    label: str = ""
    provider_terminal_id: str | None = None
    lan_host: str | None = None
    mac: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # firmware, last activity: shown, not stored
