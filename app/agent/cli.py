"""`termpulse agent --server URL --token TOKEN`: the store agent as a command.

The token may come from TERMPULSE_AGENT_TOKEN instead of --token (so it is not in `ps`).
A plain http:// server is refused unless --insecure-http is given: the token would travel
in clear. The state directory (`--state-dir`) defaults to /var/lib/termpulse-agent for root,
else $XDG_STATE_HOME/termpulse-agent (~/.local/state/termpulse-agent).

Exit codes: 0 stopped by SIGINT/SIGTERM; 2 a usage error (no token, bad URL, state
directory held by another agent).
"""

from __future__ import annotations

import argparse
import os
import ssl
import sys
from pathlib import Path
from urllib.parse import urlsplit

import uvloop

from app.agent.buffer import StateDirBusy
from app.agent.runner import Agent, AgentOptions
from app.checks.context import ProbeContext
from app.config import Settings
from app.shutdown import until_terminated

TOKEN_ENV = "TERMPULSE_AGENT_TOKEN"


class UsageError(Exception):
    """Printed as `termpulse agent: <message>`, exit 2."""


def default_state_dir() -> Path:
    if os.geteuid() == 0:
        return Path("/var/lib/termpulse-agent")
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "termpulse-agent"


def server_url(url: str, *, insecure_http: bool) -> str:
    """The server's base URL, checked: https://, or http:// only with --insecure-http."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise UsageError(f"--server must be an https:// URL, got {url!r}")
    if parts.username or parts.password:
        raise UsageError("--server must not carry a user name or password: the agent uses its token")
    if parts.scheme == "http" and not insecure_http:
        raise UsageError(
            f"refusing plain http:// server {parts.hostname}: the agent token would travel in clear. "
            "Use https://, or add --insecure-http (a test setup, or a TLS proxy on the same host)."
        )
    return url.strip().rstrip("/")


def server_ssl_context(ca_file: str | None) -> ssl.SSLContext:
    """The system's CAs, plus --ca-file (a private CA that signed the server's certificate)."""
    context = ssl.create_default_context()
    if ca_file:
        try:
            context.load_verify_locations(cafile=ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise UsageError(f"--ca-file {ca_file}: cannot load it ({exc})") from None
    return context


def agent_command(args: argparse.Namespace, settings: Settings) -> int:
    try:
        token = (args.token or os.environ.get(TOKEN_ENV) or "").strip()
        if not token:
            raise UsageError(f"no token: set {TOKEN_ENV} (or give --token)")
        url = server_url(args.server, insecure_http=args.insecure_http)
        verify = server_ssl_context(args.ca_file)
        if args.concurrency < 1:
            raise UsageError("--concurrency must be at least 1")
        state_dir = Path(args.state_dir) if args.state_dir else default_state_dir()
        agent = Agent(
            url,
            token,
            state_dir,
            probe_context=ProbeContext.from_settings(settings),
            verify=verify,
            options=AgentOptions(concurrency=args.concurrency),
        )
        return uvloop.run(_run(agent))
    except (UsageError, StateDirBusy) as exc:
        print(f"termpulse agent: {exc}", file=sys.stderr)
        return 2


async def _run(agent: Agent) -> int:
    await agent.start()
    try:
        await until_terminated()
    finally:
        await agent.stop()
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's options (app.cli builds its parser with them)."""
    parser.add_argument("--server", required=True, metavar="URL", help="the TermPulse server, https://...")
    parser.add_argument(
        "--token", default=None, help=f"the agent's token (better: the {TOKEN_ENV} environment variable)"
    )
    parser.add_argument(
        "--state-dir",
        default=None,
        metavar="DIR",
        help="queue and saved config (default: /var/lib/termpulse-agent as root, "
        "else ~/.local/state/termpulse-agent)",
    )
    parser.add_argument("--insecure-http", action="store_true", help="allow a plain http:// server")
    parser.add_argument(
        "--ca-file", default=None, metavar="PEM", help="a CA to trust for the server's certificate"
    )
    parser.add_argument(
        "--concurrency", type=int, default=50, metavar="N", help="checks run at once (default 50)"
    )
