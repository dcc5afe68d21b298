"""`termpulse demo`: a fresh SQLite database holding the sample fleet, the simulated world
on loopback (terminals, DNS, provider APIs), the checker, and a scripted story so the
dashboard shows each kind of failure within a minute of start:

* the first Fullsteam/Ingenico store: port 7003 to temterminalsnar01.icloud.ingenico.com
  blocked by the store's firewall;
* the second one: the store's DNS fails (SERVFAIL) for prodssl.protectedtransactions.com;
* one Paynt terminal is unpaired (its EPOS API answers 401), another one flaps;
* one Adyen store's terminals lose their cloud WebSocket and come back (provider simulator);
* store agents check the first two stores from inside their networks (so they see those
  stores' faults, as they would in the field), and a third store whose agent loses its
  internet link for 75 s after 90 s: its checks turn unknown (agent offline, never down),
  then its buffered results replace that spell;
* the last Fullsteam store is in a maintenance window (a refit, for two hours from the start): a
  wrench on the dashboard, its monitors in maintenance; a weekly window for its region is
  planned (the Maintenance page);
* alerts: a JSON webhook channel posts the story's incidents to a "Notifications sent" page
  inside the demo (/demo/notifications), one message per store, after 20 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import fcntl
import io
import logging
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

import httpx
import uvicorn
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.agent.runner import Agent as StoreAgent
from app.agents.service import create_agent
from app.alerts import service as alerts
from app.config import Settings
from app.db import Database, in_transaction, utcnow
from app.inventory.csvimport import SAMPLE_FLEET, import_fleet
from app.inventory.models import Monitor, Store, Terminal
from app.inventory.monitors import sync_monitors
from app.main import StoppingServer, create_app
from app.migrate import migrate
from app.process import raise_fd_limit
from app.simulator.inbox import INBOX_PATH, DemoInbox
from app.simulator.inbox import router as inbox_router
from app.simulator.network import DemoNetwork, start_demo_network, store_source
from app.simulator.providers import ProviderSimulators, register_simulator_accounts, start_provider_simulators
from app.simulator.terminals import epos_token
from app.windows.schemas import WindowIn
from app.windows.service import create_window

log = logging.getLogger(__name__)

DEMO_DATABASE = Path("termpulse-demo.db")  # in the working directory, made afresh at each start
DEMO_INTERVAL_S = 15  # checks every 15 s, so the story shows on the dashboard within a minute
INGENICO_HOST, PROCESSOR_HOST = "temterminalsnar01.icloud.ingenico.com", "prodssl.protectedtransactions.com"


def _fleet() -> tuple[list[tuple[str, bytes]], list[dict[str, str]], list[dict[str, str]]]:
    files = [(name, (SAMPLE_FLEET / name).read_bytes()) for name in ("stores.csv", "terminals.csv")]
    stores, terminals = (list(csv.DictReader(io.StringIO(data.decode("utf-8-sig")))) for _, data in files)
    return files, stores, terminals


async def _load_fleet(database: Database, files: list[tuple[str, bytes]]) -> None:
    await migrate(database.engine)
    async with database.sessionmaker() as session:
        summary = await import_fleet(session, files)
    log.info("demo fleet loaded: %s stores, %s terminals", summary.stores.created, summary.terminals.created)


async def _wire_to_simulator(database: Database) -> None:
    """Demo only: the terminals' EPOS tokens as the simulator issues them; each store's
    network checks sent from the store's own loopback source, so a fault can hit one store;
    a short interval, first checks spread over the next 15 s."""

    async with database.sessionmaker() as session:
        paynt = (await session.scalars(select(Terminal).where(Terminal.local_api == "paynt_epos"))).all()
        for terminal in paynt:
            terminal.epos_token = epos_token(terminal.poiid)
        await session.flush()
        await sync_monitors(session, terminals=paynt)
        stores = dict((await session.execute(select(Store.id, Store.code))).all())
        now = utcnow()
        for monitor in (await session.scalars(select(Monitor))).all():
            if monitor.terminal_id is None:
                monitor.params = {**monitor.params, "source": store_source(stores[monitor.store_id])}
            monitor.interval_s, monitor.phase_ms = (
                DEMO_INTERVAL_S,
                monitor.phase_ms % (DEMO_INTERVAL_S * 1000),
            )
            monitor.next_due_at = now + timedelta(milliseconds=monitor.phase_ms)
        await session.commit()


async def _start_story(
    net: DemoNetwork, sims: ProviderSimulators, stores: list[dict[str, str]], terminals: list[dict[str, str]]
) -> tuple[str, str]:
    """The faults of the story; returns the stores whose port 7003 is blocked and whose DNS fails."""
    port_blocked, dns_failing = [s["code"] for s in stores if s["network_profile"] == "fullsteam-ingenico"][
        :2
    ]
    await net.block_port_for_store(port_blocked, INGENICO_HOST, 7003)
    net.set_dns_for_store(dns_failing, PROCESSOR_HOST, "servfail")
    paynt = [t["poiid"] for t in terminals if t["local_api"] == "paynt_epos"]
    unpaired, flapping = paynt[0], paynt[-1]
    await net.sim.set_behaviour(unpaired, "unpaired")
    await net.sim.set_behaviour(flapping, "flapping", period_s=45)
    cloud_store = sims.start_demo_story(up_s=20, down_s=60)
    log.info(
        "demo story: %s port 7003 blocked, %s DNS failing, %s unpaired, %s flapping, store %s cloud drops",
        port_blocked,
        dns_failing,
        unpaired,
        flapping,
        sims.adyen.store_name(cloud_store),
    )
    return port_blocked, dns_failing


async def _plan_maintenance(database: Database, stores: list[dict[str, str]]) -> None:
    """A store the rest of the story leaves alone (the last Fullsteam one: no cloud story, no
    agent) is being refitted now: the wrench. Its region has a weekly window."""
    refit = [s for s in stores if s["network_profile"] == "fullsteam-ingenico"][2:][-1:] or stores[-1:]
    code, region = refit[0]["code"], refit[0].get("region") or None
    now = utcnow()
    windows = [
        {
            "store": code,
            "title": "Refit: new counters and cabling",
            "reason": "demo",
            "starts_at": now,
            "ends_at": now + timedelta(hours=2),
        },
        {
            "scope": "region" if region else "fleet",
            "region": region,
            "title": "POS software updates",
            "weekdays": ["sun"],
            "start_time": "03:00",
            "duration_minutes": 60,
        },
    ]
    async with database.sessionmaker() as session:
        for window in windows:
            await create_window(session, WindowIn.model_validate(window), created_by="demo")
    log.info("demo story: %s in maintenance (refit) for two hours", code)


class _StoreLink(httpx.AsyncHTTPTransport):
    """A store agent's internet link, which the story can cut and restore."""

    up = True

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if not self.up:
            raise httpx.ConnectError("the store's internet link is down (demo story)", request=request)
        return await super().handle_async_request(request)


