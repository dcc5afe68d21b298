"""app.db.Driver: the result writer's and the claim's statements straight through asyncpg
(PostgreSQL), in the session's transaction, failing as SQLAlchemy's exceptions."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError

from app.db import driver_of, in_transaction, is_transient, is_unreachable


async def test_driver_statements_are_in_the_session_transaction(pg_db):
    async with pg_db.sessionmaker() as session:
        driver = await driver_of(session)  # first thing in the session: begins its transaction
        assert driver.driver.is_in_transaction()
        began = (await driver.fetch("SELECT now()"))[0][0]  # now(): when the transaction began
        await driver.execute("CREATE TEMP TABLE t (k text PRIMARY KEY) ON COMMIT DROP")
        await driver.execute("INSERT INTO t SELECT unnest($1::text[])", ["a", "b"])
        rows = await driver.fetch("SELECT k FROM t WHERE k = ANY($1::text[]) ORDER BY k", ["b", "c"])
        assert [r[0] for r in rows] == ["b"] and [r["k"] for r in rows] == ["b"]
        # SQLAlchemy's own statements: the same transaction, and the driver's after them too
        assert (await session.scalar(text("SELECT now()"))) == began
        assert (await session.scalar(text("SELECT count(*) FROM t"))) == 2
        assert (await (await driver_of(session)).fetch("SELECT now()"))[0][0] == began
        await session.commit()


async def test_driver_failures_are_sqlalchemy_exceptions(pg_db):
    async def work(session):
        await session.execute(text("CREATE TEMP TABLE t (k text PRIMARY KEY) ON COMMIT DROP"))
        await session.execute(text("INSERT INTO t VALUES ('a')"))
        driver = await driver_of(session)
        await driver.execute("INSERT INTO t VALUES ($1)", "a")

    with pytest.raises(IntegrityError) as caught:
        await in_transaction(pg_db, work)
    assert getattr(caught.value.orig, "sqlstate", None) == "23505"
    assert not is_transient(caught.value) and not is_unreachable(caught.value)


async def test_driver_transient_failures_are_retried(pg_db):
    """A deadlock (or serialization failure) raised through the driver is retried by the one
    retry rule, like one raised through SQLAlchemy."""
    attempts = []

    async def work(session):
        attempts.append(1)
        driver = await driver_of(session)
        if len(attempts) == 1:
            await driver.execute("DO $$ BEGIN RAISE EXCEPTION 'deadlock' USING ERRCODE = '40P01'; END $$")
        return await driver.fetch("SELECT 1")

    rows = await in_transaction(pg_db, work)
    assert len(attempts) == 2 and rows[0][0] == 1


async def test_driver_lost_connection_is_unreachable(pg_db):
    async with pg_db.sessionmaker() as session:
        driver = await driver_of(session)
        pid = (await driver.fetch("SELECT pg_backend_pid()"))[0][0]
        async with pg_db.engine.connect() as other:
            await other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        with pytest.raises(DBAPIError) as caught:
            await driver.fetch("SELECT 1")
        assert is_unreachable(caught.value)
