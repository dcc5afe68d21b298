"""The https and paynt_epos probes: httpx, with per-phase timings from its trace hook.

We resolve the name ourselves (our resolver, then the guard) and send the request to
that address, keeping the name for the Host header, SNI and certificate check: httpx
never resolves anything, so it can't reach an address the guard did not see.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import Iterator
from typing import Any

import httpx

from app.checks import identity, net
from app.checks.context import ProbeContext, resolve_and_guard, split_host_port
from app.checks.resolver import is_ip_literal
from app.checks.result import ProbeFailure, ProbeResult, Run
from app.checks.transport import check_certificate, describe_rejected, not_speaking_tls

EPOS_BASE = "/payntpos/1.0.0"
_MAX_BODY = 64 * 1024  # enough to see the answer; a check never downloads a page


class _Phases:
    """Collects httpx/httpcore trace events: when each phase started and ended."""

    def __init__(self) -> None:
        self.t: dict[str, float] = {}
        self.current = "connect"  # the phase a failure happened in

    async def __call__(self, event: str, info: dict) -> None:
        name, _, state = event.rpartition(".")
        self.t[event] = time.perf_counter()
        if state == "started":
            self.current = {
                "connection.connect_tcp": "connect",
                "connection.start_tls": "tls",
            }.get(name, "http")

    def ms(self, start: str, end: str) -> float | None:
        a, b = self.t.get(start), self.t.get(end)
        return (b - a) * 1000 if a is not None and b is not None else None


def expected_statuses(spec: list[int | str] | None) -> set[int]:
    """[200, 204, "3xx"] -> a set of codes; default every 2xx and 3xx."""
    codes: set[int] = set()
    for item in spec or ["2xx", "3xx"]:
        text = str(item).lower()
        if text.endswith("xx") and text[0].isdigit():
            codes.update(range(int(text[0]) * 100, int(text[0]) * 100 + 100))
        else:
            codes.add(int(text))
    return codes


def _describe(codes: set[int]) -> str:
    classes = sorted({c // 100 for c in codes if set(range(c // 100 * 100, c // 100 * 100 + 100)) <= codes})
    singles = sorted(c for c in codes if c // 100 not in classes)
    return ", ".join([f"{c}xx" for c in classes] + [str(c) for c in singles])


async def probe_https(run: Run, ctx: ProbeContext, target: str, params: dict) -> ProbeResult:
    url = httpx.URL(target)
    if url.scheme not in ("http", "https") or not url.host:
        raise ProbeFailure("internal_error", f"not an http(s) URL: {target}", error="bad URL")
    port = url.port or (443 if url.scheme == "https" else 80)
    run.context.update(host=url.host, port=port, target=target)
    return await _http_check(run, ctx, url, port, params, epos=False)


async def probe_paynt_epos(run: Run, ctx: ProbeContext, target: str, params: dict) -> ProbeResult:
    host, port = split_host_port(target)
    path = params.get("path", EPOS_BASE)
    url = httpx.URL(scheme="https", host=host.strip("[]"), port=port, path=path)
    run.context.update(host=host, port=port, target=str(url))
    # Terminals present self-signed certificates; it is a terminal (identity, plain HTTP).
    params = {"accept_self_signed": True, "terminal": True, **params}
    headers = dict(params.get("headers") or {})
    if params.get("token"):
        headers["Authorization"] = str(params["token"])
    return await _http_check(run, ctx, url, port, {**params, "headers": headers}, epos=True)


async def _http_check(
    run: Run, ctx: ProbeContext, url: httpx.URL, port: int, params: dict[str, Any], epos: bool
) -> ProbeResult:
    source = params.get("source")
    address = await resolve_and_guard(run, ctx, url.host, params)
    tls = url.scheme == "https"
    sslctx = ctx.ssl_for(params) if tls else ctx.insecure_ssl  # unused for plain http
    phases = _Phases()
    try:
        response, cert = await _send(run, url, address, port, params, sslctx, phases, source)
    except ProbeFailure as exc:
        if exc.code == "tls_handshake_failed" and tls and identity.is_terminal(params):
            raise await not_speaking_tls(run, exc, params, address, port, url.host, source) from None
        raise
    details = {"connect": f"connected to {address}:{port}"}
    if cert is not None:
        details["tls"] = (
            f"{cert.protocol}; subject {cert.subject}; issuer {cert.issuer}; expires {cert.not_after}"
        )
    _record_phases(run, phases, tls, details)
    # Who answers first (it takes precedence over certificate, 401 and HTTP findings), then
    # the certificate's pin, issuer and expiry, then the HTTP status.
    pending = None
    if tls and cert is not None:
        pending = identity.check_certificate(
            run, params, cert.fingerprint, cert.subject, api_reports_later=epos
        )
    device = _reported_device(response)
    renewed = pending is not None and identity.renewed(run, params, pending, device)
    identity.check_reported(run, params, device)
    if tls and cert is not None:
        check_certificate(run, ctx, cert, params)
        identity.record(run, params, cert.fingerprint, cert.subject, device, renewed=renewed)
    return _judge(run, response, params, epos)


def _reported_device(response: httpx.Response) -> str | None:
    """The POIID or serial a terminal's local API reports in its JSON answer, if it does."""
    body = getattr(response, "_probe_body", b"")
    if not body.lstrip().startswith(b"{"):
        return None
    try:
        data = json.loads(body)
    except ValueError:
        return None
    for key in ("poiid", "POIID", "serial", "serialNumber", "serial_number"):
        value = data.get(key) if isinstance(data, dict) else None
        if isinstance(value, str) and value.strip():
            return value.strip()[:64]
    return None


