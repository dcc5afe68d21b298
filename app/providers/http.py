"""Calling a provider API: request budget, retries with backoff, and errors named as diagnoses.

Every failure of the provider's API becomes a `ProviderError` whose `code` is one of the
diagnoses that make a monitor `unknown` (never `down`): provider_auth_rejected (401/403),
provider_rate_limited (429, with the Retry-After to honour) and provider_unavailable
(5xx, timeouts, connection errors, garbage answers), after retrying the transient ones.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx

from app.providers.hosts import ProviderHosts

log = logging.getLogger(__name__)

DEFAULT_RETRY_AFTER_S = 30.0
MAX_RETRY_AFTER_S = 3600.0


class ProviderError(Exception):
    def __init__(
        self, code: str, detail: str, *, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.status = status
        self.retry_after = retry_after


class TokenBucket:
    """`rate` requests per second on average, bursts up to `burst`; waiters queue fairly."""

    def __init__(self, rate: float, burst: float | None = None) -> None:
        self.rate = max(float(rate), 0.01)
        self.burst = max(float(burst if burst is not None else max(1.0, self.rate)), 1.0)
        self.tokens = self.burst
        self.updated = time.monotonic()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now

    async def acquire(self) -> None:
        async with self._lock:  # one waiter at a time keeps the order and the arithmetic simple
            self._refill()
            if self.tokens < 1:
                await asyncio.sleep((1 - self.tokens) / self.rate)
                self._refill()
            self.tokens -= 1

    def reconfigure(self, rate: float) -> None:
        rate = max(float(rate), 0.01)
        if rate != self.rate:
            self.rate, self.burst = rate, max(1.0, rate)
            self.tokens = min(self.tokens, self.burst)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


class ProviderHTTP:
    """One provider account's calls: budgeted, retried, classified. Never logs credentials."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        bucket: TokenBucket | None = None,
        *,
        retries: int = 2,
        backoff_s: float = 0.5,
        timeout_s: float = 10.0,
        counter: Callable[[str], None] | None = None,
        hosts: ProviderHosts,
    ) -> None:
        self.client = client
        self.hosts = hosts  # where the key may go: checked before every request
        self.bucket = bucket
        self.retries = retries
        self.backoff_s = backoff_s
        self.timeout_s = timeout_s
        self.counter = counter  # counter(what): counts calls actually sent

    async def request(self, method: str, url: str, *, what: str, **kwargs: Any) -> httpx.Response:
        """Returns a 2xx response or raises ProviderError. `what` names the call in errors."""
        refused = self.hosts.refusal(url)
        if refused is not None:  # never send the key there, whatever the account says
            raise ProviderError("provider_unavailable", f"{what}: not sent, {refused}")
        attempt = 0
        while True:
            if self.bucket is not None:
                await self.bucket.acquire()
            if self.counter is not None:
                self.counter(what)
            try:
                response = await self.client.request(method, url, timeout=self.timeout_s, **kwargs)
            except httpx.TimeoutException:
                error = ProviderError(
                    "provider_unavailable", f"{what}: no answer within {self.timeout_s:g} s"
                )
            except httpx.HTTPError as exc:
                error = ProviderError("provider_unavailable", f"{what}: {type(exc).__name__}")
            else:
                status = response.status_code
                if 200 <= status < 300:
                    return response
                if status in (401, 403):
                    raise ProviderError(
                        "provider_auth_rejected",
                        f"{what}: HTTP {status}, the API key was rejected or lacks the needed role",
                        status=status,
                    )
                if status == 429:
                    retry_after = parse_retry_after(response.headers.get("Retry-After"))
                    raise ProviderError(
                        "provider_rate_limited",
                        f"{what}: HTTP 429 rate-limited",
                        status=status,
                        retry_after=retry_after if retry_after is not None else DEFAULT_RETRY_AFTER_S,
                    )
                if status >= 500:
                    error = ProviderError("provider_unavailable", f"{what}: HTTP {status}", status=status)
                else:  # 400/404...: our request is wrong; retrying does not help
                    raise ProviderError("provider_unavailable", f"{what}: HTTP {status}", status=status)
            if attempt >= self.retries:
                raise error
            attempt += 1
            delay = self.backoff_s * (2 ** (attempt - 1)) * (1 + random.random() * 0.25)
            log.info(
                "provider call failed, retrying",
                extra={"call": what, "error": error.detail, "attempt": attempt, "delay_s": round(delay, 2)},
            )
            await asyncio.sleep(delay)


def json_body(response: httpx.Response, what: str) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        raise ProviderError("provider_unavailable", f"{what}: the answer is not JSON") from None
    if not isinstance(body, dict):
        raise ProviderError("provider_unavailable", f"{what}: unexpected answer shape")
    return body
