"""TCP connect and TLS handshake on asyncio, with every failure named.

These are the building blocks of the tcp, tls, https and paynt_epos probes.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import socket
import ssl
from dataclasses import dataclass

from app.checks.result import ProbeFailure, Run

# errno of a failed connect -> diagnosis. Anything not listed is treated as ours.
_CONNECT_ERRNO = {
    errno.ECONNREFUSED: "tcp_refused",
    errno.ETIMEDOUT: "tcp_timeout",
    errno.EHOSTUNREACH: "host_unreachable",
    errno.ENETUNREACH: "host_unreachable",
    errno.EHOSTDOWN: "host_unreachable",
    errno.ENETDOWN: "host_unreachable",
    errno.ECONNRESET: "tcp_reset",
    errno.ECONNABORTED: "tcp_reset",
    errno.EPIPE: "tcp_reset",
}


def classify_errno(err: int | None) -> str:
    """Diagnosis for an OS error while connecting; internal_error when it is ours
    (out of file descriptors, no local port, permission ...)."""
    return _CONNECT_ERRNO.get(err or 0, "internal_error")


async def tcp_connect(run: Run, address: str, port: int, source: str | None = None) -> socket.socket:
    """Connect a non-blocking socket within the run's deadline; records the 'connect' step."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:  # EMFILE: the checker is out of descriptors
        raise ProbeFailure("internal_error", f"socket(): {exc}", error=str(exc)) from None
    sock.setblocking(False)
    run.begin("connect")
    timed_out = ProbeFailure("tcp_timeout", f"no answer to connect to {address}:{port} within the timeout")
    loop = asyncio.get_running_loop()
    try:
        if source:
            sock.bind((source, 0))
        if run.bounded:  # the check's one timeout (run_probe) names it from if_timeout
            run.if_timeout = timed_out
            await loop.sock_connect(sock, (address, port))
        else:  # asyncio.timeout, not wait_for: no extra task
            async with asyncio.timeout(run.remaining()):
                await loop.sock_connect(sock, (address, port))
    except TimeoutError:
        sock.close()
        raise timed_out from None
    except OSError as exc:
        sock.close()
        run.if_timeout = None
        raise ProbeFailure(classify_errno(exc.errno), f"connect: {exc}", error=str(exc)) from None
    except BaseException:  # cancelled: the check's deadline, or the worker stopping
        sock.close()
        raise
    run.if_timeout = None
    run.end(True, f"connected to {address}:{port}")
    return sock


async def watch_for_reset(run: Run, sock: socket.socket, settle_s: float) -> str:
    """Wait briefly after connecting: a peer that accepts and resets does it at once.

    Returns what was seen; raises tcp_reset on a reset. Sleeps the settle time, then reads
    what came without waiting: no timeout that fires (and cancels) on every healthy check."""
    if settle_s <= 0:
        return "connected"
    # Short of the check's deadline, so the settle never reads as the check timing out.
    wait_s = min(settle_s, run.remaining() - 0.01)
    if wait_s > 0:
        await asyncio.sleep(wait_s)
    try:
        data = sock.recv(256)
    except BlockingIOError:
        return "connected; connection held open"
    except (ConnectionResetError, ConnectionAbortedError) as exc:
        raise ProbeFailure("tcp_reset", f"reset right after connect: {exc}") from None
    except OSError as exc:
        raise ProbeFailure(classify_errno(exc.errno), f"after connect: {exc}") from None
    return f"connected; peer sent {len(data)} bytes" if data else "connected; peer closed"


# --- TLS -----------------------------------------------------------------------------


def make_verify_context(extra_ca_pem: str | None = None) -> ssl.SSLContext:
    """System CAs (plus e.g. the simulator's CA), hostname checked."""
    ctx = ssl.create_default_context()
    if extra_ca_pem:
        ctx.load_verify_locations(cadata=extra_ca_pem)
    return ctx


