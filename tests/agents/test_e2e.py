"""Real store agent processes (`termpulse agent`) against a real server process (`termpulse
serve`, its embedded worker included) over HTTP on loopback, on PostgreSQL.

Nothing here asserts a duration: every wait is for a condition, with a generous deadline."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update

from app.auth.models import User
from app.auth.sessions import create_token
from app.db import Database, utcnow
from app.inventory.models import Agent, Monitor, Store, Terminal
from app.monitoring.models import CheckResult
from app.vocabulary import MonitorKind, State
from tests.monitoring.helpers import add_monitors, add_store, add_terminals

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("keep_plain_results")]  # each run's row

DEADLINE = 90.0  # s: a loaded 2-core machine is slow; nothing asserts a duration


async def until(check: Callable[[], Awaitable[Any]], what: str, within: float = DEADLINE) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        value = await check()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"{what}: not within {within:g} s")
        await asyncio.sleep(0.2)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Proc:
    """A `termpulse` subprocess with its output kept in a file (read on failure)."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path):
        self.args, self.env, self.log = args, env, log
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> Proc:
        out = self.log.open("ab")
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "app.cli", *self.args, env=self.env, stdout=out, stderr=out
        )
        out.close()
        return self

    async def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(sig)
            try:
                await asyncio.wait_for(self.proc.wait(), 20)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


@pytest.fixture
async def world(pg_db: Database, tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    """A store with three LAN terminals answering on loopback, one with a cloud monitor too,
    a server process on it, and an HTTP client to that server."""
    listeners = []
    for _ in range(3):
        listeners.append(await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0))
    store = await add_store(pg_db, "S-0101")
    other = await add_store(pg_db, "S-0102")
    terminals = await add_terminals(pg_db, store, 3)
    specs = [
        {
            "store_id": store,
            "terminal_id": t,
            "kind": "tcp",
            "target": f"127.0.0.1:{s.sockets[0].getsockname()[1]}",
            "params": {"settle_ms": 0},
        }
        for t, s in zip(terminals, listeners, strict=True)
    ]
    specs.append({"store_id": store, "terminal_id": terminals[0], "kind": "cloud", "target": "P400-cloud"})
    specs.append({"store_id": other, "kind": "tcp", "target": "127.0.0.1:9", "params": {"settle_ms": 0}})
    await add_monitors(pg_db, specs, interval_s=2, timeout_s=1.0)
    # `serve` without users shows only its setup page: an admin with an API token calls the API.
    async with pg_db.sessionmaker() as session:
        admin = User(username="e2e", role="admin", password_hash="-")
        session.add(admin)
        await session.flush()
        _, api_token = await create_token(session, admin, "e2e", "admin", None)
        await session.commit()
    port = free_port()
    env = {
        **os.environ,
        "TERMPULSE_DATABASE_URL": pg_db.url,
        "TERMPULSE_ALLOWED_NETWORKS": "127.0.0.0/8",
        "TERMPULSE_SECRET_KEY": "e2e-test-secret-key-0123456789abcdef",
        "TERMPULSE_LOG_LEVEL": "INFO",
    }
    base = f"http://127.0.0.1:{port}"
    server = Proc(["serve", "--host", "127.0.0.1", "--port", str(port)], env, tmp_path / "server.log")
    agents: list[Proc] = []

    async def start_server() -> None:
        await server.start()

        async def healthy() -> bool:
            with contextlib.suppress(httpx.HTTPError):
                return (await http.get("/healthz")).status_code == 200
            return False

        await until(healthy, "the server answers /healthz")

    async def start_agent(token: str, state: str = "agent") -> Proc:
        proc = Proc(
            [
                "agent",
                "--server",
                base,
                "--token",
                token,
                "--insecure-http",
                "--state-dir",
                str(tmp_path / state),
            ],
            env,
            tmp_path / f"{state}.log",
        )
        agents.append(proc)
        return await proc.start()

    bearer = {"Authorization": f"Bearer {api_token}"}
    async with httpx.AsyncClient(base_url=base, timeout=30, headers=bearer) as http:
        try:
            await start_server()
            yield {
                "db": pg_db,
                "http": http,
                "server": server,
                "start_server": start_server,
                "start_agent": start_agent,
                "store": store,
                "other": other,
                "tmp": tmp_path,
            }
        except BaseException:
            for name in ("server.log", "agent.log"):
                if (tmp_path / name).exists():
                    print(f"--- {name}\n{(tmp_path / name).read_text()[-4000:]}")
            raise
        finally:
            for proc in agents:
                await proc.stop(signal.SIGKILL)
            await server.stop()
            for s in listeners:
                s.close()