async def _send(
    run: Run,
    url: httpx.URL,
    address: str,
    port: int,
    params: dict[str, Any],
    sslctx: ssl.SSLContext,
    phases: _Phases,
    source: str | None,
) -> tuple[httpx.Response, net.CertInfo | None]:
    """One request to the resolved address; returns (response with body read, cert info)."""
    request_url = url.copy_with(host=address) if not is_ip_literal(url.host) else url
    headers = {"Host": url.netloc.decode("ascii"), **(params.get("headers") or {})}
    extensions: dict[str, Any] = {"trace": phases}
    if not is_ip_literal(url.host):
        extensions["sni_hostname"] = url.host  # and the certificate is checked against it
    transport = httpx.AsyncHTTPTransport(verify=sslctx, retries=0, local_address=source)
    timeout = httpx.Timeout(run.remaining())
    async with httpx.AsyncClient(transport=transport, trust_env=False, timeout=timeout) as client:
        try:
            async with asyncio.timeout(run.remaining()):
                request = client.build_request(
                    params.get("method", "GET"), request_url, headers=headers, extensions=extensions
                )
                response = await client.send(request, stream=True)
                cert = _peer_cert(response)
                body = b""
                async for chunk in response.aiter_raw():
                    body += chunk
                    if len(body) >= _MAX_BODY:
                        break
                await response.aclose()
        except ProbeFailure:
            raise
        except (httpx.HTTPError, TimeoutError, OSError, ssl.SSLError) as exc:
            raise await _classify(run, exc, phases, address, port, url, source) from None
    response._probe_body = body  # type: ignore[attr-defined]
    return response, cert


def _peer_cert(response: httpx.Response) -> net.CertInfo | None:
    stream = response.extensions.get("network_stream")
    ssl_obj = stream.get_extra_info("ssl_object") if stream is not None else None
    der = ssl_obj.getpeercert(binary_form=True) if ssl_obj is not None else None
    info = net.CertInfo.from_der(der) if der else None
    if info is not None and ssl_obj is not None:
        info.protocol = ssl_obj.version()
    return info


