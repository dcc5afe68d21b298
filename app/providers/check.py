"""One-off provider calls: test an account, ask one terminal's cloud status right now."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx

from app.checks.diagnoses import explain
from app.checks.result import ProbeResult, Step, step
from app.providers.adapters import make_adapter
from app.providers.crypto import KeyUnavailable, decrypt_api_key
from app.providers.hosts import ProviderHosts
from app.providers.http import ProviderError, ProviderHTTP
from app.vocabulary import Outcome

_T = TypeVar("_T")


async def _with_adapter(
    secret_key: str,
    account: Any,
    client: httpx.AsyncClient | None,
    call: Callable[[Any], Awaitable[_T]],
    hosts: ProviderHosts,
) -> _T:
    """`call(adapter)` with the account's adapter, on `client` or a client of its own."""
    own = client is None
    client = client or httpx.AsyncClient()
    try:
        adapter = make_adapter(
            account,
            decrypt_api_key(secret_key, account.api_key_encrypted),
            ProviderHTTP(client, retries=0, timeout_s=10, hosts=hosts),
        )
        return await call(adapter)
    finally:
        if own:
            await client.aclose()


async def try_account(
    secret_key: str, account: Any, *, hosts: ProviderHosts, client: httpx.AsyncClient | None = None
) -> tuple[bool, str]:
    """One cheap call with the stored key: (ok, what people should read)."""
    started = time.perf_counter()
    try:
        if account.kind == "adyen":
            poll = await _with_adapter(secret_key, account, client, lambda a: a.poll_store(None), hosts)
            seen = f"{len(poll.devices)} terminal(s) connected right now"
        else:
            readers = await _with_adapter(secret_key, account, client, lambda a: a.readers(None), hosts)
            seen = f"{len(readers)} reader(s) registered"
    except KeyUnavailable as exc:
        return False, str(exc)
    except ProviderError as exc:
        d = explain(exc.code, target=account.name, error=exc.detail)
        return False, f"{d.title}: {exc.detail}. {d.fix}"
    return True, f"The provider accepted the key ({(time.perf_counter() - started) * 1000:.0f} ms): {seen}."


async def cloud_status_now(
    secret_key: str,
    account: Any,
    poiid: str,
    reader_id: str,
    *,
    hosts: ProviderHosts,
    client: httpx.AsyncClient | None = None,
) -> ProbeResult:
    """The provider's answer for one terminal right now (Adyen device status by POIID, Stripe
    reader by `reader_id`), as a probe result."""
    started = time.perf_counter()

    def steps(ok: bool, detail: str) -> list[Step]:
        return [step("provider API", ok, (time.perf_counter() - started) * 1000, detail)]

    try:
        if account.kind == "adyen":
            connected = await _with_adapter(
                secret_key, account, client, lambda a: a.device_connected(poiid), hosts
            )
        else:
            connected, _seen = await _with_adapter(
                secret_key, account, client, lambda a: a.device_connected(reader_id), hosts
            )
    except KeyUnavailable as exc:
        return ProbeResult.failed("provider_auth_rejected", str(exc), steps(False, str(exc)), target=poiid)
    except ProviderError as exc:
        ms = (time.perf_counter() - started) * 1000
        cause = explain(exc.code, target=poiid, error=exc.detail).cause
        return ProbeResult.failed(
            exc.code, cause, steps(False, exc.detail), ms, target=poiid, error=exc.detail
        )
    ms = (time.perf_counter() - started) * 1000
    if connected:
        return ProbeResult(
            Outcome.OK, ms, steps(True, "connected"), None, "Terminal is connected", {"target": poiid}
        )
    cause = explain("cloud_disconnected", target=poiid).cause
    return ProbeResult.failed("cloud_disconnected", cause, steps(False, "not connected"), ms, target=poiid)