async def enrol(http: httpx.AsyncClient, *stores: str) -> tuple[int, str]:
    r = await http.post("/api/v1/agents", json={"name": f"{stores[0]} agent", "stores": list(stores)})
    assert r.status_code == 201, r.text
    return r.json()["agent"]["id"], r.json()["token"]


async def results_by_monitor(
    db: Database, store_id: int, since: datetime
) -> dict[int, list[tuple[datetime | None, datetime]]]:
    """The scheduled results of the store's LAN monitors checked after `since`."""
    async with db.sessionmaker() as s:
        rows = (
            await s.execute(
                select(CheckResult.monitor_id, CheckResult.due_at, CheckResult.checked_at)
                .join(Monitor, Monitor.id == CheckResult.monitor_id)
                .where(
                    Monitor.store_id == store_id,
                    Monitor.kind != MonitorKind.CLOUD,
                    CheckResult.manual.is_(False),
                    CheckResult.checked_at > since,
                )
                .order_by(CheckResult.checked_at)
            )
        ).all()
    found: dict[int, list[tuple[datetime | None, datetime]]] = {}
    for mid, due, at in rows:
        found.setdefault(mid, []).append((due, at))
    return found


async def test_results_arrive_and_a_server_outage_loses_and_doubles_nothing(world):
    db, http = world["db"], world["http"]
    _, token = await enrol(http, "S-0101")
    enrolled = utcnow()  # the central workers may have checked the store before
    await world["start_agent"](token)

    async def all_three_report() -> bool:
        return len(await results_by_monitor(db, world["store"], enrolled)) == 3

    await until(all_three_report, "results from the agent for each LAN monitor")

    # The server goes away; the agent keeps checking and queues; the server comes back.
    await world["server"].stop()
    down_from = utcnow()
    await asyncio.sleep(8)  # the outage (every monitor is due every 2 s meanwhile)
    down_to = utcnow()
    await world["start_server"]()

    async def outage_covered() -> bool:
        found = await results_by_monitor(db, world["store"], enrolled)
        return all(any(down_from < at < down_to for _, at in runs) for runs in found.values())

    await until(outage_covered, "the results made during the outage arrive")
    found = await results_by_monitor(db, world["store"], enrolled)
    for runs in found.values():
        dues = Counter(due for due, _ in runs)
        assert max(dues.values()) == 1, "a due time written twice"
        assert [at for _, at in runs] == sorted(at for _, at in runs)
    async with db.sessionmaker() as s:  # central workers never ran the agent's monitors
        central = await s.scalar(
            select(func.count())
            .select_from(CheckResult)
            .join(Monitor)
            .where(
                Monitor.store_id == world["store"],
                Monitor.kind != MonitorKind.CLOUD,
                Monitor.agent_id.is_(None),
            )
        )
    assert central == 0


