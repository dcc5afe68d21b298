"""Inventory sync: import or refresh terminals from a provider's own inventory.

Adyen: Management API v3 /terminals of the stores TermPulse knows (by Adyen store id).
Stripe: every reader, placed by its location. A preview lists what would be created,
updated or left alone (and which address changed) before anything is written; applying
goes through `upsert_inventory`, the same path as the CSV import, so an address change
records an `address_changed` event and the monitors are re-derived.

A preview is kept nowhere: its token is a digest of what it shows, and applying makes the
preview again and writes it only when it is still the same (any web process may get the
apply; a provider or an edit that changed meanwhile, or a preview applied already, is a 409).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass, field

import httpx
from pydantic import ValidationError
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import Conflict, UpstreamFailed
from app.inventory.models import Store, Terminal
from app.inventory.schemas import TerminalIn, field_errors
from app.inventory.service import UpsertSummary, upsert_inventory
from app.poiid import normalise_poiid
from app.providers.adapters import make_adapter
from app.providers.base import RemoteTerminal
from app.providers.crypto import KeyUnavailable, decrypt_api_key
from app.providers.hosts import ProviderHosts
from app.providers.http import ProviderError, ProviderHTTP, TokenBucket
from app.providers.models import ProviderAccount

_COMPARED = ("store_id", "model", "serial", "label", "provider", "provider_terminal_id", "lan_host", "mac")
_ADDRESS = ("lan_host", "mac")


@dataclass
class SyncRow:
    action: str  # create, update, unchanged, skip
    poiid: str
    store_code: str | None
    remote: RemoteTerminal
    changes: dict[str, tuple] = field(default_factory=dict)  # field -> (now, from the provider)
    reason: str = ""
    item: TerminalIn | None = None

    @property
    def address_changed(self) -> bool:
        return self.action == "update" and any(k in self.changes for k in _ADDRESS)


@dataclass
class SyncPreview:
    account_id: int
    account_name: str
    rows: list[SyncRow]

    @property
    def token(self) -> str:
        """What this preview shows, as a digest: the same preview made again has the same."""
        shown = [
            (r.action, r.poiid, r.store_code, sorted((k, str(v)) for k, v in r.changes.items()), r.reason)
            + ((r.item.model_dump_json(),) if r.item is not None else ())
            for r in self.rows
        ]
        return hashlib.sha256(json.dumps([self.account_id, shown]).encode()).hexdigest()[:32]

    def count(self, action: str) -> int:
        return sum(1 for r in self.rows if r.action == action)

    @property
    def counts(self) -> dict[str, int]:
        return {a: self.count(a) for a in ("create", "update", "unchanged", "skip")} | {
            "address_changed": sum(1 for r in self.rows if r.address_changed)
        }


async def fetch_remote(
    session: AsyncSession,
    secret_key: str,
    account: ProviderAccount,
    *,
    hosts: ProviderHosts,
    client: httpx.AsyncClient | None = None,
) -> list[RemoteTerminal]:
    """The provider's terminals (raises UpstreamFailed when they cannot be read)."""
    try:
        return await _fetch_remote(session, secret_key, account, client, hosts)
    except (ProviderError, KeyUnavailable) as exc:
        raise UpstreamFailed(f"the provider's inventory could not be read: {exc}") from exc


async def _fetch_remote(
    session: AsyncSession,
    secret_key: str,
    account: ProviderAccount,
    client: httpx.AsyncClient | None,
    hosts: ProviderHosts,
) -> list[RemoteTerminal]:
    api_key = decrypt_api_key(secret_key, account.api_key_encrypted)
    ref_col = Store.adyen_store_id if account.kind == "adyen" else Store.stripe_location_id
    refs = sorted(r for r in await session.scalars(select(ref_col)) if r is not None)
    if account.kind == "adyen" and not refs:
        return []
    own = client is None
    client = client or httpx.AsyncClient()
    try:
        http = ProviderHTTP(
            client, TokenBucket(account.requests_per_second), retries=2, timeout_s=20, hosts=hosts
        )
        adapter = make_adapter(account, api_key, http)
        return await adapter.list_terminals(refs if account.kind == "adyen" else [])
    finally:
        if own:
            await client.aclose()


