"""The websocket probe: a WebSocket opening handshake (HTTP Upgrade -> 101) with `websockets`.

    target "ws://192.168.1.23:3000/"  or  "wss://host/path"
    params {"headers": {...}, "accept_self_signed": false, "subprotocols": ["json"]}

For services such as Torgsoft's JSON WebSocket on port 3000: a TCP connect says the port is
open, only the handshake says a WebSocket service answers there. We resolve and guard the
address ourselves and hand websockets the connected socket, so it reaches nothing else.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any
from urllib.parse import urlsplit

from websockets.asyncio.client import connect
from websockets.exceptions import InvalidHandshake, InvalidStatus, WebSocketException

from app.checks import net
from app.checks.context import ProbeContext, resolve_and_guard
from app.checks.http import exception_chain
from app.checks.result import ProbeFailure, ProbeResult, Run
from app.checks.transport import describe_rejected


async def probe_websocket(run: Run, ctx: ProbeContext, target: str, params: dict[str, Any]) -> ProbeResult:
    url = urlsplit(target.strip())
    if url.scheme not in ("ws", "wss") or not url.hostname:
        raise ProbeFailure("internal_error", f"not a ws(s) URL: {target}", error="bad URL")
    secure = url.scheme == "wss"
    host = url.hostname
    port = url.port or (443 if secure else 80)
    run.context.update(host=host, port=port, target=target)
    source = params.get("source")
    address = await resolve_and_guard(run, ctx, host, params)
    sock = await net.tcp_connect(run, address, port, source)
    sslctx = ctx.ssl_for(params) if secure else None
    run.begin("handshake")
    try:
        async with asyncio.timeout(run.remaining()):
            ws = await connect(
                target,
                sock=sock,
                ssl=sslctx,
                server_hostname=host if secure else None,
                proxy=None,
                open_timeout=None,  # ours bounds it
                additional_headers=params.get("headers") or None,
                subprotocols=params.get("subprotocols") or None,
                compression=None,
                user_agent_header="TermPulse",
            )
    except ProbeFailure:
        raise
    except TimeoutError:
        sock.close()
        raise ProbeFailure("stalled", "no answer to the WebSocket handshake before the timeout") from None
    except InvalidStatus as exc:
        sock.close()
        status = exc.response.status_code
        run.context.update(status=status, answer=f"HTTP {status}")
        code = "http_5xx" if status >= 500 else "ws_rejected"
        raise ProbeFailure(code, f"upgrade refused: HTTP {status}") from None
    except ssl.SSLCertVerificationError as exc:
        sock.close()
        failure = ProbeFailure(
            net.verify_diagnosis(exc.verify_code), f"certificate rejected: {exc.verify_message}"
        )
        await describe_rejected(run, failure, address, port, host, source)
        raise failure from None
    except ssl.SSLError as exc:
        sock.close()
        text = exc.reason or str(exc)
        raise ProbeFailure("tls_handshake_failed", f"TLS: {text}", error=text) from None
    except (ConnectionResetError, BrokenPipeError, EOFError) as exc:
        sock.close()
        raise ProbeFailure("tcp_reset", f"reset during the WebSocket handshake: {exc}") from None
    except (InvalidHandshake, WebSocketException, OSError) as exc:
        sock.close()
        chain = list(exception_chain(exc))
        if any(isinstance(e, (ConnectionResetError, BrokenPipeError)) for e in chain):
            raise ProbeFailure("tcp_reset", f"reset during the WebSocket handshake: {exc}") from None
        if any(isinstance(e, EOFError) for e in chain):
            # Closed without an answer: the peer dropped us, the nearest named cause is a reset.
            raise ProbeFailure("tcp_reset", "closed without answering the WebSocket handshake") from None
        # A handshake error's message may quote the target's headers: its type names it.
        text = f"{type(exc).__name__}: {exc}" if isinstance(exc, OSError) else type(exc).__name__
        raise ProbeFailure("ws_handshake_failed", text, error=text) from None
    detail = "HTTP 101 Switching Protocols" + (f"; subprotocol {ws.subprotocol}" if ws.subprotocol else "")
    ms = run.end(True, detail)
    ws.transport.abort()  # a check: no close handshake to wait for
    return run.ok(ms, detail)
