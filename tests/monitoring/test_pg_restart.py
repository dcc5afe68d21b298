"""The engine through a real PostgreSQL restart: a private cluster started by this test (its
own port and directory, so stopping it hurts nothing else) is stopped for a few seconds under
a running worker, then started again. No result is lost or stored twice, and the silence is
recorded as unknown from when a result was missed until checks resumed, not as up."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from app.config import Settings
from app.db import Database, server_execute
from app.migrate import migrate
from app.monitoring.models import CheckResult, StateChange
from app.monitoring.worker import Worker
from tests.monitoring.helpers import add_monitors, add_store, wait_for

pytestmark = [
    pytest.mark.usefixtures("keep_plain_results"),  # they look at each scheduled run's row
    pytest.mark.slow,
    pytest.mark.xdist_group("multiworker"),
]

PG_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)), None)


def _as_postgres(*cmd: str) -> None:
    runner = [] if os.geteuid() != 0 else ["runuser", "-u", "postgres", "--"]
    subprocess.run([*runner, *cmd], check=True, capture_output=True, timeout=60)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def private_cluster():
    if PG_BIN is None or shutil.which("runuser") is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found")
    # Outside pytest's own temporary folder, which only its owner may enter.
    home = Path(tempfile.mkdtemp(prefix="termpulse-pg-"))
    data = home / "data"
    port = _free_port()
    if os.geteuid() == 0:
        shutil.chown(home, "postgres")
    _as_postgres(str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres")
    opts = f"-p {port} -k {home} -c listen_addresses=127.0.0.1 -c fsync=off"

    def start() -> None:
        _as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(data), "-o", opts, "-w", "-l", f"{data}.log", "start")

    def stop() -> None:
        _as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")

    start()
    try:
        yield port, start, stop
    finally:
        with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
            _as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(home, ignore_errors=True)


async def test_a_postgresql_restart_loses_nothing_and_is_recorded_as_unknown(private_cluster, ctx, servers):
    port, start, stop = private_cluster
    admin_url = f"postgresql+asyncpg://postgres@127.0.0.1:{port}/postgres"
    await server_execute(admin_url, "CREATE DATABASE restart_test")
    db = Database(f"postgresql+asyncpg://postgres@127.0.0.1:{port}/restart_test")
    await migrate(db.engine)
    h, p = await servers.listen()
    store = await add_store(db)
    ids = await add_monitors(
        db,
        [
            {"store_id": store, "kind": "tcp", "target": f"{h}:{p}", "params": {"settle_ms": 0}}
            for _ in range(20)
        ],
        interval_s=2,
    )
    s = Settings(
        database_url=db.url,
        secret_key="restart-test-secret",
        allowed_networks=["127.0.0.0/8"],
        lease_s=3,
        claim_batch=100,
        worker_concurrency=100,
    )
    # Its own engine as `termpulse worker` has it: no ping before a transaction, so the
    # connections the restart dropped fail once each and are replaced.
    worker_db = Database(db.url, pool_pre_ping=False)
    worker = Worker(
        s,
        worker_db,
        probe_context=ctx,
        sweep_interval_s=0.25,
        write_delay_s=0.05,
        maintenance=False,
        cloud=False,
    )

    async def results_per_monitor() -> dict[int, int]:
        async with db.sessionmaker() as session:
            rows = await session.execute(
                select(CheckResult.monitor_id, func.count()).group_by(CheckResult.monitor_id)
            )
            return {monitor: n for monitor, n in rows}

    await worker.start()
    try:

        async def each_checked_twice():
            counts = await results_per_monitor()
            return len(counts) == len(ids) and min(counts.values()) >= 2

        await wait_for(each_checked_twice, within=60)
        await asyncio.to_thread(stop)
        await asyncio.sleep(8)  # 4 intervals without a database: checks claimed before still finish
        await asyncio.to_thread(start)
        before = await results_per_monitor()

        async def resumed():
            counts = await results_per_monitor()
            return all(counts.get(m, 0) >= before.get(m, 0) + 3 for m in ids)

        await wait_for(resumed, within=90)
    finally:
        await worker.stop()
        await worker_db.dispose()
    assert worker.writer.lost == 0 and worker.writer.failed_batches == 0
    async with db.sessionmaker() as session:
        doubled = (
            await session.execute(
                select(CheckResult.monitor_id, CheckResult.due_at, func.count())
                .where(CheckResult.manual.is_(False))
                .group_by(CheckResult.monitor_id, CheckResult.due_at)
                .having(func.count() > 1)
            )
        ).all()
        assert doubled == []
        # Each monitor's silence: up -> unknown (from when a result was missed) -> up again.
        for m in ids:
            changes = (
                await session.execute(
                    select(StateChange.at, StateChange.to_state)
                    .where(StateChange.monitor_id == m)
                    .order_by(StateChange.at, StateChange.id)
                )
            ).all()
            states = [c.to_state for c in changes]
            assert states[:1] == ["up"] and "unknown" in states and states[-1] == "up", (m, states)
            went, back = next(c for c in changes if c.to_state == "unknown"), changes[-1]
            assert back.at - went.at >= timedelta(seconds=3), (m, changes)  # the outage, not a blip
    await db.dispose()