async def _enrol_agents(database: Database, store_codes: list[str]) -> dict[str, str]:
    """A store agent for each of these stores: store code -> its token."""
    tokens = {}
    async with database.sessionmaker() as session:
        for code in store_codes:
            enrolled = await create_agent(session, f"{code} back office", [code])
            enrolled.agent.heartbeat_s = DEMO_INTERVAL_S
            tokens[code] = enrolled.token
        await session.commit()
    return tokens


async def _run_agents(
    tokens: dict[str, str], base_url: str, net: DemoNetwork, flaky: str, stop: asyncio.Event
) -> None:
    """The stores' agents, each checking from its store's own network (its loopback source);
    the agent of `flaky` loses its link for 75 s after 90 s and replays what it saw."""
    state = Path(tempfile.mkdtemp(prefix="termpulse-demo-agents-"))
    links = {code: _StoreLink() for code in tokens}
    agents = [
        StoreAgent(base_url, token, state / code, probe_context=net.probe_context(), transport=links[code])
        for code, token in tokens.items()
    ]
    for agent in agents:
        await agent.start()
    try:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(90):
                await stop.wait()
        if not stop.is_set():
            links[flaky].up = False
            log.info("demo story: the store agent of %s lost its internet link (back in 75 s)", flaky)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(75):
                    await stop.wait()
            links[flaky].up = True
            log.info("demo story: the store agent of %s is back online and replays its results", flaky)
        await stop.wait()
    finally:
        for agent in agents:
            await agent.stop()


