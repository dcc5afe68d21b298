"""`termpulse worker --processes N`: N worker processes sharing the fleet (PostgreSQL), a dead
one started again, all stopped by one SIGTERM; SQLite keeps its one-worker rule."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

import pytest
from sqlalchemy import select

from app.monitoring.models import WorkerBeat
from tests.cli import termpulse
from tests.monitoring.helpers import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("multiworker")]

SECRET = "processes-test-secret-key-0123456789abcdef"


async def _workers(db) -> list[WorkerBeat]:
    async with db.sessionmaker() as session:
        return list((await session.scalars(select(WorkerBeat))).all())


async def test_worker_processes_share_the_fleet_and_a_dead_one_is_started_again(pg_db, tmp_path):
    env = {
        **os.environ,
        "TERMPULSE_DATABASE_URL": pg_db.url,
        "TERMPULSE_SECRET_KEY": SECRET,
        "TERMPULSE_ALLOWED_NETWORKS": "127.0.0.0/8",
    }
    log = tmp_path / "worker.log"
    parent = subprocess.Popen(  # noqa: ASYNC220 (started once; it runs beside the test)
        [sys.executable, "-m", "app.cli", "worker", "--processes", "2"],
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    try:

        async def running(n):
            async def check():
                return len({w.pid for w in await _workers(pg_db) if w.stopped_at is None}) >= n

            return check

        await wait_for(await running(2), within=60)
        first = {w.pid for w in await _workers(pg_db)}
        assert parent.pid not in first  # the children check; the parent only supervises
        victim = min(first)
        os.kill(victim, signal.SIGKILL)

        async def restarted():
            pids = {w.pid for w in await _workers(pg_db) if w.stopped_at is None}
            return len(pids - first) >= 1

        await wait_for(restarted, within=60)
        parent.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(parent.wait, 60) == 0
        alive = [w for w in await _workers(pg_db) if w.pid != victim]
        assert alive and all(w.stopped_at is not None for w in alive)  # each said it stopped
    finally:
        if parent.poll() is None:
            parent.kill()
    output = log.read_text()
    assert "exited with status -9: starting it again" in output, output


def test_sqlite_keeps_one_worker(tmp_path):
    env = {
        "TERMPULSE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'one.db'}",
        "TERMPULSE_SECRET_KEY": SECRET,
    }
    done = termpulse("worker", "--processes", "2", env=env)
    assert done.returncode == 2 and "SQLite supports one worker only" in done.stderr
