"""Fixtures for the scheduling engine: fleets written straight into the test database,
and small asyncio TCP servers on loopback (127.79.x.y, apart from the other test suites)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from app.checks.guard import TargetGuard
from app.checks.probes import ProbeContext
from app.checks.resolver import Resolver
from app.db import Database, utcnow
from app.inventory.models import Monitor, Store, Terminal
from app.monitoring.models import CheckResult, StateChange
from app.schedule import first_due_at

_store_seq = itertools.count(1)
_addresses = (f"127.79.{i // 250}.{i % 250 + 1}" for i in itertools.count())


def next_address() -> str:
    return next(_addresses)


async def add_store(db: Database, code: str | None = None) -> int:
    code = code or f"S-{next(_store_seq):05d}"
    async with db.sessionmaker() as s:
        store = Store(code=code, name=f"Store {code}", status="unknown")
        s.add(store)
        await s.commit()
        return store.id


async def add_terminals(
    db: Database, store_id: int, n: int, *, integration: str = "local", cloud_enabled: bool = False
) -> list[int]:
    rows = [
        {
            "store_id": store_id,
            "poiid": f"P400-{store_id:04d}{i:06d}",
            "model": "P400",
            "serial": f"{i}",
            "integration": integration,
            "cloud_enabled": cloud_enabled,
            "status": "unknown",
            "cloud_state": "unknown",
            "provider": "generic",
        }
        for i in range(n)
    ]
    async with db.engine.begin() as conn:
        await conn.execute(Terminal.__table__.insert(), rows)
    async with db.sessionmaker() as s:
        ids = (
            await s.execute(select(Terminal.id).where(Terminal.store_id == store_id).order_by(Terminal.id))
        ).scalars()
        return list(ids)


async def add_monitors(
    db: Database,
    specs: list[dict],
    *,
    interval_s: int = 60,
    timeout_s: float = 1.0,
    due: datetime | None = None,
    **defaults,
) -> list[int]:
    """specs: dicts with at least store_id, kind, target (terminal_id, params ... optional)."""
    due = due or utcnow()
    rows = []
    for i, spec in enumerate(specs):
        row = {
            "key": f"test:{spec['store_id']}:{spec.get('terminal_id')}:{spec['kind']}:{spec['target']}:{i}",
            "terminal_id": None,
            "params": {},
            "interval_s": interval_s,
            "timeout_s": timeout_s,
            "fail_threshold": 2,
            "success_threshold": 1,
            "enabled": True,
            "phase_ms": 0,
            "next_due_at": due,
            "state": "unknown",
            "state_since": utcnow(),
            "consecutive_failures": 0,
            "consecutive_successes": 0,
        }
        row.update(defaults)
        row.update(spec)
        rows.append(row)
    async with db.engine.begin() as conn:
        for i in range(0, len(rows), 1000):
            await conn.execute(Monitor.__table__.insert(), rows[i : i + 1000])
    async with db.sessionmaker() as s:
        ids = await s.execute(
            select(Monitor.id).where(Monitor.key.in_([r["key"] for r in rows])).order_by(Monitor.id)
        )
        return list(ids.scalars())


async def results_by_due(db: Database) -> dict[tuple[int, datetime], int]:
    async with db.sessionmaker() as s:
        rows = await s.execute(
            select(CheckResult.monitor_id, CheckResult.due_at, func.count())
            .where(CheckResult.manual.is_(False))
            .group_by(CheckResult.monitor_id, CheckResult.due_at)
        )
        return {(m, d): n for m, d, n in rows}


async def stored_results(
    db: Database, monitor_ids: list[int] | None = None
) -> list[tuple[int, datetime, str]]:
    """(monitor, checked_at, outcome) of every stored result but the plain successes (which are
    only counted): the rows and the results kept in their monitor's day, in time order."""
    from app.monitoring.compact import kept_results

    async with db.sessionmaker() as s:
        query = select(CheckResult.monitor_id, CheckResult.checked_at, CheckResult.outcome)
        if monitor_ids is not None:
            query = query.where(CheckResult.monitor_id.in_(monitor_ids))
        rows = [tuple(r) for r in (await s.execute(query)).all()]
        ever = datetime(2000, 1, 1, tzinfo=UTC)
        kept = await kept_results(s, monitor_ids, ever, utcnow() + timedelta(days=2))
    return sorted(rows + [(k.monitor_id, k.checked_at, k.outcome) for k in kept], key=lambda r: (r[1], r[0]))


