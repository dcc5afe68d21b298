"""Adyen: cloud connection per store (Cloud Device API v1 or the legacy connectedTerminals call),
one device's status, and the terminal inventory from the Management API v3."""

from __future__ import annotations

import contextlib
from datetime import datetime
from typing import Any
from urllib.parse import quote

from app.poiid import normalise_poiid
from app.providers.base import AccountConfig, DeviceState, RemoteTerminal, StorePoll, match_key
from app.providers.http import ProviderError, ProviderHTTP, json_body


def _live_suffix(account: AccountConfig) -> str:
    region = (account.region or "").strip().lower()
    return f"-{region}" if account.environment == "live" and region and region != "eu" else ""


def device_api_base(account: AccountConfig) -> str:
    if account.api_base_url:
        return account.api_base_url.rstrip("/")
    if account.use_legacy_api:
        return f"https://terminal-api-{account.environment}{_live_suffix(account)}.adyen.com"
    return f"https://device-api-{account.environment}{_live_suffix(account)}.adyen.com/v1"


def management_base(account: AccountConfig) -> str:
    if account.management_base_url:
        return account.management_base_url.rstrip("/")
    return f"https://management-{account.environment}.adyen.com"


class AdyenAdapter:
    kind = "adyen"

    def __init__(self, account: AccountConfig, api_key: str, http: ProviderHTTP) -> None:
        self.account = account
        self.http = http
        self._headers = {"X-API-Key": api_key, "Accept": "application/json"}
        self.merchant = account.merchant_account

    def _ids(self, body: dict[str, Any], field: str, what: str) -> list[str]:
        ids = body.get(field, [])
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise ProviderError("provider_unavailable", f"{what}: '{field}' is not a list of ids")
        return ids

    async def poll_store(self, store_ref: str | None) -> StorePoll:
        """Which terminals of the store have a live cloud connection: one call."""
        if self.account.use_legacy_api:
            what = "connectedTerminals"
            payload = {"merchantAccount": self.merchant}
            if store_ref:
                payload["store"] = store_ref
            response = await self.http.request(
                "POST",
                f"{device_api_base(self.account)}/connectedTerminals",
                what=what,
                headers=self._headers,
                json=payload,
            )
            ids = self._ids(json_body(response, what), "uniqueTerminalIds", what)
        else:
            what = "connectedDevices"
            params = {"store": store_ref} if store_ref else None
            response = await self.http.request(
                "GET",
                f"{device_api_base(self.account)}/merchants/{quote(self.merchant, safe='')}/connectedDevices",
                what=what,
                headers=self._headers,
                params=params,
            )
            ids = self._ids(json_body(response, what), "uniqueDeviceIds", what)
        return StorePoll({match_key(i): DeviceState(True) for i in ids}, empty_means_unknown=True)

    async def device_connected(self, poiid: str) -> bool:
        """One terminal's cloud connection (for Check connection)."""
        if self.account.use_legacy_api:
            what = "connectedTerminals"
            response = await self.http.request(
                "POST",
                f"{device_api_base(self.account)}/connectedTerminals",
                what=what,
                headers=self._headers,
                json={"merchantAccount": self.merchant, "uniqueTerminalId": poiid},
            )
            ids = self._ids(json_body(response, what), "uniqueTerminalIds", what)
            return match_key(poiid) in {match_key(i) for i in ids}
        what = "device status"
        url = (
            f"{device_api_base(self.account)}/merchants/{quote(self.merchant, safe='')}"
            f"/devices/{quote(poiid, safe='')}/status"
        )
        body = json_body(await self.http.request("GET", url, what=what, headers=self._headers), what)
        status = str(body.get("status", "")).upper()
        if status not in ("ONLINE", "OFFLINE"):
            raise ProviderError("provider_unavailable", f"{what}: unexpected status {status!r}")
        return status == "ONLINE"

    async def list_terminals(self, store_refs: list[str]) -> list[RemoteTerminal]:
        """Management API v3 /terminals for these stores, every page."""
        found: list[RemoteTerminal] = []
        for i in range(0, len(store_refs), 20):  # keep the query string short
            chunk = store_refs[i : i + 20]
            page, pages = 1, 1
            while page <= pages:
                what = "management terminals"
                response = await self.http.request(
                    "GET",
                    f"{management_base(self.account)}/v3/terminals",
                    what=what,
                    headers=self._headers,
                    params={"storeIds": ",".join(chunk), "pageNumber": page, "pageSize": 100},
                )
                body = json_body(response, what)
                pages = int(body.get("pagesTotal") or 1)
                for item in body.get("data") or []:
                    found.append(_remote(item))
                page += 1
        return found


def _remote(item: dict[str, Any]) -> RemoteTerminal:
    connectivity = item.get("connectivity") or {}
    ethernet = connectivity.get("ethernet") or {}
    wifi = connectivity.get("wifi") or {}
    host = ethernet.get("ipAddress") or wifi.get("ipAddress") or None
    mac = ethernet.get("macAddress") or wifi.get("macAddress") or None
    extra = {}
    if item.get("firmwareVersion"):
        extra["firmware"] = item["firmwareVersion"]
    if item.get("lastActivityAt"):
        with contextlib.suppress(ValueError):
            extra["last_activity"] = datetime.fromisoformat(
                str(item["lastActivityAt"]).replace("Z", "+00:00")
            )
    terminal_id = normalise_poiid(str(item.get("id") or ""))
    return RemoteTerminal(
        provider="adyen",
        store_ref=(item.get("assignment") or {}).get("storeId"),
        poiid=terminal_id,
        model=str(item.get("model") or ""),
        serial=str(item.get("serialNumber") or ""),
        provider_terminal_id=None,
        lan_host=host,
        mac=mac,
        extra=extra,
    )