async def _serve_demo(settings: Settings, database_path: Path, host: str, port: int) -> None:

    files, store_rows, terminal_rows = _fleet()
    raise_fd_limit()
    net = await start_demo_network(terminal_rows, dns_port=0)
    sims = await start_provider_simulators(terminal_rows, store_rows)
    ca_file = Path(tempfile.mkdtemp(prefix="termpulse-demo-")) / "simulator-ca.pem"
    ca_file.write_text(net.ca_pem)
    settings = settings.model_copy(
        update={
            "database_url": f"sqlite+aiosqlite:///{database_path}",
            "allowed_networks": ["127.0.0.0/8"],  # the demo's world lives on loopback only
            "provider_hosts": sims.hosts(),  # its provider APIs are simulators on loopback
            "dns_nameservers": [net.dns.host],
            "dns_port": net.dns.port,
            "trusted_ca_file": ca_file,
            "base_url": f"http://{host}:{port}",  # the links in notifications
            "alert_quiet_period_s": 60.0,
        }
    )
    database = Database(settings.database_url)
    try:
        await _load_fleet(database, files)
        await _wire_to_simulator(database)
        await register_simulator_accounts(
            database, settings.secret_key, sims, poll_interval_s=DEMO_INTERVAL_S
        )
        port_blocked, dns_failing = await _start_story(net, sims, store_rows, terminal_rows)
        await _plan_maintenance(database, store_rows)
        # Store agents check those two stores from inside their networks, and a third store
        # whose agent loses its link for a while.
        flaky = next(s["code"] for s in store_rows if s["network_profile"] == "paynt-local")
        tokens = await _enrol_agents(database, [port_blocked, dns_failing, flaky])
        await _demo_channel(database, settings, f"json://{host}:{port}{INBOX_PATH}")
        app = create_app(settings, database=database, run_worker=True)
        app.state.demo_inbox = DemoInbox()  # the "Notifications sent" page
        app.include_router(inbox_router)
        server = StoppingServer(
            uvicorn.Config(
                app, host=host, port=port, log_config=None, access_log=False, timeout_graceful_shutdown=5
            ),
            app,
        )
        log.info("TermPulse demo on http://%s:%s (Ctrl-C to stop)", host, port)
        stop = asyncio.Event()
        # The agents start with the server: until it listens they retry, as in the field.
        agents = asyncio.create_task(_run_agents(tokens, f"http://{host}:{port}", net, flaky, stop))
        try:
            await server.serve()
        finally:
            stop.set()
            await agents
    finally:
        await sims.stop()
        await net.stop()
        await database.dispose()


async def _demo_channel(database: Database, settings: Settings, url: str) -> None:
    """A webhook channel posting to the demo's own "Notifications sent" page, and a rule sending
    it every incident that lasts 20 s (loopback only, like everything in the demo)."""

    async def work(session: AsyncSession) -> None:
        channel = await alerts.create_channel(session, settings.secret_key, "Demo notifications", url)
        rule = {"name": "Every incident (demo)", "match": "all", "channel_id": str(channel.id)}
        await alerts.create_rule(session, rule | {"min_duration_s": "20"})

    await in_transaction(database, work)


def run_demo(settings: Settings, *, host: str, port: int) -> int:
    if _demo_running_here():
        print(
            f"termpulse demo: a demo is already running from this folder (it holds {DEMO_DATABASE}): "
            "stop it first, or start this one from another folder.",
            file=sys.stderr,
        )
        return 2
    for suffix in ("", "-wal", "-shm", ".worker.lock"):
        DEMO_DATABASE.with_name(DEMO_DATABASE.name + suffix).unlink(missing_ok=True)
    asyncio.run(_serve_demo(settings, DEMO_DATABASE.resolve(), host, port))
    return 0


def _demo_running_here() -> bool:
    """Another demo's worker holds the lock on this folder's demo database: deleting that
    database (a fresh start) would pull it from under the running demo."""
    lock = DEMO_DATABASE.with_name(DEMO_DATABASE.name + ".worker.lock")
    if not lock.exists():
        return False
    with lock.open("a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
    return False
