"""Rate limits shared by every process on PostgreSQL (app.web.ratelimit): two apps on one
database (what `serve --workers N` and several hosts are) share a login lockout, the Check
connection budget and an API token's calls; one statement counts a call, concurrent calls from
both never pass the limit, ended windows are pruned. Per-token 429s on both databases."""

import asyncio
import time
from contextlib import asynccontextmanager

import httpx
from sqlalchemy import func, select, update

from app.auth.models import User
from app.auth.sessions import create_token
from app.db import Database
from app.main import create_app
from app.web.ratelimit import InDatabase, InProcess, RateLimitCounter, limiter
from tests.conftest import csrf_header_hook
from tests.html import dom, one, text
from tests.test_auth import add_user


def test_the_database_is_used_where_several_processes_serve(pg_db, sqlite_database):
    assert isinstance(limiter(pg_db, "x", 1, 1.0), InDatabase)
    assert isinstance(limiter(sqlite_database, "x", 1, 1.0), InProcess)


async def test_two_processes_count_the_same_calls(pg_db, pg_url):
    other = Database(pg_url)  # another process's engine
    try:
        one_, two = InDatabase(pg_db, "t", 3, 60.0), InDatabase(other, "t", 3, 60.0)
        assert [await one_.hit("k"), await two.hit("k"), await one_.hit("k")] == [None] * 3
        wait = await two.hit("k")
        assert wait is not None and 59 < wait <= 60
        assert 59 < await one_.wait_s("k") <= 60
        assert await one_.hit("other key") is None
        async with pg_db.sessionmaker() as session:  # the refused call was not counted
            assert (
                await session.scalar(select(RateLimitCounter.hits).where(RateLimitCounter.key == "t:k")) == 3
            )
        # Concurrent calls from both never let more than the limit through.
        many = [InDatabase(db, "c", 10, 60.0) for db in (pg_db, other)]
        answers = await asyncio.gather(*(many[i % 2].hit("k") for i in range(30)))
        assert sum(a is None for a in answers) == 10
    finally:
        await other.dispose()


async def test_a_window_ends_and_ended_ones_are_pruned(pg_db):
    limit = InDatabase(pg_db, "w", 2, 60.0)
    assert await limit.hit("k") is None and await limit.hit("k") is None and await limit.hit("k") is not None
    async with pg_db.sessionmaker() as session:  # the window ended (61 s later)
        await session.execute(update(RateLimitCounter).values(resets_at=time.time() - 1))
        await session.commit()
    assert await limit.wait_s("k") is None and await limit.hit("k") is None  # a new window: 1 call
    await InDatabase(pg_db, "w", 2, 60.0).hit("gone")
    async with pg_db.sessionmaker() as session:
        await session.execute(
            update(RateLimitCounter).where(RateLimitCounter.key == "w:gone").values(resets_at=time.time() - 1)
        )
        await session.commit()
    pruner = InDatabase(pg_db, "w", 2, 60.0)
    await pruner.hit("x")  # a process prunes on its first call, then once a minute
    async with pg_db.sessionmaker() as session:
        keys = set(await session.scalars(select(RateLimitCounter.key)))
    assert keys == {"w:k", "w:x"}
    long_key = InDatabase(pg_db, "w", 2, 60.0)
    assert await long_key.hit("é" * 300) is None  # kept under a digest of the key


@asynccontextmanager
async def two_apps(database: Database, url: str, **settings):
    """Two apps on one database, each with its own engine: two server processes."""
    from app.config import Settings

    config = Settings(
        database_url=url, secret_key="test-secret-key", allowed_networks=["127.0.0.0/8"], **settings
    )
    second = Database(url)
    clients = []
    try:
        for db in (database, second):
            app = create_app(config, database=db, run_worker=False)
            app.state.user_count_cache = [0.0, 0]
            client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")
            client.event_hooks["request"].append(csrf_header_hook(config))
            clients.append(client)
        yield clients
    finally:
        for client in clients:
            await client.aclose()
        await second.dispose()


async def test_a_login_lockout_holds_on_every_process(pg_db, pg_url):
    await add_user(pg_db, "ann", "admin")
    async with two_apps(pg_db, pg_url) as (a, b):
        for i in range(10):  # 10 wrong passwords, half on each process
            bad = await (a, b)[i % 2].post(
                "/login", data={"username": "ann", "password": "guess", "next": "/"}
            )
            assert bad.status_code == 401
        for client in (a, b):
            locked = await client.post(
                "/login", data={"username": "ann", "password": "correct horse", "next": "/"}
            )
            assert locked.status_code == 429
            assert "Too many failed attempts. Try again in 15 minutes." in text(
                one(dom(locked), ".banner.error")
            )


async def test_check_connection_presses_are_counted_once_for_all_processes(pg_db, pg_url):
    await add_user(pg_db, "sue", "support")
    async with two_apps(pg_db, pg_url, check_per_user_per_minute=2, basic_auth=True) as (a, b):
        auth = httpx.BasicAuth("sue", "correct horse")
        for client in (a, b):
            client.auth = auth
        answers = [await c.post("/api/v1/terminals/NO-SUCH/check") for c in (a, b, a)]
    assert [r.status_code for r in answers[:2]] == [404, 404]  # counted, then not found
    assert answers[2].status_code == 429 and int(answers[2].headers["Retry-After"]) > 0


async def token_for(db: Database, name: str, role: str = "viewer") -> str:
    await add_user(db, name, role)
    async with db.sessionmaker() as session:
        user = await session.scalar(select(User).where(User.username == name))
        _, token = await create_token(session, user, "script", role, None)
        await session.commit()
    return token


async def test_an_api_token_gets_its_calls_per_minute_then_a_429(db, settings, client):
    app = client._transport.app
    app.state.settings = settings.model_copy(update={"api_per_token_per_minute": 3})
    app.state.user_count_cache = [0.0, 0]
    token, other = await token_for(db, "bot", "viewer"), await token_for(db, "bot2", "viewer")
    calls = [
        await client.get("/api/v1/stores", headers={"Authorization": f"Bearer {token}"}) for _ in range(4)
    ]
    assert [c.status_code for c in calls] == [200, 200, 200, 429]
    refused = calls[3]
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert (
        "This API token made 3 calls within a minute (TERMPULSE_API_PER_TOKEN_PER_MINUTE)"
        in (refused.json()["detail"])
    )
    assert (
        await client.get("/api/v1/stores", headers={"Authorization": f"Bearer {other}"})
    ).status_code == 200
    assert (await client.get("/api/v1/stores", headers={"Authorization": "Basic eDp5"})).status_code == 401


async def test_an_api_tokens_calls_are_counted_on_every_process(pg_db, pg_url):
    token = await token_for(pg_db, "bot", "viewer")
    headers = {"Authorization": f"Bearer {token}"}
    async with two_apps(pg_db, pg_url, api_per_token_per_minute=3) as (a, b):
        answers = [await c.get("/api/v1/stores", headers=headers) for c in (a, b, a, b)]
    assert [r.status_code for r in answers] == [200, 200, 200, 429]
    async with pg_db.sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(RateLimitCounter)) == 1
