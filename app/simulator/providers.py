"""Simulated provider APIs (Adyen and Stripe) for tests, the demo and the bench.

Small ASGI apps served by uvicorn on 127.0.0.1 that answer the calls TermPulse makes, with
the same paths, auth headers, paging and response shapes as the real APIs:

* Adyen: Cloud Device API v1 (`GET /v1/merchants/{merchantAccount}/connectedDevices?store=`,
  `GET /v1/merchants/{merchantAccount}/devices/{deviceId}/status`), the legacy
  `POST /connectedTerminals`, and the Management API `GET /v3/terminals` (pageNumber, pageSize,
  pagesTotal). Header `X-API-Key`. Device ids are printed with U+2011, as Adyen does.
* Stripe: `GET /v1/terminal/readers` (location, limit, starting_after, has_more) and
  `GET /v1/terminal/readers/{id}`, HTTP Basic auth with the secret key.

Each simulator's connected set can be changed at will (`set_connected`, `drop_store`,
`restore_store`), can drift on its own (`start_drift`), and failures are served on command
(`fail(401|403|429|500, times, retry_after)`, `set_slow(seconds)`). `calls` counts requests
per endpoint. `start_provider_simulators(terminal_rows, store_rows)` starts both for a fleet.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import random
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Self

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from app.poiid import normalise_poiid

if TYPE_CHECKING:
    from app.db import Database
    from app.providers.models import ProviderAccount

log = logging.getLogger(__name__)

ADYEN_TEST_KEY = "AQEsim-adyen-test-key-0000000000"
STRIPE_TEST_KEY = "sk_test_sim_stripe_key_0000000000"
MERCHANT_ACCOUNT = "TermPulseSimPOS"
NB_HYPHEN = "\u2011"


@dataclass
class SimTerminal:
    poiid: str  # plain ASCII form; Adyen answers print it with U+2011
    store_ref: str | None
    model: str = ""
    serial: str = ""
    label: str = ""
    cloud_enabled: bool = True  # WebSockets on: only then can it be connected
    connected: bool = True
    store_code: str | None = None  # the store's code in the inventory (what people say), for logs
    ip: str | None = None
    mac: str | None = None
    firmware: str = "Adyen Android 1.2.3"
    reader_id: str = ""  # Stripe: tmr_...
    last_seen_ms: int = field(default_factory=lambda: int(time.time() * 1000))

    @property
    def online(self) -> bool:
        return self.cloud_enabled and self.connected


@dataclass
class _Failure:
    status: int
    remaining: int
    retry_after: str | None


class ProviderSim:
    """State and controls shared by the two simulators."""

    kind = ""

    def __init__(self, terminals: list[SimTerminal], api_key: str):
        self.api_key = api_key
        self.terminals: dict[str, SimTerminal] = {}
        self.by_store: dict[str | None, list[SimTerminal]] = {}
        for t in terminals:
            self.add(t)
        self.calls: Counter[str] = Counter()
        self.failures: list[_Failure] = []
        self.slow_s = 0.0
        self.url = ""
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task | None = None
        self._drift: asyncio.Task | None = None
        self._stories: list[asyncio.Task] = []
        self._story_refs: set[str | None] = set()  # stores a story drives: no drift there
        self.app = Starlette(routes=self.routes() + self.control_routes())

    # ---- fleet and controls ---------------------------------------------------------------
    def add(self, terminal: SimTerminal) -> None:
        self.terminals[terminal.poiid] = terminal
        self.by_store.setdefault(terminal.store_ref, []).append(terminal)

    def set_connected(self, poiid: str, connected: bool) -> None:
        t = self.terminals[normalise_poiid(poiid)]
        t.connected = connected
        if connected:
            t.last_seen_ms = int(time.time() * 1000)

    def drop_store(self, store_ref: str) -> list[str]:
        """Every terminal of the store loses its cloud connection (e.g. the store's internet)."""
        for t in self.by_store.get(store_ref, []):
            self.set_connected(t.poiid, False)
        return [t.poiid for t in self.by_store.get(store_ref, [])]

    def restore_store(self, store_ref: str) -> None:
        for t in self.by_store.get(store_ref, []):
            self.set_connected(t.poiid, True)

    def set_cloud_enabled(self, poiid: str, enabled: bool) -> None:
        self.terminals[normalise_poiid(poiid)].cloud_enabled = enabled

    def set_address(self, poiid: str, ip: str | None = None, mac: str | None = None) -> None:
        t = self.terminals[normalise_poiid(poiid)]
        if ip is not None:
            t.ip = ip
        if mac is not None:
            t.mac = mac

    def fail(self, status: int, times: int = 1, retry_after: float | str | None = None) -> None:
        """The next `times` requests answer `status` (429 with Retry-After when given)."""
        self.failures.append(_Failure(status, times, None if retry_after is None else str(retry_after)))

    def clear_failures(self) -> None:
        self.failures.clear()
        self.slow_s = 0.0

    def set_slow(self, seconds: float) -> None:
        """Every answer waits this long first (0 to stop)."""
        self.slow_s = seconds

    def store_name(self, store_ref: str | None) -> str:
        """How people name the store: its inventory code (S-0021), else the provider's reference."""
        for t in self.by_store.get(store_ref, []):
            if t.store_code:
                return t.store_code
        return str(store_ref)

    def start_drift(self, period_s: float = 10.0, fraction: float = 0.01, seed: int | None = None) -> None:
        """Now and then a few terminals drop their connection for one period and come back, as in
        a real fleet. Drifted terminals always return: the drift never piles up (a fleet where
        a quarter of the stores end up down buries the story), and the stores of a story are
        left to their story."""
        rng = random.Random(seed)

        async def drift() -> None:
            drifted: list[SimTerminal] = []
            while True:
                await asyncio.sleep(period_s)
                for t in drifted:
                    self.set_connected(t.poiid, True)
                pool = [
                    t
                    for t in self.terminals.values()
                    if t.cloud_enabled and t.connected and t.store_ref not in self._story_refs
                ]
                drifted = rng.sample(pool, min(len(pool), max(1, int(len(pool) * fraction)))) if pool else []
                for t in drifted:
                    self.set_connected(t.poiid, False)
                if drifted:
                    log.info(
                        "simulator drift: cloud connection lost for %g s by %s",
                        period_s,
                        ", ".join(f"{t.poiid} ({self.store_name(t.store_ref)})" for t in drifted),
                    )

        self._drift = asyncio.create_task(drift())

    def start_story(self, store_ref: str, *, up_s: float = 120.0, down_s: float = 90.0) -> asyncio.Task:
        """The demo's story: the store's terminals lose the cloud connection, then come back, forever."""
        self._story_refs.add(store_ref)
        name = self.store_name(store_ref)

        async def story() -> None:
            while True:
                await asyncio.sleep(up_s)
                log.info("simulator story: store %s loses its cloud connection", name, extra={"store": name})
                self.drop_store(store_ref)
                await asyncio.sleep(down_s)
                log.info("simulator story: store %s's cloud connection is back", name, extra={"store": name})
                self.restore_store(store_ref)

        task = asyncio.create_task(story())
        self._stories.append(task)
        return task

    # ---- HTTP plumbing --------------------------------------------------------------------
    def routes(self) -> list[Route]:
        raise NotImplementedError

    def control_routes(self) -> list[Route]:
        """/_sim/...: drive a simulator running in another process (bench, demo scripts)."""

        async def control(request: Request) -> JSONResponse:
            body = await request.json() if request.method == "POST" else {}
            action = request.path_params["action"]
            if action == "calls":
                return JSONResponse(dict(self.calls))
            if action == "set_connected":
                for poiid in body["poiids"]:
                    self.set_connected(poiid, bool(body.get("connected", False)))
            elif action == "drop_store":
                self.drop_store(body["store"])
            elif action == "restore_store":
                self.restore_store(body["store"])
            elif action == "fail":
                self.fail(int(body["status"]), int(body.get("times", 1)), body.get("retry_after"))
            elif action == "slow":
                self.set_slow(float(body.get("seconds", 0)))
            else:
                return JSONResponse({"error": f"unknown action {action}"}, status_code=404)
            return JSONResponse({"ok": True})

        return [Route("/_sim/{action}", control, methods=["GET", "POST"])]

    def authorised(self, request: Request) -> bool:
        raise NotImplementedError

    def unauthorised(self, status: int) -> JSONResponse:
        raise NotImplementedError

    async def gate(self, request: Request, endpoint: str) -> JSONResponse | None:
        """Counting, slowness, failures on command and authentication, in that order."""
        self.calls[endpoint] += 1
        self.calls["total"] += 1
        if self.slow_s:
            await asyncio.sleep(self.slow_s)
        if self.failures:
            failure = self.failures[0]
            failure.remaining -= 1
            if failure.remaining <= 0:
                self.failures.pop(0)
            if failure.status in (401, 403):
                return self.unauthorised(failure.status)
            headers = {"Retry-After": failure.retry_after} if failure.retry_after is not None else {}
            return JSONResponse(
                {"status": failure.status, "message": "simulated failure"},
                status_code=failure.status,
                headers=headers,
            )
        if not self.authorised(request):
            return self.unauthorised(401)
        return None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> Self:
        config = uvicorn.Config(
            self.app,
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            lifespan="off",
            log_config=None,
            backlog=4096,
        )
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises the bind error
            await asyncio.sleep(0.01)
        bound = self._server.servers[0].sockets[0].getsockname()
        self.url = f"http://{bound[0]}:{bound[1]}"
        return self

    async def stop(self) -> None:
        for task in [self._drift, *self._stories]:
            if task is not None:
                task.cancel()
        if self._server is not None:
            self._server.should_exit = True
            assert self._task is not None  # start() set both
            await self._task
            self._server = None


class AdyenSim(ProviderSim):
    kind = "adyen"

    def __init__(
        self,
        terminals: list[SimTerminal],
        api_key: str = ADYEN_TEST_KEY,
        merchant_account: str = MERCHANT_ACCOUNT,
    ):
        self.merchant_account = merchant_account
        super().__init__(terminals, api_key)

    @property
    def device_api_url(self) -> str:
        return f"{self.url}/v1"

    def routes(self) -> list[Route]:
        return [
            Route("/v1/merchants/{merchant}/connectedDevices", self.connected_devices),
            Route("/v1/merchants/{merchant}/devices/{device}/status", self.device_status),
            Route("/connectedTerminals", self.connected_terminals, methods=["POST"]),
            Route("/v3/terminals", self.management_terminals),
        ]

    def authorised(self, request: Request) -> bool:
        return request.headers.get("x-api-key") == self.api_key

    def unauthorised(self, status: int) -> JSONResponse:
        return JSONResponse(
            {
                "status": status,
                "errorCode": "000",
                "errorType": "security",
                "message": "Unauthorized" if status == 401 else "Forbidden",
            },
            status_code=status,
        )

    def _merchant_error(self, merchant: str) -> JSONResponse | None:
        if merchant != self.merchant_account:
            return JSONResponse(
                {
                    "status": 403,
                    "errorCode": "010",
                    "errorType": "security",
                    "message": "Not allowed for this merchant account",
                },
                status_code=403,
            )
        return None

    @staticmethod
    def _printed(poiid: str) -> str:
        return poiid.replace("-", NB_HYPHEN, 1)

    def _connected(self, store: str | None) -> list[str]:
        pool = self.by_store.get(store, []) if store else self.terminals.values()
        return [self._printed(t.poiid) for t in pool if t.online]

    async def connected_devices(self, request: Request) -> JSONResponse:
        if (error := await self.gate(request, "connectedDevices")) or (
            error := self._merchant_error(request.path_params["merchant"])
        ):
            return error
        return JSONResponse({"uniqueDeviceIds": self._connected(request.query_params.get("store"))})

    async def device_status(self, request: Request) -> JSONResponse:
        if (error := await self.gate(request, "deviceStatus")) or (
            error := self._merchant_error(request.path_params["merchant"])
        ):
            return error
        device = normalise_poiid(request.path_params["device"])
        t = self.terminals.get(device)
        if t is None:
            return JSONResponse(
                {"status": 422, "errorCode": "702", "message": "Unknown device"}, status_code=422
            )
        return JSONResponse(
            {"deviceId": self._printed(t.poiid), "status": "ONLINE" if t.online else "OFFLINE"}
        )

    async def connected_terminals(self, request: Request) -> JSONResponse:
        if error := await self.gate(request, "connectedTerminals"):
            return error
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse({"status": 400, "message": "invalid JSON"}, status_code=400)
        if error := self._merchant_error(body.get("merchantAccount", "")):
            return error
        ids = self._connected(body.get("store"))
        if body.get("uniqueTerminalId"):
            wanted = normalise_poiid(body["uniqueTerminalId"])
            ids = [i for i in ids if normalise_poiid(i) == wanted]
        return JSONResponse({"uniqueTerminalIds": ids})

    async def management_terminals(self, request: Request) -> JSONResponse:
        if error := await self.gate(request, "managementTerminals"):
            return error
        q = request.query_params
        try:
            page = max(int(q.get("pageNumber", 1)), 1)
            size = min(max(int(q.get("pageSize", 20)), 1), 100)
        except ValueError:
            return JSONResponse(
                {"status": 422, "message": "pageNumber and pageSize must be numbers"}, status_code=422
            )
        stores = [s for s in q.get("storeIds", "").split(",") if s]
        pool = (
            [t for s in stores for t in self.by_store.get(s, [])] if stores else list(self.terminals.values())
        )
        pages = max((len(pool) + size - 1) // size, 1)
        chunk = pool[(page - 1) * size : page * size]
        data = [
            {
                "id": self._printed(t.poiid),
                "model": t.model,
                "serialNumber": t.serial,
                "firmwareVersion": t.firmware,
                "assignment": {
                    "companyId": "SimCompany",
                    "merchantId": self.merchant_account,
                    "storeId": t.store_ref,
                    "status": "boarded",
                },
                "connectivity": {
                    "ethernet": {
                        "ipAddress": t.ip or "",
                        "macAddress": t.mac or "",
                        "linkNegotiation": "auto",
                    }
                },
                "lastActivityAt": datetime.fromtimestamp(t.last_seen_ms / 1000, UTC).isoformat(),
            }
            for t in chunk
        ]
        return JSONResponse(
            {
                "data": data,
                "itemsTotal": len(pool),
                "pagesTotal": pages,
                "_links": {"self": {"href": str(request.url)}},
            }
        )


class StripeSim(ProviderSim):
    kind = "stripe"

    def __init__(self, terminals: list[SimTerminal], api_key: str = STRIPE_TEST_KEY):
        for t in terminals:
            t.reader_id = t.reader_id or f"tmr_{t.serial or t.poiid}"
        super().__init__(terminals, api_key)
        self.by_reader = {t.reader_id: t for t in self.terminals.values()}

    def add(self, terminal: SimTerminal) -> None:
        terminal.reader_id = terminal.reader_id or f"tmr_{terminal.serial or terminal.poiid}"
        super().add(terminal)
        if hasattr(self, "by_reader"):
            self.by_reader[terminal.reader_id] = terminal

    def routes(self) -> list[Route]:
        return [
            Route("/v1/terminal/readers", self.list_readers),
            Route("/v1/terminal/readers/{reader}", self.get_reader),
        ]

    def authorised(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        if header.startswith("Bearer "):
            return header[7:] == self.api_key
        if not header.startswith("Basic "):
            return False
        try:
            user = base64.b64decode(header[6:]).decode().split(":", 1)[0]
        except ValueError:
            return False
        return user == self.api_key

    def unauthorised(self, status: int) -> JSONResponse:
        return JSONResponse(
            {"error": {"type": "invalid_request_error", "message": "Invalid API Key provided: sk_****"}},
            status_code=status,
        )

    def _reader(self, t: SimTerminal) -> dict:
        if t.online:
            t.last_seen_ms = int(time.time() * 1000)
        return {
            "id": t.reader_id,
            "object": "terminal.reader",
            "device_type": t.model,
            "serial_number": t.serial,
            "label": t.label,
            "location": t.store_ref,
            "ip_address": t.ip,
            "livemode": False,
            "status": "online" if t.online else "offline",
            "last_seen_at": t.last_seen_ms,
            "device_sw_version": "2.30.1.0",
            "metadata": {},
        }

    async def list_readers(self, request: Request) -> JSONResponse:
        if error := await self.gate(request, "readers"):
            return error
        q = request.query_params
        try:
            limit = min(max(int(q.get("limit", 10)), 1), 100)
        except ValueError:
            return JSONResponse(
                {"error": {"type": "invalid_request_error", "message": "Invalid integer: limit"}},
                status_code=400,
            )
        location = q.get("location")
        pool = self.by_store.get(location, []) if location else list(self.terminals.values())
        after = q.get("starting_after")
        if after:
            ids = [t.reader_id for t in pool]
            if after not in ids:
                return JSONResponse(
                    {
                        "error": {
                            "type": "invalid_request_error",
                            "message": f"No such terminal.reader: '{after}'",
                        }
                    },
                    status_code=400,
                )
            pool = pool[ids.index(after) + 1 :]
        page = pool[:limit]
        return JSONResponse(
            {
                "object": "list",
                "url": "/v1/terminal/readers",
                "has_more": len(pool) > limit,
                "data": [self._reader(t) for t in page],
            }
        )

    async def get_reader(self, request: Request) -> JSONResponse:
        if error := await self.gate(request, "reader"):
            return error
        t = self.by_reader.get(request.path_params["reader"])
        if t is None:
            return JSONResponse(
                {"error": {"type": "invalid_request_error", "message": "No such terminal.reader"}},
                status_code=404,
            )
        return JSONResponse(self._reader(t))


def _yes(value: object) -> bool:
    return str(value or "").strip().lower() in ("yes", "y", "true", "1", "on")


def sim_terminals(
    terminal_rows: Iterable[Mapping[str, str]],
    store_rows: Iterable[Mapping[str, str]] | None = None,
    provider: str = "adyen",
) -> list[SimTerminal]:
    """SimTerminals for one provider from inventory rows (the fleet CSVs' columns)."""
    stores = {s["code"]: s for s in (store_rows or [])}
    ref_field = "adyen_store_id" if provider == "adyen" else "stripe_location_id"
    out = []
    for row in terminal_rows:
        if (row.get("provider") or "").lower() != provider:
            continue
        store = stores.get(row["store_code"], {})
        ref = store.get(ref_field) or row["store_code"]
        out.append(
            SimTerminal(
                poiid=normalise_poiid(row["poiid"]),
                store_ref=ref,
                store_code=row["store_code"],
                model=row.get("model", ""),
                serial=row.get("serial", ""),
                label=row.get("label", ""),
                cloud_enabled=_yes(row.get("cloud_enabled")),
                connected=True,
                ip=row.get("lan_host") or None,
                mac=row.get("mac") or None,
            )
        )
    return out


@dataclass
class ProviderSimulators:
    adyen: AdyenSim
    stripe: StripeSim

    def hosts(self) -> list[str]:
        """The simulators' host:port, for TERMPULSE_PROVIDER_HOSTS (they are no official host)."""
        return [sim.url.split("//", 1)[1] for sim in (self.adyen, self.stripe)]

    def account_specs(self) -> list[dict]:
        """What to create as provider accounts so TermPulse polls these simulators."""
        return [
            {
                "name": "Adyen (simulator)",
                "kind": "adyen",
                "environment": "test",
                "region": "",
                "merchant_account": self.adyen.merchant_account,
                "api_base_url": self.adyen.device_api_url,
                "management_base_url": self.adyen.url,
                "api_key": self.adyen.api_key,
                "use_legacy_api": False,
            },
            {
                "name": "Stripe (simulator)",
                "kind": "stripe",
                "environment": "test",
                "region": "",
                "merchant_account": "",
                "api_base_url": self.stripe.url,
                "management_base_url": self.stripe.url,
                "api_key": self.stripe.api_key,
                "use_legacy_api": False,
            },
        ]

    def start_demo_story(
        self, store_ref: str | None = None, *, up_s: float = 120.0, down_s: float = 90.0, drift: bool = True
    ) -> str | None:
        """The demo's story on one Adyen store (default: the one with the most cloud terminals):
        its terminals lose the cloud connection for `down_s`, come back for `up_s`, and so on.
        With `drift`, a terminal here and there also drops and returns now and then."""
        if store_ref is None:
            counts = Counter(t.store_ref for t in self.adyen.terminals.values() if t.cloud_enabled)
            store_ref = counts.most_common(1)[0][0] if counts else None
        if store_ref is not None:
            self.adyen.start_story(store_ref, up_s=up_s, down_s=down_s)
        if drift:
            self.adyen.start_drift(period_s=45.0, fraction=0.02, seed=4)
        return store_ref

    async def stop(self) -> None:
        await self.adyen.stop()
        await self.stripe.stop()


async def register_simulator_accounts(
    database: Database,
    secret_key: str,
    sims: ProviderSimulators,
    *,
    requests_per_second: float = 50.0,
    poll_interval_s: int = 60,
) -> list[ProviderAccount]:
    """Create (or point again at the simulators) one provider account per simulator. Idempotent by name."""
    from sqlalchemy import select

    from app.providers.hosts import ProviderHosts
    from app.providers.models import ProviderAccount
    from app.providers.schemas import AccountIn, AccountUpdate
    from app.providers.service import create_account, update_account

    hosts = ProviderHosts(sims.hosts())  # the simulators, listed explicitly

    accounts = []
    async with database.sessionmaker() as session:
        for spec in sims.account_specs():
            spec = {**spec, "requests_per_second": requests_per_second, "poll_interval_s": poll_interval_s}
            current = (
                await session.execute(select(ProviderAccount).where(ProviderAccount.name == spec["name"]))
            ).scalar_one_or_none()
            if current is None:
                accounts.append(await create_account(session, secret_key, AccountIn(**spec), hosts=hosts))
            else:
                accounts.append(
                    await update_account(session, secret_key, current, AccountUpdate(**spec), hosts=hosts)
                )
    return accounts


async def start_provider_simulators(
    terminal_rows: Iterable[Mapping[str, str]],
    store_rows: Iterable[Mapping[str, str]] | None = None,
    *,
    host: str = "127.0.0.1",
    adyen_port: int = 0,
    stripe_port: int = 0,
) -> ProviderSimulators:
    """Both simulators for a fleet (rows as in the fleet CSVs), listening on loopback."""
    if not host.startswith("127."):
        raise ValueError("the provider simulators listen on loopback (127.0.0.0/8) only")
    adyen = await AdyenSim(sim_terminals(terminal_rows, store_rows, "adyen")).start(host, adyen_port)
    stripe = await StripeSim(sim_terminals(terminal_rows, store_rows, "stripe")).start(host, stripe_port)
    return ProviderSimulators(adyen, stripe)
