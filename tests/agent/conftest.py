"""The store agent against a fake server (tests/agent/fake_server.py) and simulated terminals,
all on real loopback sockets (127.0.0.1, ephemeral ports): no mocked network."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from typing import Any

import pytest

from app.agent.runner import Agent, AgentOptions
from app.checks.context import ProbeContext
from app.config import Settings
from tests.agent.fake_server import FakeServer

DEADLINE = 30.0  # s: generous, a loaded machine is slow; nothing here asserts a duration


async def until(predicate: Callable[[], Any], within: float = DEADLINE, what: str = "condition") -> Any:
    """Poll a (sync) predicate until it is true; fail the test after `within` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        value = predicate()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"{what}: not met within {within:g} s")
        await asyncio.sleep(0.02)


def fast_options(**overrides: Any) -> AgentOptions:
    """Production behaviour with short waits, so a test takes seconds."""
    values: dict[str, Any] = {
        "upload_linger_s": 0.05,
        "backoff_base_s": 0.1,
        "backoff_cap_s": 0.5,
        "work_wait_s": 1,
        "stop_grace_s": 3.0,
        "flush_s": 3.0,
        "http_timeout_s": 5.0,
    }
    values.update(overrides)
    return AgentOptions(**values)


def monitor(mid: int, target: str, *, kind: str = "tcp", interval_s: int = 1, phase_ms: int = 0, **params):
    return {
        "id": mid,
        "kind": kind,
        "target": target,
        "params": params,
        "interval_s": interval_s,
        "timeout_s": 1.0,
        "phase_ms": phase_ms,
    }


@pytest.fixture
async def open_port():
    """A simulated terminal: a TCP listener on 127.0.0.1 that accepts and holds connections."""

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            await reader.read()
        writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


@pytest.fixture
def closed_port():
    """A port nothing listens on: connections are refused (a terminal that is off)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def probe_context():
    return ProbeContext.from_settings(Settings(allowed_networks=["127.0.0.0/8"]))


@pytest.fixture
async def fake():
    server = FakeServer()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def make_agent(tmp_path, probe_context):
    """`make_agent(server, **options)`: a started Agent with its own state dir; stopped at the end."""
    agents: list[Agent] = []

    async def make(server: FakeServer, state_dir=None, token: str | None = None, **options: Any) -> Agent:
        agent = Agent(
            server.url,
            token or server.token,
            state_dir or tmp_path / "state",
            probe_context=probe_context,
            options=fast_options(**options),
        )
        agents.append(agent)
        await agent.start()
        return agent

    yield make
    for agent in agents:
        await agent.stop()


@pytest.fixture(autouse=True)
def no_token_in_logs(caplog):
    """Whatever a test does, the agent token never reaches a log line."""
    caplog.set_level(logging.DEBUG, logger="app.agent")
    yield
    for record in caplog.records:
        text = record.getMessage() + (record.exc_text or "")
        assert FakeServer.token not in text, f"token logged: {text}"
