"""Stripe Terminal: readers per location (status online/offline, last_seen_at), cursor paging."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx

from app.providers.base import AccountConfig, DeviceState, RemoteTerminal, StorePoll, match_key
from app.providers.http import ProviderError, ProviderHTTP, json_body

PAGE_LIMIT = 100


def api_base(account: AccountConfig) -> str:
    return (account.api_base_url or account.management_base_url or "https://api.stripe.com").rstrip("/")


def _seen(ms: object) -> datetime | None:
    if isinstance(ms, (int, float)) and ms > 0:
        return datetime.fromtimestamp(ms / 1000, UTC)
    return None


class StripeAdapter:
    kind = "stripe"

    def __init__(self, account: AccountConfig, api_key: str, http: ProviderHTTP) -> None:
        self.account = account
        self.http = http
        self._auth = httpx.BasicAuth(api_key, "")

    async def readers(self, location: str | None) -> list[dict[str, Any]]:
        """Every reader (of a location), following `has_more`/`starting_after`."""
        readers: list[dict[str, Any]] = []
        params: dict[str, str | int] = {"limit": PAGE_LIMIT}
        if location:
            params["location"] = location
        while True:
            what = "terminal readers"
            response = await self.http.request(
                "GET",
                f"{api_base(self.account)}/v1/terminal/readers",
                what=what,
                auth=self._auth,
                params=params,
            )
            body = json_body(response, what)
            page = body.get("data")
            if not isinstance(page, list):
                raise ProviderError("provider_unavailable", f"{what}: 'data' is not a list")
            readers += page
            if not body.get("has_more") or not page:
                return readers
            params = {**params, "starting_after": page[-1]["id"]}

    async def poll_store(self, store_ref: str | None) -> StorePoll:
        poll = StorePoll()
        for reader in await self.readers(store_ref):
            state = DeviceState(
                connected=reader.get("status") == "online",
                last_seen_at=_seen(reader.get("last_seen_at")),
            )
            for key in (reader.get("id"), reader.get("serial_number"), _poiid(reader)):
                if key:
                    poll.devices[match_key(key)] = state
        return poll

    async def device_connected(self, reader_id: str) -> tuple[bool, datetime | None]:
        what = "terminal reader"
        response = await self.http.request(
            "GET",
            f"{api_base(self.account)}/v1/terminal/readers/{reader_id}",
            what=what,
            auth=self._auth,
        )
        body = json_body(response, what)
        return body.get("status") == "online", _seen(body.get("last_seen_at"))

    async def list_terminals(self, store_refs: list[str]) -> list[RemoteTerminal]:
        wanted = set(store_refs)
        return [_remote(r) for r in await self.readers(None) if not wanted or r.get("location") in wanted]


def _poiid(reader: dict[str, Any]) -> str | None:
    if reader.get("device_type") and reader.get("serial_number"):
        return f"{reader['device_type']}-{reader['serial_number']}"
    return None


def _remote(reader: dict[str, Any]) -> RemoteTerminal:
    return RemoteTerminal(
        provider="stripe",
        store_ref=reader.get("location"),
        poiid=_poiid(reader) or str(reader.get("id")),
        model=str(reader.get("device_type") or ""),
        serial=str(reader.get("serial_number") or ""),
        label=str(reader.get("label") or ""),
        provider_terminal_id=reader.get("id"),
        lan_host=reader.get("ip_address") or None,
        extra={"last_seen": _seen(reader.get("last_seen_at"))} if reader.get("last_seen_at") else {},
    )
