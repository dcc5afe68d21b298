"""The adapter for an account's provider kind."""

from __future__ import annotations

from typing import Any

from app.providers.adyen import AdyenAdapter
from app.providers.http import ProviderHTTP
from app.providers.stripe import StripeAdapter

Adapter = AdyenAdapter | StripeAdapter


def make_adapter(account: Any, api_key: str, http: ProviderHTTP) -> Adapter:
    """`account`: a ProviderAccount (or a snapshot of one): kind, URLs, merchant account."""
    if account.kind == "adyen":
        return AdyenAdapter(account, api_key, http)
    if account.kind == "stripe":
        return StripeAdapter(account, api_key, http)
    raise ValueError(f"no adapter for provider kind {account.kind!r}")
