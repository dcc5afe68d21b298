"""Schemathesis over the whole OpenAPI: every operation, with generated valid and invalid
input, against a real server (uvicorn on loopback) over PostgreSQL and SQLite, with an admin's
and a viewer's API token (the agent protocol with an agent's token). No answer may be a 5xx, and every answer
must be a status the operation documents, with the documented content type.

Bounded and deterministic: EXAMPLES per operation, derandomized (the same cases every run).
Every operation runs, none is excluded: what could reach out stays on loopback. The checks'
targets: the allowed networks are 127.0.0.0/8 and names go to a nameserver on loopback (a
closed port); provider calls: the seeded account's URL is a closed loopback port, and the
fixture loopback_only refuses any other name or address in this process (a generated PUT can
move an account back to its official host).
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import threading
import zlib

import httpx
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from app.auth.models import User
from app.auth.passwords import hash_password
from app.auth.sessions import create_token
from app.config import Settings
from app.main import create_app
from tests.conftest import BACKENDS, empty_all_tables

# Per operation and database: about a minute for both on CI's two cores. A deeper run:
# TERMPULSE_FUZZ_EXAMPLES=200 pytest tests/test_api_fuzz.py
EXAMPLES = int(os.environ.get("TERMPULSE_FUZZ_EXAMPLES", "10"))
VIEWER_EXAMPLES = max(3, EXAMPLES // 3)  # a viewer is refused most writes early: fewer cases say as much


@schemathesis.check
def no_server_error(ctx, response, case):
    """No 5xx, but for the one a provider call answers when the provider does not (its URL is
    a closed loopback port here): a 502 the operation documents."""
    provider_call = case.path.startswith("/api/v1/providers/") and case.path.endswith(("/test", "/sync"))
    if response.status_code >= 500 and not (provider_call and response.status_code == 502):
        raise AssertionError(f"{response.status_code}: {response.text[:500]}")


# Response bodies are not checked against their schemas: the refusals' `detail` is a string,
# a {field, reason} or a list (app.errors), which the generated OpenAPI cannot say per route.
CHECKS = [no_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def _schema() -> schemathesis.BaseSchema:
    offline = Settings(database_url="sqlite+aiosqlite:///:memory:", secret_key="x" * 40)
    return schemathesis.openapi.from_dict(create_app(offline).openapi())


schema = _schema()


def _free_socket() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


class LoopbackServer:
    """The app under uvicorn in a thread of its own (its own event loop), on a loopback port."""

    def __init__(self, settings: Settings) -> None:
        self.sock = _free_socket()
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        # asyncio's loop, not uvloop: its names and connections go through the socket module,
        # where loopback_only sees them.
        config = uvicorn.Config(create_app(settings), loop="asyncio", log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> LoopbackServer:
        self.thread.start()
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("the server did not start")
            self.thread.join(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


class Fleet:
    """What the fuzzed calls can find: a store, a terminal, a provider account, an agent, a
    window. Half the cases get these as their path parameters instead of generated ones, so
    updates and checks reach the database and the probes, not only the 404."""

    def __init__(self, url: str, admin: str, viewer: str) -> None:
        self.url = url
        self.admin = admin
        self.viewer = viewer
        self.agent_token = ""
        self.paths: dict[str, str] = {}
        self.refusals: list[object] = []

    async def seed(self, closed_port: int) -> None:
        async with httpx.AsyncClient(base_url=self.url, headers=self.headers("/api/v1")) as api:

            async def made(path: str, body: dict) -> dict:
                answer = await api.post(path, json=body)
                assert answer.status_code == 201, answer.text
                return answer.json()

            await made("/api/v1/stores", {"code": "S-1", "name": "Fuzz store", "region": "North"})
            await made(
                "/api/v1/terminals",
                {
                    "store_code": "S-1",
                    "poiid": "V400m-100000001",
                    "integration": "local",
                    "local_api": "tcp",
                    "lan_host": "127.0.0.1",
                    "lan_port": closed_port,
                },
            )
            account = await made(
                "/api/v1/providers",
                {
                    "name": "fuzz",
                    "kind": "stripe",
                    "api_key": "sk_test_fuzzfuzzfuzz",
                    "api_base_url": f"http://127.0.0.1:{closed_port}",
                },
            )
            agent = await made("/api/v1/agents", {"name": "fuzz agent", "stores": ["S-1"]})
            window = await made(
                "/api/v1/maintenance-windows",
                {"title": "fuzz", "scope": "store", "store": "S-1", "starts_at": "2099-01-01T00:00Z"}
                | {"ends_at": "2099-01-02T00:00Z"},
            )
        self.agent_token = agent["token"]
        self.paths = {
            "code": "S-1",
            "poiid": "V400m-100000001",
            "account_id": str(account["id"]),
            "agent_id": str(agent["agent"]["id"]),
            "window_id": str(window["id"]),
            "scope": "store",
            "name": "S-1",
        }

    def headers(self, path: str, *, viewer: bool = False) -> dict[str, str]:
        token = self.agent_token if path.startswith("/api/agent/") else self.viewer if viewer else self.admin
        return {"Authorization": f"Bearer {token}"}

    def known_paths(self, case) -> None:
        """Every other case (by a hash of the case, so the same ones each run) on seeded rows."""
        drawn = f"{case.path_parameters}{case.query}{case.body}"
        if case.path_parameters and zlib.crc32(drawn.encode()) % 2:
            for name in case.path_parameters:
                if name in self.paths:
                    case.path_parameters[name] = self.paths[name]


def _loopback(host: object) -> bool:
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return host in (None, "localhost")


@pytest.fixture(scope="module")
def loopback_only():
    """Nothing the fuzzed calls set off leaves the machine, whatever they store: a provider
    account left at its official host (api.stripe.com) by a generated PUT, a terminal's cloud
    status. Names resolve only on loopback and connections go only to loopback; the probes'
    own nameserver is on loopback too (dns_nameservers below)."""
    resolve, connect, connect_ex = socket.getaddrinfo, socket.socket.connect, socket.socket.connect_ex
    refusals: list[object] = []  # what was kept from leaving, for the test below

    def getaddrinfo(host, *args, **kwargs):
        if not _loopback(host.decode() if isinstance(host, bytes) else host):
            refusals.append(host)
            raise socket.gaierror(socket.EAI_NONAME, f"the fuzz run resolves no name off loopback: {host}")
        return resolve(host, *args, **kwargs)

    def refused(address) -> bool:
        if isinstance(address, tuple) and not _loopback(address[0]):
            refusals.append(address)
            return True
        return False

    def guarded_connect(sock, address):
        if refused(address):
            raise OSError(errno.ENETUNREACH, f"the fuzz run connects only to loopback, not {address}")
        return connect(sock, address)

    def guarded_connect_ex(sock, address):
        return errno.ENETUNREACH if refused(address) else connect_ex(sock, address)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket, "getaddrinfo", getaddrinfo)
        patch.setattr(socket.socket, "connect", guarded_connect)
        patch.setattr(socket.socket, "connect_ex", guarded_connect_ex)
        yield refusals


@pytest.fixture(scope="module", params=BACKENDS)
def fuzzed_database(request):
    # Sync, as tests/conftest.py's migrated_database: only the backend asked for is set up.
    return request.getfixturevalue(f"{'pg' if request.param == 'postgresql' else 'sqlite'}_database")


@pytest.fixture(scope="module")
async def fleet(loopback_only, fuzzed_database):
    database = fuzzed_database
    await empty_all_tables(database)
    async with database.sessionmaker() as session:
        admin = User(username="fuzz", role="admin", password_hash=hash_password("correct horse"))
        session.add(admin)
        await session.flush()
        _, token = await create_token(session, admin, "fuzz", "admin", None)
        viewer = User(username="fuzz-viewer", role="viewer", password_hash=hash_password("correct horse"))
        session.add(viewer)
        await session.flush()
        _, viewer_token = await create_token(session, viewer, "fuzz", "viewer", None)
        await session.commit()
    closed = _free_socket()  # bound, never listening: every probe and provider call is refused
    port = closed.getsockname()[1]
    settings = Settings(
        database_url=database.url,
        secret_key="fuzz-secret-key-of-at-least-32-chars",
        allowed_networks=["127.0.0.0/8"],
        provider_hosts=["127.0.0.1"],
        dns_nameservers=["127.0.0.1"],
        dns_port=port,
        check_per_user_per_minute=100_000,  # the run's calls, not the limits, are what is tested
        api_per_token_per_minute=100_000,
    )
    with LoopbackServer(settings) as server:
        fleet = Fleet(server.url, token, viewer_token)
        fleet.refusals = loopback_only
        await fleet.seed(port)
        yield fleet
    closed.close()


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_operation_answers_a_server_error(case, fleet):
    fleet.known_paths(case)
    if case.path == "/api/agent/v1/work":
        case.query = {**(case.query or {}), "wait": 0}  # the long poll, answered at once
    case.call_and_validate(base_url=fleet.url, headers=fleet.headers(case.path), checks=CHECKS, timeout=30)


@schema.parametrize()
@settings(
    max_examples=VIEWER_EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_operation_answers_a_server_error_as_a_viewer(case, fleet):
    """The same run as a viewer (fewer examples): a refusal is a documented 403, never a 5xx."""
    fleet.known_paths(case)
    if case.path == "/api/agent/v1/work":
        case.query = {**(case.query or {}), "wait": 0}
    headers = fleet.headers(case.path, viewer=True)
    case.call_and_validate(base_url=fleet.url, headers=headers, checks=CHECKS, timeout=30)


def test_the_openapi_documents_the_refusals():
    spec = schema.raw_schema
    one = spec["paths"]["/api/v1/stores/{code}"]
    assert {"401", "403", "404", "422", "429", "503"} <= set(one["get"]["responses"])
    assert {"400", "409"} <= set(one["put"]["responses"]) and "409" not in one["get"]["responses"]
    assert "502" in spec["paths"]["/api/v1/providers/{account_id}/test"]["post"]["responses"]
    assert "404" not in spec["paths"]["/api/v1/stores"]["get"]["responses"]
    error = one["get"]["responses"]["404"]["content"]["application/json"]["schema"]
    assert error == {"$ref": "#/components/schemas/Error"}
    assert "text/plain" in spec["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert "204" in spec["paths"]["/api/agent/v1/work"]["get"]["responses"]
    ids = spec["paths"]["/api/v1/agents/{agent_id}"]["get"]["parameters"][0]["schema"]
    assert (ids["minimum"], ids["maximum"]) == (1, 2**31 - 1)


def test_nothing_set_off_by_the_run_leaves_loopback(fleet):
    with pytest.raises(socket.gaierror):
        socket.getaddrinfo("api.stripe.com", 443)
    bearer = fleet.headers("/api/v1")
    made = httpx.post(
        f"{fleet.url}/api/v1/providers",
        json={"name": "official", "kind": "stripe", "api_key": "sk_test_officialhost"},
        headers=bearer,
    )
    assert made.status_code == 201 and made.json()["api_base_url"] in (None, "https://api.stripe.com")
    tried = httpx.post(f"{fleet.url}/api/v1/providers/{made.json()['id']}/test", headers=bearer, timeout=30)
    assert tried.json()["ok"] is False and "api.stripe.com" in fleet.refusals
