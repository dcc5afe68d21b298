"""The agent's side of `/api/agent/v1`: one HTTP client, errors by kind, logs without secrets.

Every call goes through `AgentAPI.request`, which:

* waits at the **gate**: after a 401 (token refused) no call is made for `auth_retry_s`, after
  a 429 none until its `Retry-After`, so a revoked token or a rate limit never makes the
  agent spin, whichever of its loops hit it;
* turns failures into exceptions the loops act on: `Unreachable` (network error, timeout,
  5xx: back off and retry), `Refused` (401/403), `RateLimited` (429), `Rejected` (any other
  4xx: this request will not succeed as it is);
* logs the link going down and coming back once each, not at every retry. Log lines name the
  call (method and path) and the status or the error's class, never the token: it is sent
  in a header only, and error texts are scrubbed of it anyway.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import ssl
import time
from typing import Any

import httpx

from app import __version__

log = logging.getLogger(__name__)

API_PREFIX = "/api/agent/v1"


class AgentAPIError(Exception):
    def __init__(self, call: str, status: int | None, text: str):
        super().__init__(f"{call}: {text}")
        self.call = call
        self.status = status
        self.text = text


class Unreachable(AgentAPIError):
    """No answer (network error, timeout) or a 5xx: try again later."""


class Refused(AgentAPIError):
    """401: the token is unknown or revoked. 403: not this agent's to read or write."""


class RateLimited(AgentAPIError):
    """429: the gate is closed until its Retry-After."""


class Rejected(AgentAPIError):
    """Another 4xx (400, 404, 413, 422 ...): this request will not succeed as it is."""


def retry_after_s(value: str | None, default: float) -> float:
    """A Retry-After header (seconds, or an HTTP date) as seconds from now."""
    if not value:
        return default
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return default
    return max(0.0, when.timestamp() - time.time())


class AgentAPI:
    """The server's agent API, for one agent token."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        verify: ssl.SSLContext | bool = True,
        auth_retry_s: float = 60.0,
        timeout_s: float = 15.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ):
        self._token = token
        self.auth_retry_s = auth_retry_s
        self.http = httpx.AsyncClient(
            base_url=base_url.rstrip("/") + API_PREFIX,
            headers={
                "Authorization": f"Bearer {token}",
                "User-Agent": f"termpulse-agent/{__version__}",
            },
            verify=verify,
            timeout=timeout_s,
            transport=transport,
            follow_redirects=False,
            trust_env=False,  # no proxy or netrc surprises: the agent talks to its server only
            limits=httpx.Limits(max_connections=8, max_keepalive_connections=4, keepalive_expiry=60),
        )
        self._not_before = 0.0  # loop time before which no call is made (401, 429)
        self.reachable: bool | None = None  # None until the first answer or failure
        self._down_since: float | None = None
        self._refused_logged = False
        self.calls = 0
        self.failures = 0

    async def aclose(self) -> None:
        await self.http.aclose()

    def _scrub(self, text: str) -> str:
        return text.replace(self._token, "<token>") if self._token else text

    def describe(self, exc: BaseException) -> str:
        """An exception as one safe, short line: its class and message, without the token."""
        text = self._scrub(str(exc)).strip()
        return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__

    # --- the gate

    async def wait_gate(self) -> None:
        # A loop, not one sleep: another call may push the gate further while we wait.
        loop = asyncio.get_running_loop()
        delay = self._not_before - loop.time()
        while delay > 0:
            await asyncio.sleep(delay)
            delay = self._not_before - loop.time()

    def gate_s(self) -> float:
        """How long the next call would wait at the gate."""
        return max(0.0, self._not_before - asyncio.get_running_loop().time())

    def _close_gate(self, seconds: float) -> None:
        self._not_before = max(self._not_before, asyncio.get_running_loop().time() + seconds)

    # --- the link

    def _down(self, call: str, why: str) -> None:
        self.failures += 1
        if self.reachable is not False:
            self._down_since = time.monotonic()
            log.warning(
                "server unreachable (%s: %s): checks go on, results are kept until it answers", call, why
            )
        else:
            log.debug("server still unreachable (%s: %s)", call, why)
        self.reachable = False

    def _up(self) -> None:
        if self.reachable is False and self._down_since is not None:
            log.info("server reachable again after %.0f s", time.monotonic() - self._down_since)
        self.reachable = True
        self._down_since = None

    # --- calls

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
        params: dict[str, Any] | None = None,
        call_timeout_s: float | None = None,
    ) -> httpx.Response:
        """One call; returns 2xx and 304 answers, raises AgentAPIError for everything else."""
        await self.wait_gate()
        call = f"{method} {API_PREFIX}{path}"
        self.calls += 1
        extra: dict[str, Any] = {} if call_timeout_s is None else {"timeout": call_timeout_s}
        try:
            response = await self.http.request(
                method, path, json=json, content=content, headers=headers, params=params, **extra
            )
        except httpx.HTTPError as exc:
            why = self.describe(exc)
            self._down(call, why)
            raise Unreachable(call, None, why) from None
        status = response.status_code
        if status >= 500:
            self._down(call, f"HTTP {status}")
            raise Unreachable(call, status, f"HTTP {status}")
        self._up()
        if status < 300 or status == 304:
            if status < 400 and self._refused_logged:
                log.info("the server accepts the agent token again")
                self._refused_logged = False
            return response
        if status == 401:
            self._close_gate(self.auth_retry_s)
            if not self._refused_logged:
                log.error(
                    "the server refused the agent token (%s: HTTP 401): it is wrong or was revoked. "
                    "Checks go on and results are kept; retrying every %.0f s. Give the agent a new "
                    "token (termpulse agent-token) and restart it.",
                    call,
                    self.auth_retry_s,
                )
                self._refused_logged = True
            raise Refused(call, status, "HTTP 401: token refused")
        if status == 403:
            raise Refused(call, status, f"HTTP 403: {self._detail(response)}")
        if status == 429:
            wait = retry_after_s(response.headers.get("Retry-After"), 5.0)
            self._close_gate(wait)
            log.warning("rate limited by the server (%s: HTTP 429): waiting %.0f s", call, wait)
            raise RateLimited(call, status, f"HTTP 429, retry after {wait:.0f} s")
        raise Rejected(call, status, f"HTTP {status}: {self._detail(response)}")

    def _detail(self, response: httpx.Response) -> str:
        """The server's {"detail": ...} if it sent one, shortened and scrubbed."""
        try:
            detail = response.json().get("detail", "")
        except (ValueError, AttributeError):
            detail = ""
        return self._scrub(str(detail))[:200] or response.reason_phrase