def exception_chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception and its causes, outermost first."""
    seen = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


async def _classify(
    run: Run,
    exc: BaseException,
    phases: _Phases,
    address: str,
    port: int,
    url: httpx.URL,
    source: str | None,
) -> ProbeFailure:
    """Name an httpx failure from the phase it happened in and the OS/SSL error under it."""
    phase = phases.current
    _record_phases(run, phases, tls=True)  # the phases that did complete
    # The failed step, timed from when it really started.
    start = phases.t.get(
        {"connect": "connection.connect_tcp.started", "tls": "connection.start_tls.started"}.get(
            phase, "http11.send_request_headers.started"
        )
    )
    run.begin("first_byte" if phase == "http" else phase, at=start)
    errors = list(exception_chain(exc))
    timed_out = any(isinstance(e, (httpx.TimeoutException, TimeoutError)) for e in errors)
    verify = next((e for e in errors if isinstance(e, ssl.SSLCertVerificationError)), None)
    oserr = next((e for e in errors if isinstance(e, OSError) and e.errno), None)
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if verify is not None:
        code = net.verify_diagnosis(verify.verify_code)
        failure = ProbeFailure(code, f"certificate rejected: {verify.verify_message}")
        sni = None if is_ip_literal(url.host) else url.host
        await describe_rejected(run, failure, address, port, sni, source)
        return failure
    if phase == "connect":
        if timed_out:
            return ProbeFailure("tcp_timeout", f"connect to {address}:{port} timed out")
        return ProbeFailure(net.classify_errno(oserr.errno if oserr else None), text, error=text)
    if any(isinstance(e, (ConnectionResetError, BrokenPipeError)) for e in errors):
        return ProbeFailure("tcp_reset", f"connection reset during {phase}: {text}")
    if timed_out and phase == "tls":
        return ProbeFailure("tls_stalled", "the TLS handshake did not complete before the timeout")
    if timed_out:
        return ProbeFailure("stalled", f"no answer during {phase} before the timeout")
    if phase == "tls":
        return ProbeFailure("tls_handshake_failed", text, error=text)
    if isinstance(exc, httpx.RemoteProtocolError) and "disconnected" in str(exc):
        # Closed without an answer: the peer dropped us, the nearest named cause is a reset.
        return ProbeFailure("tcp_reset", f"closed without an HTTP answer: {text}")
    if isinstance(exc, (httpx.RemoteProtocolError, httpx.DecodingError)):
        # Named by the error's type only: the parser's message quotes what the target sent.
        what = f"not a valid HTTP answer ({type(exc).__name__})"
        return ProbeFailure("http_status", what, answer="something that is not HTTP")
    return ProbeFailure("internal_error", text, error=text)


def _record_phases(run: Run, phases: _Phases, tls: bool, details: dict | None = None) -> None:
    spans = [
        ("connect", "connection.connect_tcp.started", "connection.connect_tcp.complete"),
        ("tls", "connection.start_tls.started", "connection.start_tls.complete"),
        ("first_byte", "http11.send_request_headers.started", "http11.receive_response_headers.complete"),
    ]
    for step, start, end in spans:
        ms = phases.ms(start, end)
        if ms is not None and (tls or step != "tls"):
            run.add(step, True, ms, (details or {}).get(step, ""))


def _judge(run: Run, response: httpx.Response, params: dict[str, Any], epos: bool) -> ProbeResult:
    status = response.status_code
    expected = expected_statuses(params.get("expect_status"))
    run.context.update(status=status, answer=f"HTTP {status}", expected=_describe(expected))
    detail = f"HTTP {status}"  # the status code only: never a reason phrase or body the target chose
    if status in expected:
        run.add("http", True, 0.0, detail)
        return run.ok(run.elapsed_ms(), detail)
    run.add("http", False, 0.0, detail)
    if status == 401 and epos:
        raise ProbeFailure("http_401", detail)
    if status >= 500:
        raise ProbeFailure("http_5xx", detail)
    raise ProbeFailure("http_status", detail)