def make_insecure_context() -> ssl.SSLContext:
    """No chain or name check: self-signed terminals, and reading a rejected certificate."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


@dataclass
class CertInfo:
    subject: str
    issuer: str
    not_after: str  # ISO 8601, UTC
    fingerprint: str  # SHA-256, lower-case hex without colons
    self_signed: bool
    protocol: str = ""  # TLSv1.3 ...: filled in by whoever holds the connection

    @classmethod
    def from_der(cls, der: bytes) -> CertInfo:
        # Imported here: cryptography costs about 10 MB, which a store agent that runs no TLS
        # check (a Raspberry Pi) should not carry.
        from cryptography import x509

        cert = x509.load_der_x509_certificate(der)
        return cls(
            subject=cert.subject.rfc4514_string(),
            issuer=cert.issuer.rfc4514_string(),
            not_after=cert.not_valid_after_utc.isoformat(),
            fingerprint=hashlib.sha256(der).hexdigest(),  # the DER bytes are the certificate's
            self_signed=cert.subject == cert.issuer,
        )


def normalise_fingerprint(value: str) -> str:
    return value.replace(":", "").replace(" ", "").lower()


# OpenSSL verify codes that name the reason better than "untrusted".
_VERIFY_CODES = {
    9: "tls_expired",  # not yet valid: a date problem too
    10: "tls_expired",
    62: "tls_wrong_host",  # hostname mismatch
    64: "tls_wrong_host",  # IP address mismatch
}


def verify_diagnosis(verify_code: int) -> str:
    """Diagnosis for an OpenSSL verification failure; unknown chains are 'untrusted'."""
    return _VERIFY_CODES.get(verify_code, "tls_untrusted")


async def tls_handshake(
    run: Run,
    sock: socket.socket,
    ctx: ssl.SSLContext,
    server_hostname: str | None,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, CertInfo | None]:
    """TLS over a connected socket; records the 'tls' step. Failures are named:
    verification -> tls_*, no answer -> tls_stalled, reset -> tcp_reset, else handshake failed."""
    run.begin("tls")
    timeout = run.remaining()
    stalled = ProbeFailure("tls_stalled", "the TLS handshake did not complete before the timeout")
    handshake = asyncio.open_connection(
        sock=sock,
        ssl=ctx,
        server_hostname=server_hostname,
        # Ours must fire first so a silent peer reads as 'stalled', not an abort.
        ssl_handshake_timeout=timeout + 5,
    )
    try:
        if run.bounded:  # the check's one timeout (run_probe) names it from if_timeout
            run.if_timeout = stalled
            reader, writer = await handshake
        else:  # asyncio.timeout, not wait_for: no extra task
            async with asyncio.timeout(timeout):
                reader, writer = await handshake
        run.if_timeout = None
    except ssl.SSLCertVerificationError as exc:
        sock.close()
        code = verify_diagnosis(exc.verify_code)
        raise ProbeFailure(code, f"certificate rejected: {exc.verify_message}") from None
    except TimeoutError:
        sock.close()
        raise stalled from None
    except (ConnectionResetError, BrokenPipeError) as exc:
        sock.close()
        raise ProbeFailure("tcp_reset", f"reset during the TLS handshake: {exc}") from None
    except (ssl.SSLError, ConnectionError, OSError) as exc:
        sock.close()
        text = getattr(exc, "reason", None) or str(exc) or type(exc).__name__
        raise ProbeFailure("tls_handshake_failed", f"TLS: {text}", error=text) from None
    except BaseException:  # cancelled: the check's deadline, or the worker stopping
        sock.close()
        raise
    ssl_obj = writer.get_extra_info("ssl_object")
    der = ssl_obj.getpeercert(binary_form=True) if ssl_obj else None
    info = CertInfo.from_der(der) if der else None
    detail = f"{ssl_obj.version()} {ssl_obj.cipher()[0]}" if ssl_obj else "TLS"
    if info:
        detail += f"; subject {info.subject}; issuer {info.issuer}; expires {info.not_after}"
    run.end(True, detail)
    return reader, writer, info


async def close_writer(writer: asyncio.StreamWriter) -> None:
    """Close without waiting on a peer that may never answer the TLS close_notify."""
    writer.transport.abort()


async def fetch_cert(
    address: str, port: int, server_hostname: str | None, source: str | None, timeout_s: float
) -> CertInfo | None:
    """Second pass after a rejected certificate: read it without verifying, to name the
    issuer (e.g. a TLS-inspecting proxy), the subject or the expiry date. Best effort."""
    scratch = Run(timeout_s)
    try:
        sock = await tcp_connect(scratch, address, port, source)
        _, writer, info = await tls_handshake(scratch, sock, make_insecure_context(), server_hostname)
    except ProbeFailure:
        return None
    await close_writer(writer)
    return info


async def plain_http_answer(
    address: str, port: int, host: str, source: str | None, timeout_s: float
) -> str | None:
    """Second pass after a failed TLS handshake: does the port answer plain HTTP? Returns its
    status line (a printer's or router's web page on a terminal's TLS port), else None."""
    scratch = Run(timeout_s)
    try:
        sock = await tcp_connect(scratch, address, port, source)
    except ProbeFailure:
        return None
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(scratch.remaining()):
            await loop.sock_sendall(sock, f"GET / HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
            data = b""
            while b"\r\n" not in data and len(data) < 512:
                chunk = await loop.sock_recv(sock, 512)
                if not chunk:
                    break
                data += chunk
    except (TimeoutError, OSError):
        return None
    finally:
        sock.close()
    if not data.startswith(b"HTTP/"):
        return None
    return data.split(b"\r\n", 1)[0].decode("latin-1")[:100]