async def state_changes(db: Database, monitor_id: int) -> list[tuple[str, str]]:
    async with db.sessionmaker() as s:
        rows = await s.execute(
            select(StateChange.from_state, StateChange.to_state)
            .where(StateChange.monitor_id == monitor_id)
            .order_by(StateChange.at, StateChange.id)
        )
        return [tuple(r) for r in rows]


class Servers:
    """Plain TCP listeners on loopback that accept and close (a healthy port)."""

    def __init__(self):
        self.servers: list[asyncio.base_events.Server] = []
        self.accepted = 0

    async def listen(self, host: str | None = None, port: int = 0) -> tuple[str, int]:
        host = host or next_address()

        def on_connect(reader, writer):
            self.accepted += 1
            writer.close()

        server = await asyncio.start_server(on_connect, host, port, backlog=4096)
        self.servers.append(server)
        return host, server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        for s in self.servers:
            s.close()
        for s in self.servers:
            await s.wait_closed()


@pytest.fixture
async def servers():
    s = Servers()
    yield s
    await s.close()


def closed_port() -> tuple[str, int]:
    """An address:port with nothing listening (connection refused)."""
    return next_address(), 9


@pytest.fixture
def ctx():
    """Probes may reach loopback only; no DNS server needed (targets are addresses)."""
    return ProbeContext(Resolver(["127.0.0.1"], 1), TargetGuard(["127.0.0.0/8"]))


async def wait_for(predicate, within: float = 10.0, every: float = 0.05):
    """Poll an async predicate until true (or fail the test after `within` seconds)."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        value = await predicate()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {within} s")
        await asyncio.sleep(every)


def seconds(n: float) -> timedelta:
    return timedelta(seconds=n)


# --- what a loaded machine may do, and nothing else -------------------------------------------


class Ledger:
    """Every outcome the watched workers' writers committed, stored or dropped, and when its
    batch was committed (through the writers' on_written hook)."""

    def __init__(self):
        self.handed: list[tuple[str, int, datetime, datetime, datetime]] = []

    def watch(self, worker) -> None:
        def on_written(batch, report) -> None:
            written_at = utcnow()  # after the commit: no earlier than the `now` the batch used
            for o in batch:
                self.handed.append((worker.worker_id, o.monitor_id, o.due_at, o.checked_at, written_at))

        worker.writer.on_written = on_written

    def written_at(self, stored: set[tuple[int, datetime, datetime]]) -> dict[tuple[int, datetime], datetime]:
        """(monitor id, due time) -> when the stored run of it was committed."""
        return {(mid, due): at for _, mid, due, checked, at in self.handed if (mid, due, checked) in stored}


def assert_due_chain(
    mid: int,
    dues: list[datetime],
    next_due: datetime,
    interval_s: int,
    phase_ms: int,
    written_at: dict[tuple[int, datetime], datetime],
) -> None:
    """A monitor's stored due times (sorted) and its pending one form a chain: each the next
    due time of the one before, as app.schedule.next_due_at computes it. That is
    the due time + the interval, except after a run written more than an interval after its
    due time (a loaded machine): then the first slot on the monitor's phase after the write
    (no burst of catch-up runs). Nothing else: no due time missed, none run twice, no drift."""
    interval = timedelta(seconds=interval_s)
    for a, b in itertools.pairwise([*dues, next_due]):
        if b == a + interval:
            continue
        late = written_at.get((mid, a))
        on_phase = first_due_at(b, interval_s, phase_ms) == b
        assert b > a + interval and on_phase and late is not None and a + interval <= late, (
            f"monitor {mid}: {b} follows {a} (run of {a} written at {late})"
        )
        # the first slot after the write (whole milliseconds), not a later one
        assert b - interval < late + timedelta(milliseconds=1), (
            f"monitor {mid}: skipped past {b - interval} (run of {a} written at {late})"
        )


class LoopLateness:
    """`async with LoopLateness() as late:` ... `late.max`: the most a 10 ms timer of this
    event loop fired late meanwhile, i.e. how much the machine delayed anything on the loop."""

    def __init__(self, every: float = 0.01):
        self.every = every
        self.max = 0.0
        self._task: asyncio.Task | None = None

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            t = loop.time()
            await asyncio.sleep(self.every)
            self.max = max(self.max, loop.time() - t - self.every)

    async def __aenter__(self) -> LoopLateness:
        self._task = asyncio.create_task(self._watch())
        return self

    async def __aexit__(self, *exc) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
