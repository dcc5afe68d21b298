"""One-off provider calls: test an account, ask one terminal's cloud status right now."""

from __future__ import annotations

import time

import httpx

from app.checks.diagnoses import explain
from app.checks.result import ProbeResult
from app.providers.crypto import KeyUnavailable, decrypt_api_key
from app.providers.http import ProviderError, ProviderHTTP
from app.providers.poller import make_adapter


async def _with_adapter(secret_key: str, account, client: httpx.AsyncClient | None, call):
    own = client is None
    client = client or httpx.AsyncClient()
    try:
        adapter = make_adapter(
            account,
            decrypt_api_key(secret_key, account.api_key_encrypted),
            ProviderHTTP(client, retries=0, timeout_s=10),
        )
        return await call(adapter)
    finally:
        if own:
            await client.aclose()


async def try_account(
    secret_key: str, account, *, client: httpx.AsyncClient | None = None
) -> tuple[bool, str]:
    """One cheap call with the stored key: (ok, what people should read)."""
    started = time.perf_counter()
    try:
        if account.kind == "adyen":
            poll = await _with_adapter(secret_key, account, client, lambda a: a.poll_store(None))
            seen = f"{len(poll.devices)} terminal(s) connected right now"
        else:
            readers = await _with_adapter(secret_key, account, client, lambda a: a.readers(None))
            seen = f"{len(readers)} reader(s) registered"
    except KeyUnavailable as exc:
        return False, str(exc)
    except ProviderError as exc:
        d = explain(exc.code, target=account.name, error=exc.detail)
        return False, f"{d.title}: {exc.detail}. {d.fix}"
    return True, f"The provider accepted the key ({(time.perf_counter() - started) * 1000:.0f} ms): {seen}."


async def cloud_status_now(
    secret_key: str, account, terminal, *, client: httpx.AsyncClient | None = None
) -> ProbeResult:
    """The provider's answer for one terminal (Adyen device status, Stripe reader), as a probe result."""
    started = time.perf_counter()
    ctx = {"target": terminal.poiid}

    def step(ok: bool, detail: str) -> list[dict]:
        return [
            {
                "step": "provider API",
                "ok": ok,
                "ms": round((time.perf_counter() - started) * 1000, 3),
                "detail": detail,
            }
        ]

    try:
        if account.kind == "adyen":
            connected = await _with_adapter(
                secret_key, account, client, lambda a: a.device_connected(terminal.poiid)
            )
        else:
            reader = terminal.provider_terminal_id or f"tmr_{terminal.serial}"
            connected, _seen = await _with_adapter(
                secret_key, account, client, lambda a: a.device_connected(reader)
            )
    except KeyUnavailable as exc:
        detail = str(exc)
        return ProbeResult("error", 0.0, step(False, detail), "provider_auth_rejected", detail, ctx)
    except ProviderError as exc:
        ctx["error"] = exc.detail
        return ProbeResult(
            "error",
            (time.perf_counter() - started) * 1000,
            step(False, exc.detail),
            exc.code,
            explain(exc.code, **ctx).cause,
            ctx,
        )
    ms = (time.perf_counter() - started) * 1000
    if connected:
        return ProbeResult("ok", ms, step(True, "connected"), None, "Terminal is connected", ctx)
    return ProbeResult(
        "fail",
        ms,
        step(False, "not connected"),
        "cloud_disconnected",
        explain("cloud_disconnected", **ctx).cause,
        ctx,
    )


async def cloud_status_for_terminal(database, secret_key: str, terminal_id: int) -> ProbeResult | None:
    """Ask the terminal's provider now (Check connection). None when no provider account
    covers it: the caller then reports the last poll."""
    from sqlalchemy import select

    from app.inventory.models import Terminal
    from app.providers.models import ProviderAccount

    async with database.sessionmaker() as session:
        terminal = await session.get(Terminal, terminal_id)
        query = select(ProviderAccount).where(ProviderAccount.kind == terminal.provider)
        if terminal.provider_account_id is not None:
            query = select(ProviderAccount).where(ProviderAccount.id == terminal.provider_account_id)
        account = (await session.scalars(query.order_by(ProviderAccount.id).limit(1))).first()
    if account is None:
        return None
    return await cloud_status_now(secret_key, account, terminal)