async def test_tokens_only_reach_their_own_stores_and_a_revoked_one_nothing(world):
    db, http = world["db"], world["http"]
    agent_id, token = await enrol(http, "S-0101")
    auth = {"Authorization": f"Bearer {token}"}
    async with db.sessionmaker() as s:
        foreign = await s.scalar(select(Monitor.id).where(Monitor.store_id == world["other"]))
    posted = utcnow()
    now = posted.isoformat()
    body = {
        "instance": "e2e-instance",
        "results": [
            {"seq": 1, "monitor_id": foreign, "due_at": now, "checked_at": now, "outcome": "ok", "steps": []}
        ],
    }
    r = await http.post("/api/agent/v1/results", headers=auth, json=body)
    assert r.status_code == 403
    async with db.sessionmaker() as s:  # (the central worker checks that store meanwhile: not this result)
        written = select(func.count()).select_from(CheckResult).where(CheckResult.due_at == posted)
        assert await s.scalar(written) == 0

    started = utcnow()
    agent = await world["start_agent"](token)

    async def reporting() -> bool:
        return bool(await results_by_monitor(db, world["store"], started))

    await until(reporting, "the agent reports")
    assert (await http.post(f"/api/v1/agents/{agent_id}/revoke")).status_code == 204
    assert (await http.get("/api/agent/v1/config", headers=auth)).status_code == 401
    revoked_at = utcnow()
    await asyncio.sleep(4)  # two more intervals: nothing the agent sends may land
    async with db.sessionmaker() as s:
        late = await s.scalar(
            select(func.count())
            .select_from(CheckResult)
            .join(Monitor)
            .where(
                Monitor.store_id == world["store"],
                CheckResult.checked_at > revoked_at,
                Monitor.agent_id.is_not(None),
            )
        )
    assert late == 0
    assert agent.proc is not None and agent.proc.returncode is None  # it waits, it does not crash or spin


async def test_check_connection_runs_on_the_agent(world):
    db, http = world["db"], world["http"]
    _, token = await enrol(http, "S-0101")
    await world["start_agent"](token)

    async def online() -> bool:
        agents = (await http.get("/api/v1/agents")).json()
        return agents[0]["state"] == "online"

    await until(online, "the agent is online")
    async with db.sessionmaker() as s:
        poiid = await s.scalar(
            select(Terminal.poiid).where(Terminal.store_id == world["store"]).order_by(Terminal.id)
        )
    r = await http.post(f"/api/v1/terminals/{poiid}/check")
    assert r.status_code == 200, r.text
    report = r.json()
    lan = [c for c in report["checks"] if c["kind"] == "tcp"]
    assert lan and all(c["outcome"] == "ok" and c["steps"][0]["step"] == "connect" for c in lan)


async def test_a_killed_agent_turns_its_checks_unknown_and_with_its_cloud_terminals_the_store_offline(world):
    db, http = world["db"], world["http"]
    agent_id, token = await enrol(http, "S-0101")
    async with db.sessionmaker() as s:  # quick heartbeats, so silence is noticed in seconds
        await s.execute(update(Agent).where(Agent.id == agent_id).values(heartbeat_s=1))
        await s.commit()
    started = utcnow()
    agent = await world["start_agent"](token)

    async def reporting_and_up() -> bool:
        async with db.sessionmaker() as s:
            states = (
                await s.scalars(
                    select(Monitor.state).where(
                        Monitor.store_id == world["store"], Monitor.kind != MonitorKind.CLOUD
                    )
                )
            ).all()
        found = await results_by_monitor(db, world["store"], started)
        return len(found) == len(states) and all(state == State.UP for state in states)

    await until(reporting_and_up, "the agent reports and its monitors are up")
    async with db.sessionmaker() as s:  # and the store's only cloud terminal is disconnected
        await s.execute(
            update(Monitor)
            .where(Monitor.store_id == world["store"], Monitor.kind == MonitorKind.CLOUD)
            .values(state=State.DOWN, last_diagnosis="cloud_disconnected")
        )
        await s.commit()
    await agent.stop(signal.SIGKILL)

    async def unknown_not_down() -> bool:
        async with db.sessionmaker() as s:
            rows = (
                await s.execute(
                    select(Monitor.state, Monitor.last_diagnosis).where(
                        Monitor.store_id == world["store"], Monitor.kind != MonitorKind.CLOUD
                    )
                )
            ).all()
        assert all(state != State.DOWN for state, _ in rows), "a silent agent made a monitor down"
        return all(state == State.UNKNOWN and diag == "agent_offline" for state, diag in rows)

    await until(unknown_not_down, "the agent's monitors turn unknown (agent_offline)")

    async def store_offline() -> bool:
        async with db.sessionmaker() as s:
            return (
                await s.scalar(select(Store.status_reason).where(Store.id == world["store"]))
                == "store_offline"
            )

    await until(store_offline, "the store is marked store_offline")
