"""Shared fixtures: every database test runs on PostgreSQL and on SQLite.

PostgreSQL: TERMPULSE_TEST_DATABASE_URL names the server and a base database name; each test
process creates its own database `<name>_<pid>` (so concurrent runs, and the workers of one
run under pytest-xdist, never collide), builds the schema through the Alembic migrations, and
drops it at the end. Between tests every table is
emptied, so each test starts from a fresh, migrated database.
"""

from __future__ import annotations

import asyncio
import os

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

import app.models  # noqa: F401
from app.db import Base, Database, server_execute
from app.migrate import migrate

DEFAULT_PG = "postgresql+asyncpg://postgres@127.0.0.1:5432/termpulse_test"
BACKENDS = ("postgresql", "sqlite")


_pg_problem: list[str] = []  # set when PostgreSQL was not reachable, for the closing summary


def _base_url():
    return make_url(os.environ.get("TERMPULSE_TEST_DATABASE_URL", DEFAULT_PG))


def _unreachable(base, exc: Exception) -> str:
    return f"PostgreSQL at {base.render_as_string(hide_password=True)} is not reachable: {exc!r}"


def pytest_sessionstart(session):
    # Under CI=true a missing PostgreSQL fails the run before any test, in the main process
    # (under pytest-xdist a worker's pytest.exit would only show as a crashed worker).
    if os.environ.get("CI") != "true" or hasattr(session.config, "workerinput"):
        return
    base = _base_url()
    try:
        asyncio.run(server_execute(base, "SELECT 1"))
    except Exception as exc:
        pytest.exit(f"CI=true and {_unreachable(base, exc)}", returncode=3)


def pytest_sessionfinish(session):
    # A pytest-xdist worker hands its finding to the controller, which prints the summary.
    if _pg_problem and hasattr(session.config, "workeroutput"):
        session.config.workeroutput["pg_problem"] = _pg_problem[0]


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    problem = getattr(node, "workeroutput", {}).get("pg_problem")
    if problem and not _pg_problem:
        _pg_problem.append(problem)


def pytest_terminal_summary(terminalreporter):
    if _pg_problem:
        terminalreporter.write_sep("!", "PostgreSQL NOT TESTED", red=True, bold=True)
        terminalreporter.write_line(
            f"{_pg_problem[0]}: every PostgreSQL test was skipped.", red=True, bold=True
        )
        terminalreporter.write_line(
            "Start PostgreSQL or set TERMPULSE_TEST_DATABASE_URL (under CI=true this fails)."
        )


@pytest.fixture(scope="session")
async def pg_url(tmp_path_factory):
    base = _base_url()
    name = f"{base.database}_{os.getpid()}"
    try:
        await server_execute(base, f'DROP DATABASE IF EXISTS "{name}"')
        await server_execute(base, f'CREATE DATABASE "{name}"')
    except Exception as exc:
        message = _unreachable(base, exc)
        _pg_problem.append(message)
        if os.environ.get("CI") == "true":
            pytest.exit(f"CI=true and {message}", returncode=3)
        pytest.skip(message)
    url = base.set(database=name).render_as_string(hide_password=False)
    yield url
    await server_execute(base, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory):
    return f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('sqlite') / 'termpulse.db'}"


async def _migrated(url: str) -> Database:
    database = Database(url)
    await migrate(database.engine)
    return database


@pytest.fixture(scope="session")
async def pg_database(pg_url):
    database = await _migrated(pg_url)
    yield database
    await database.dispose()


@pytest.fixture(scope="session")
async def sqlite_database(sqlite_url):
    database = await _migrated(sqlite_url)
    yield database
    await database.dispose()


async def empty_all_tables(database: Database) -> None:
    tables = [t.name for t in Base.metadata.sorted_tables]
    async with database.engine.begin() as conn:
        if database.dialect == "postgresql":
            await conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
        else:
            for name in reversed(tables):
                await conn.execute(text(f"DELETE FROM {name}"))
        await seed_presets(conn)


async def seed_presets(conn) -> None:
    """The network profiles a new installation has (migration 0008 seeds them)."""
    from app.inventory.models import NetworkProfile
    from app.inventory.profiles import PRESETS

    rows = [
        {"name": name, "description": text, "destinations": [d.as_json() for d in dests]}
        for name, (text, dests) in PRESETS.items()
    ]
    await conn.execute(NetworkProfile.__table__.insert(), rows)


@pytest.fixture(params=BACKENDS)
def migrated_database(request) -> Database:
    # Sync on purpose: only the backend asked for is set up (a missing PostgreSQL skips its half).
    return request.getfixturevalue(f"{'pg' if request.param == 'postgresql' else 'sqlite'}_database")


@pytest.fixture
async def db(migrated_database) -> Database:
    """A migrated, empty database: once on PostgreSQL, once on SQLite."""
    await empty_all_tables(migrated_database)
    return migrated_database


@pytest.fixture
async def pg_db(pg_database) -> Database:
    """PostgreSQL only (leases with SKIP LOCKED, several workers)."""
    await empty_all_tables(pg_database)
    return pg_database


@pytest.fixture
def settings(db, tmp_path):
    from app.config import Settings

    # basic_auth: the tests log in with HTTP Basic for brevity (off by default: tests/test_tokens.py);
    # provider_hosts: the provider simulators on loopback, listed as an admin would.
    return Settings(
        database_url=db.url,
        secret_key="test-secret-key",
        allowed_networks=["127.0.0.0/8"],
        provider_hosts=["127.0.0.1"],
        basic_auth=True,
    )


@pytest.fixture
async def client(db, settings):
    """An HTTP client talking to the app (ASGI, in process) over the test database."""
    import httpx

    from app.main import create_app

    application = create_app(settings, database=db, run_worker=False)
    transport = httpx.ASGITransport(app=application)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        http.event_hooks["request"].append(csrf_header_hook(settings))
        yield http
    await application.state.relay.close()  # started on first use: no lifespan runs here


def csrf_header_hook(settings):
    """A logged-in client sends its session's CSRF token as TermPulse's pages do (htmx's header),
    unless the request names one itself: tests/test_csrf.py tests the check."""
    from app.auth.sessions import COOKIE
    from app.web.security import csrf_token_for

    async def hook(request):
        sent = dict(p.strip().split("=", 1) for p in request.headers.get("cookie", "").split(";") if "=" in p)
        cookie = sent.get(COOKIE)
        if cookie and "x-csrf-token" not in request.headers:
            request.headers["X-CSRF-Token"] = csrf_token_for(settings.secret_key, cookie)

    return hook


@pytest.fixture
def keep_plain_results():
    """Every result a row, plain successes too (TERMPULSE_KEEP_PLAIN_RESULTS, subprocesses
    included): for the tests that look at each scheduled run (its due time, when it was
    checked and written), not at how results are stored (tests/monitoring/test_compact_results.py)."""
    from app.config import get_settings

    before = os.environ.get("TERMPULSE_KEEP_PLAIN_RESULTS")
    os.environ["TERMPULSE_KEEP_PLAIN_RESULTS"] = "true"
    get_settings.cache_clear()
    yield
    if before is None:
        del os.environ["TERMPULSE_KEEP_PLAIN_RESULTS"]
    else:
        os.environ["TERMPULSE_KEEP_PLAIN_RESULTS"] = before
    get_settings.cache_clear()
