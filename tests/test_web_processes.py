"""Two web processes on one PostgreSQL database serve one consistent view: what one process
knows and another needs goes through the database (app.relay), never memory only.

Two `termpulse serve --no-worker` processes on two ports (as several servers behind a proxy;
addressed one by one, so the test chooses which gets each request), and `serve --workers 2`
(one port, the kernel chooses). Nothing here asserts a duration: every wait is for a condition."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from app.auth.models import User
from app.auth.passwords import hash_password
from app.auth.sessions import create_token
from app.db import Database, utcnow
from app.inventory.models import Terminal
from app.web.security import csrf_token_for
from tests.agents.test_e2e import Proc, free_port, until
from tests.monitoring.helpers import add_monitors, add_store, add_terminals

pytestmark = pytest.mark.slow

AGENT_API = "/api/agent/v1"
PASSWORD = "correct horse battery"
SECRET = "web-processes-test-secret-0123456789abcdef"
SOON = 5.0  # s: well inside any cache's lifetime (the filter choices are kept 60 s)


def server_env(db: Database) -> dict[str, str]:
    return {
        **os.environ,
        "TERMPULSE_DATABASE_URL": db.url,
        "TERMPULSE_ALLOWED_NETWORKS": "127.0.0.0/8",
        "TERMPULSE_SECRET_KEY": SECRET,
        "TERMPULSE_LOG_LEVEL": "INFO",
    }


async def start(args: list[str], db: Database, log: Path) -> tuple[Proc, httpx.AsyncClient]:
    port = free_port()
    proc = await Proc(
        ["serve", *args, "--host", "127.0.0.1", "--port", str(port)], server_env(db), log
    ).start()
    client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30)

    async def healthy() -> bool:
        try:
            return (await client.get("/healthz")).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        await until(healthy, f"{log.name} answers /healthz")
    except BaseException:
        print(tail(log))
        raise
    return proc, client


def tail(log: Path) -> str:
    return log.read_text()[-4000:]


@pytest.fixture
async def two(pg_db: Database, tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    """Store S-0101 with one LAN terminal, an admin (password and API token), and two server
    processes A and B on the database."""
    store = await add_store(pg_db, "S-0101")
    (terminal,) = await add_terminals(pg_db, store, 1)
    # A long timeout: Check connection waits for the agent's answer that long (the test answers).
    monitor = {"store_id": store, "terminal_id": terminal, "kind": "tcp", "target": "127.0.0.1:9"}
    await add_monitors(pg_db, [monitor], timeout_s=20.0)
    async with pg_db.sessionmaker() as session:
        admin = User(username="ada", role="admin", password_hash=hash_password(PASSWORD))
        session.add(admin)
        await session.flush()
        _, api_token = await create_token(session, admin, "test", "admin", None)
        await session.commit()
    a, http_a = await start(["--no-worker"], pg_db, tmp_path / "a.log")
    b, http_b = await start(["--no-worker"], pg_db, tmp_path / "b.log")
    try:
        async with pg_db.sessionmaker() as session:
            poiid = await session.scalar(select(Terminal.poiid).where(Terminal.id == terminal))
        yield {"a": http_a, "b": http_b, "api": {"Authorization": f"Bearer {api_token}"}, "poiid": poiid}
    finally:
        for proc, http in ((a, http_a), (b, http_b)):
            await http.aclose()
            await proc.stop()


async def login(http: httpx.AsyncClient) -> str:
    done = await http.post("/login", data={"username": "ada", "password": PASSWORD, "next": "/"})
    assert done.status_code == 303, done.text
    cookie = done.cookies["termpulse_session"]
    http.cookies.clear()
    return cookie


async def test_a_session_made_on_one_process_works_on_the_other_and_ends_on_both(two):
    a, b = two["a"], two["b"]
    cookie = {"Cookie": f"termpulse_session={await login(a)}"}
    page = await b.get("/account", headers=cookie)
    assert page.status_code == 200 and "ada" in page.text

    csrf = {"X-CSRF-Token": csrf_token_for(SECRET, cookie["Cookie"].split("=", 1)[1])}  # as htmx sends it
    out = await b.post("/logout", headers=cookie | csrf)  # logged out through B
    assert out.status_code == 303, out.text
    refused = await a.get("/account", headers=cookie)
    assert refused.status_code == 303 and refused.headers["location"].startswith("/login")


async def test_an_inventory_change_through_one_process_shows_on_the_other_at_once(two):
    a, b, api = two["a"], two["b"], two["api"]
    cookie = {"Cookie": f"termpulse_session={await login(b)}"}
    # B has its caches filled: the regions and models for the filters, the overview's rows.
    overview, terminals = (
        (await b.get("/", headers=cookie)).text,
        (await b.get("/terminals", headers=cookie)).text,
    )
    assert "Fjordland" not in overview and "S-0777" not in overview and "ZX-9000" not in terminals

    store = {"code": "S-0777", "name": "Harbour", "region": "Fjordland", "timezone": "Europe/Oslo"}
    assert (await a.post("/api/v1/stores", json=store, headers=api)).status_code == 201
    terminal = {
        "store_code": "S-0777",
        "poiid": "ZX-9000-1",
        "model": "ZX-9000",
        "serial": "1",
        "provider": "adyen",
    }
    created = await a.post("/api/v1/terminals", json=terminal, headers=api)
    assert created.status_code == 201, created.text

    async def shown_on_b() -> bool:
        overview = (await b.get("/", headers=cookie)).text
        listed = (await b.get("/terminals", headers=cookie)).text
        return all(
            (
                ">Fjordland</option>" in overview,  # the region filter
                "S-0777" in overview,  # the store's row
                '<option value="ZX-9000"' in listed,  # the model filter
                "ZX-9000-1" in listed,
            )
        )

    await until(shown_on_b, "B shows the new store, region, terminal and model", within=SOON)

    assert (await a.delete("/api/v1/terminals/ZX-9000-1", headers=api)).status_code == 204
    assert (await a.delete("/api/v1/stores/S-0777", headers=api)).status_code == 204

    async def gone_on_b() -> bool:
        overview = (await b.get("/", headers=cookie)).text
        return "Fjordland" not in overview and "S-0777" not in overview

    await until(gone_on_b, "B no longer shows the deleted store and its region", within=SOON)


async def test_check_connection_through_an_agent_whichever_process_gets_each_request(two):
    a, b, api = two["a"], two["b"], two["api"]
    enrolled = await a.post(
        "/api/v1/agents", json={"name": "S-0101 agent", "stores": ["S-0101"]}, headers=api
    )
    assert enrolled.status_code == 201, enrolled.text
    agent = {"Authorization": f"Bearer {enrolled.json()['token']}"}
    beat = {
        "version": "test",
        "instance": "web-processes-1",
        "clock": utcnow().isoformat(),
        "queue": 0,
        "dropped": 0,
    }
    assert (await b.post(f"{AGENT_API}/heartbeat", json=beat, headers=agent)).status_code == 200

    # (asked on, long poll on, answered on): every way the three requests can fall on two processes.
    for asked, polled, answered in ((a, b, a), (a, b, b), (b, a, b), (b, b, a)):
        await check_through_agent(asked, polled, answered, agent, api, two["poiid"])


async def check_through_agent(
    asked: httpx.AsyncClient,
    polled: httpx.AsyncClient,
    answered: httpx.AsyncClient,
    agent: dict[str, str],
    api: dict[str, str],
    poiid: str,
) -> None:
    poll = asyncio.create_task(polled.get(f"{AGENT_API}/work", params={"wait": 25}, headers=agent))
    await asyncio.sleep(0.3)  # mostly waiting by now; a check opened before a poll is handed out too
    check = asyncio.create_task(asked.post(f"/api/v1/terminals/{poiid}/check", headers=api))
    work = await poll
    assert work.status_code == 200, work.text
    item = work.json()
    answer = {
        "monitor_id": item["monitor_ids"][0],
        "checked_at": utcnow().isoformat(),
        "outcome": "fail",
        "latency_ms": 3.0,
        "steps": [{"step": "connect", "ok": False, "ms": 3.0, "detail": "refused"}],
        "diagnosis": "tcp_refused",
        "detail": "refused",
        "context": {"host": "127.0.0.1", "port": "9"},
    }
    answering = f"{AGENT_API}/work/{item['id']}"
    done = await answered.post(answering, json={"results": [answer]}, headers=agent)
    assert done.status_code == 204, done.text
    report = (await check).json()
    (lan,) = [c for c in report["checks"] if c["kind"] == "tcp"]
    assert lan["outcome"] == "fail" and lan["steps"][0]["detail"] == "refused", report
    assert report["verdict"] == "disconnected"

    # Answered and closed: no process takes a second answer, nor hands the check out again.
    async def closed() -> bool:
        again = await answered.post(answering, json={"results": [answer]}, headers=agent)
        return again.status_code == 404

    await until(closed, "a second answer is refused", within=SOON)
    for http in (asked, polled):
        assert (await http.get(f"{AGENT_API}/work", params={"wait": 0}, headers=agent)).status_code == 204


async def test_serve_workers_runs_several_web_processes_and_refuses_sqlite(pg_db: Database, tmp_path: Path):
    proc, http = await start(["--workers", "2", "--no-worker"], pg_db, tmp_path / "workers.log")
    try:
        log = tail(tmp_path / "workers.log")
        assert "2 web processes started" in log
        # One setup token, said once, that every web process takes; the first user made through
        # one of them then logs in on all (each request on a new connection: either may get it).
        (token,) = re.findall(r"setup token: (\S+)", log)
        form = {"token": token, "username": "root", "password": PASSWORD, "again": PASSWORD}
        made = await http.post("/setup", data=form)
        assert made.status_code == 303, made.text
        cookie = {"Cookie": f"termpulse_session={made.cookies['termpulse_session']}", "Connection": "close"}
        http.cookies.clear()
        for _ in range(8):
            page = await http.get("/account", headers=cookie)
            assert page.status_code == 200 and "root" in page.text
    finally:
        await http.aclose()
        await proc.stop()
    log = (tmp_path / "workers.log").read_text()
    assert "Traceback" not in log, log[-3000:]

    env = {**server_env(pg_db), "TERMPULSE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'one.db'}"}
    refused = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "app.cli", "serve", "--workers", "2", env=env, stderr=asyncio.subprocess.PIPE
    )
    _, err = await refused.communicate()
    assert refused.returncode == 2 and b"SQLite is served by one process" in err