async def build_preview(
    session: AsyncSession, account: ProviderAccount, remote: list[RemoteTerminal]
) -> SyncPreview:
    ref_col = Store.adyen_store_id if account.kind == "adyen" else Store.stripe_location_id
    stores = {
        r.ref: (r.id, r.code)
        for r in (
            await session.execute(
                select(ref_col.label("ref"), Store.id, Store.code).where(ref_col.is_not(None))
            )
        )
    }
    codes = {sid: code for sid, code in stores.values()}
    cols = (Terminal.id, Terminal.poiid, *(getattr(Terminal, c) for c in _COMPARED))
    existing = list(await session.execute(select(*cols).where(Terminal.provider == account.kind)))
    by_poiid = {r.poiid: r for r in existing}
    by_id = {r.provider_terminal_id: r for r in existing if r.provider_terminal_id}
    by_serial = {r.serial: r for r in existing if r.serial}
    if account.kind == "adyen":  # other providers' POIIDs may collide: look them up too
        others = await session.execute(
            select(*cols).where(
                Terminal.poiid.in_(
                    [normalise_poiid(r.poiid) for r in remote if normalise_poiid(r.poiid) not in by_poiid][
                        :5000
                    ]
                )
            )
        )
        by_poiid.update({r.poiid: r for r in others})

    rows: list[SyncRow] = []
    for rt in remote:
        poiid = normalise_poiid(rt.poiid)
        store = stores.get(rt.store_ref) if rt.store_ref else None
        if store is None:
            place = "Adyen store" if account.kind == "adyen" else "Stripe location"
            where = f"{place} {rt.store_ref or '(none)'}"
            rows.append(
                SyncRow("skip", poiid, None, rt, reason=f"{where} is not assigned to any TermPulse store")
            )
            continue
        current = (
            by_poiid.get(poiid)
            or (by_id.get(rt.provider_terminal_id) if rt.provider_terminal_id else None)
            or (by_serial.get(rt.serial) if rt.serial else None)
        )
        if current is not None:
            poiid = current.poiid  # keep the identity (and history) TermPulse already has
        values = {
            "store_code": store[1],
            "poiid": poiid,
            "provider": account.kind,
            "provider_terminal_id": rt.provider_terminal_id,
        }
        for name, value in (
            ("model", rt.model),
            ("serial", rt.serial),
            ("label", rt.label),
            ("lan_host", rt.lan_host),
            ("mac", rt.mac),
        ):
            if value:
                values[name] = value
        if current is None:
            values |= {"integration": "cloud", "cloud_enabled": True}
        try:
            item = TerminalIn(**values)
        except ValidationError as exc:
            problems = "; ".join(f"{k}: {v}" for k, v in field_errors(exc).items())
            rows.append(
                SyncRow("skip", poiid, store[1], rt, reason=f"invalid data from the provider ({problems})")
            )
            continue
        if current is None:
            rows.append(SyncRow("create", poiid, store[1], rt, item=item))
            continue
        wanted = item.model_dump(include=item.model_fields_set - {"store_code", "poiid"})
        wanted["store_id"] = store[0]
        changes = {}
        for name, value in wanted.items():
            if getattr(current, name) != value:
                before, after = getattr(current, name), value
                if name == "store_id":
                    name, before, after = "store", codes.get(before, before), store[1]
                changes[name] = (before, after)
        rows.append(SyncRow("update" if changes else "unchanged", poiid, store[1], rt, changes, item=item))
    order = {"create": 0, "update": 1, "skip": 2, "unchanged": 3}
    rows.sort(key=lambda r: (order[r.action], r.store_code or "", r.poiid))
    return SyncPreview(account.id, account.name, rows)


async def preview_again(
    session: AsyncSession, secret_key: str, account: ProviderAccount, token: str, *, hosts: ProviderHosts
) -> SyncPreview:
    """The preview `token` was given for, made again; Conflict when it is no longer the same."""
    preview = await build_preview(
        session, account, await fetch_remote(session, secret_key, account, hosts=hosts)
    )
    if not hmac.compare_digest(preview.token, token):
        raise Conflict(
            "the provider's terminals or TermPulse's changed since this preview (or it was applied): "
            "preview again"
        )
    return preview


async def apply_preview(
    session: AsyncSession, account: ProviderAccount, preview: SyncPreview
) -> UpsertSummary:
    """Write what the preview showed (all or nothing) and link the terminals to the account."""
    items = [r.item for r in preview.rows if r.action in ("create", "update") and r.item is not None]
    summary = await upsert_inventory(session, [], items, source=f"sync:{account.name}")
    poiids = [r.poiid for r in preview.rows if r.action != "skip"]
    for i in range(0, len(poiids), 5000):
        await session.execute(
            update(Terminal)
            .where(
                Terminal.poiid.in_(poiids[i : i + 5000]),
                Terminal.provider_account_id.is_distinct_from(account.id),
            )
            .values(provider_account_id=account.id)
            .execution_options(synchronize_session=False)
        )
    await session.commit()
    return summary
