"""The checking worker: `termpulse worker`, and the one embedded in `termpulse serve`.

An APScheduler 3.11 AsyncIOScheduler runs, on the worker's event loop:

* the sweep, every second: claim due monitors with a lease and run them
  (app.monitoring.scheduler), results written in batches (app.monitoring.writer);
* store agents silent for 3 heartbeats -> offline (their monitors unknown), every 5 s;
* stale -> unknown, every 15 s; retention, hourly; rollups of completed hours, every
  5 minutes (app.monitoring.maintenance). On PostgreSQL these run in one worker at a time
  (a PostgreSQL advisory lock), however many workers share the fleet;
* the cloud poll, every second: one provider call per due store (app.monitoring.cloud).

PostgreSQL: run as many workers as you like, on as many hosts. SQLite: one worker only.
A second one (another `termpulse worker`, or a `serve` next to a worker) is refused with
an error saying so; the lock is an flock() on `<database>.worker.lock`, released by the
kernel when the process dies, so a crashed worker never blocks the next.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import uvloop
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy import text
from sqlalchemy.engine import make_url

from app.checks.context import ProbeContext
from app.config import Settings
from app.db import Database, in_transaction, is_unreachable, utcnow
from app.monitoring.agents import mark_agents_offline
from app.monitoring.cloud import CloudPoller
from app.monitoring.maintenance import mark_stale, purge_results, rollup_pending
from app.monitoring.scheduler import Dispatcher, release_leases
from app.monitoring.status import reconcile_status
from app.monitoring.windows import apply_windows
from app.monitoring.workers import BEAT_EVERY_S, beat
from app.monitoring.writer import ResultWriter, new_owner_id
from app.process import raise_fd_limit, tune_gc
from app.shutdown import until_terminated

log = logging.getLogger(__name__)

# Advisory lock keys for the maintenance jobs (one worker at a time runs each).
_LOCK_KEYS = {
    "stale": 0x7E57_0001,
    "retention": 0x7E57_0002,
    "rollups": 0x7E57_0003,
    "agents": 0x7E57_0004,
    "status": 0x7E57_0005,
    "windows": 0x7E57_0010,
}


@dataclass(frozen=True)
class PeriodicJob:
    """A job a layer above runs on the worker's scheduler (the alert evaluator and the outbox
    delivery of app.alerts): `run` every `every_s`. With `lock_key`, one worker at a time runs
    it on PostgreSQL (an advisory lock), like the maintenance jobs."""

    name: str
    every_s: float
    run: Callable[[], Awaitable[object]]
    lock_key: int | None = None
    first_in_s: float = 1.0


class SecondWorkerRefused(RuntimeError):
    """SQLite already has a worker."""


class SqliteWorkerLock:
    """At most one worker per SQLite database file (an flock on a file next to it)."""

    def __init__(self, database_url: str, worker_id: str):
        name = make_url(database_url).database
        self.path = None if not name or name == ":memory:" else Path(name + ".worker.lock")
        self.worker_id = worker_id
        self._fd: int | None = None

    def acquire(self) -> None:
        if self.path is None:
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
            except ValueError:
                holder = {}
            os.close(fd)
            who = (
                f"worker {holder.get('worker')} (pid {holder.get('pid')}, started {holder.get('started')})"
                if holder
                else "another worker"
            )
            raise SecondWorkerRefused(
                f"refusing to start a second worker on the SQLite database {self.path.with_suffix('')}: "
                f"{who} is already checking it. SQLite supports one worker only: stop the other one "
                f"(or run `termpulse serve --no-worker` next to it), or move to PostgreSQL to run "
                f"several workers."
            ) from None
        info = {
            "worker": self.worker_id,
            "pid": os.getpid(),
            "started": utcnow().isoformat(timespec="seconds"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


class Worker:
    """One checking worker on the running event loop. `await start()`, `await stop()`."""

    def __init__(
        self,
        settings: Settings,
        database: Database,
        *,
        worker_id: str | None = None,
        probe_context: ProbeContext | None = None,
        sweep_interval_s: float = 1.0,
        horizon_s: float | None = None,
        write_batch: int | None = None,
        write_delay_s: float = 0.25,
        maintenance: bool = True,
        stale_every_s: float = 15.0,
        keep_lag: bool = False,
        cloud: bool = True,
        jobs: Sequence[PeriodicJob] = (),
    ):
        self.settings = settings
        self.database = database
        self.worker_id = worker_id or new_owner_id()
        self.probe_context = probe_context or ProbeContext.from_settings(settings)
        self.sweep_interval_s = sweep_interval_s
        self.maintenance = maintenance
        self.stale_every_s = stale_every_s
        self.writer = ResultWriter(
            database,
            self.worker_id,
            max_batch=write_batch or max(settings.claim_batch, 100),
            max_delay_s=write_delay_s,
        )
        self.dispatcher = Dispatcher(
            database,
            self.worker_id,
            self.writer,
            self.probe_context,
            concurrency=settings.worker_concurrency,
            claim_batch=settings.claim_batch,
            lease_s=settings.lease_s,
            horizon_s=horizon_s if horizon_s is not None else sweep_interval_s * 1.5,
            keep_lag=keep_lag,
        )
        self.scheduler: AsyncIOScheduler | None = None
        self._sqlite_lock = (
            SqliteWorkerLock(database.url, self.worker_id) if database.dialect == "sqlite" else None
        )
        self.running = False
        # One provider call per (account, store) for the cloud monitors, through the same writer.
        self.cloud_poller = CloudPoller(database, settings, writer=self.writer) if cloud else None
        self._jobs: set[asyncio.Task[None]] = set()  # scheduled jobs running now: stop() waits for them
        self._waiting_for_database: set[str] = set()  # jobs that failed to reach it (logged once)
        self.extra_jobs = list(jobs)
        self.started_at = utcnow()
        self._last_figures = (time.monotonic(), 0)

    async def start(self) -> Worker:
        if self._sqlite_lock is not None:
            self._sqlite_lock.acquire()  # raises SecondWorkerRefused
        self.writer.start()
        # A run skipped because the previous one is still going is by design (max_instances=1).
        logging.getLogger("apscheduler.scheduler").setLevel(logging.ERROR)
        logging.getLogger("apscheduler.executors.default").setLevel(logging.WARNING)
        sched = AsyncIOScheduler(timezone="UTC")
        now = utcnow()

        def every(seconds: float, job: Callable[[], Awaitable[object]], name: str, first_in_s: float) -> None:
            sched.add_job(
                self._tracked,
                "interval",
                args=[job, name],
                seconds=seconds,
                id=name,
                name=name,
                next_run_time=now + timedelta(seconds=first_in_s),
                max_instances=1,
                coalesce=True,
                misfire_grace_time=30,
            )

        every(self.sweep_interval_s, self.dispatcher.sweep, "sweep", 0)
        # Three renewals per lease: a live worker never loses one, a dead one's expire soon.
        every(self.settings.lease_s / 3, self.dispatcher.renew, "leases", self.settings.lease_s / 3)
        if self.cloud_poller is not None:
            every(1.0, self.cloud_poller.tick, "cloud", 0)
        every(BEAT_EVERY_S, self._beat, "heartbeat", 0)
        if self.maintenance:
            every(self.stale_every_s, self._mark_stale, "stale", self.stale_every_s)
            every(5, self._agent_health, "agents", 5)
            every(3600, self._purge, "retention", 60)
            every(300, self._rollups, "rollups", 20)
            every(60, self._reconcile_status, "status", 1)
            every(10, self._windows, "windows", 2)  # maintenance windows, trading hours
        for job in self.extra_jobs:
            every(job.every_s, self._injected(job), job.name, job.first_in_s)
        sched.start()
        self.scheduler = sched
        self.running = True
        log.info(
            "worker %s started (%s, concurrency %d, batch %d, lease %ss)",
            self.worker_id,
            self.database.dialect,
            self.settings.worker_concurrency,
            self.settings.claim_batch,
            self.settings.lease_s,
        )
        return self

    async def _tracked(self, job: Callable[[], Awaitable[object]], name: str) -> None:
        """Run one scheduled job; a failure is logged and the job runs again at its next time."""
        task = asyncio.current_task()
        if task is not None:
            self._jobs.add(task)
        try:
            await job()
            if name in self._waiting_for_database:
                self._waiting_for_database.discard(name)
                log.warning("%s job: the database answers again", name)
        except asyncio.CancelledError:
            # Only a stop cancels a job (the scheduler's shutdown, the loop closing): not a
            # failure, and APScheduler would log it as one, with a traceback.
            log.info("%s job cancelled: the worker is stopping", name)
        except Exception as exc:
            if not is_unreachable(exc):
                log.exception("%s job failed (it runs again at its next time)", name)
            elif name not in self._waiting_for_database:  # one line per outage, not one per run
                self._waiting_for_database.add(name)
                log.warning("%s job waits: the database cannot be reached (%s)", name, type(exc).__name__)
        finally:
            if task is not None:
                self._jobs.discard(task)

    def _injected(self, job: PeriodicJob) -> Callable[[], Awaitable[object]]:
        if job.lock_key is None:
            return job.run

        async def exclusive() -> None:
            async with self._exclusive(job.name, job.lock_key) as mine:
                if mine:
                    await job.run()

        return exclusive

    def figures(self) -> dict[str, object]:
        """What the status page shows of this worker (counted since the previous heartbeat
        where it is a rate)."""
        now = time.monotonic()
        finished = self.dispatcher.stats.finished
        previous_at, previous = self._last_figures
        self._last_figures = (now, finished)
        lags = sorted(self.dispatcher.recent_lag_s)
        writer = self.writer
        return {
            "checks_per_s": round((finished - previous) / max(now - previous_at, 1e-3), 1),
            "running": self.dispatcher.running,
            "lag_p99_ms": round(lags[int(len(lags) * 0.99)] * 1000, 1) if lags else None,
            "queued": writer.backlog,
            "lost": writer.lost,
            "dropped": writer.dropped,
            "failed_batches": writer.failed_batches,
            "database_down_s": round(now - writer.outage_since, 1)
            if writer.outage_since is not None
            else None,
            "last_error": writer.last_error,
            "concurrency": self.settings.worker_concurrency,
        }

    async def _beat(self, *, stopped: bool = False) -> None:
        figures, now = self.figures(), utcnow()
        await in_transaction(
            self.database,
            lambda session: beat(session, self.worker_id, self.started_at, figures, now, stopped=stopped),
        )

    async def _mark_stale(self) -> None:
        async with self._exclusive("stale") as mine:
            if mine:
                await in_transaction(self.database, lambda session: mark_stale(session, utcnow()))

    async def _agent_health(self) -> None:
        async with self._exclusive("agents") as mine:
            if mine:
                await in_transaction(self.database, lambda session: mark_agents_offline(session, utcnow()))

    async def _purge(self) -> None:
        async with self._exclusive("retention") as mine:
            if mine:
                cutoff = utcnow() - timedelta(days=self.settings.result_retention_days)
                deleted = await purge_results(self.database, cutoff)
                if deleted:
                    log.info("retention: %d check results older than %s deleted", deleted, cutoff)

    async def _rollups(self) -> None:
        async with self._exclusive("rollups") as mine:
            if mine:
                await rollup_pending(self.database, utcnow())

    async def _reconcile_status(self) -> None:
        async with self._exclusive("status") as mine:
            if mine:
                await in_transaction(self.database, lambda session: reconcile_status(session, utcnow()))

    async def _windows(self) -> None:
        async with self._exclusive("windows") as mine:
            if mine:
                await in_transaction(self.database, lambda session: apply_windows(session, utcnow()))

    async def run_maintenance(self, name: str) -> None:
        """Run one maintenance job now (tests and benches)."""
        jobs = {
            "stale": self._mark_stale,
            "retention": self._purge,
            "rollups": self._rollups,
            "agents": self._agent_health,
            "status": self._reconcile_status,
            "windows": self._windows,
        }
        await jobs[name]()

    @asynccontextmanager
    async def _exclusive(self, name: str, key: int | None = None) -> AsyncIterator[bool]:
        """On PostgreSQL one worker at a time runs each maintenance job: a session advisory
        lock held on its own connection for the job's duration (released by the server if
        the worker dies). SQLite has a single worker anyway."""
        if self.database.dialect != "postgresql":
            yield True
            return
        key = key if key is not None else _LOCK_KEYS[name]
        async with self.database.engine.connect() as conn:
            got = await conn.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": key})
            await conn.commit()
            try:
                yield bool(got)
            finally:
                if got:
                    await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                    await conn.commit()

    async def stop(self) -> None:
        if not self.running:
            return
        self.running = False
        if self.scheduler is not None:
            # Let the jobs that are running finish (a sweep in the middle of its claim, a poll)
            # rather than cancel them half way: APScheduler's shutdown cancels what still runs.
            self.scheduler.pause()
            if self._jobs:
                await asyncio.wait(list(self._jobs), timeout=10)
            self.scheduler.shutdown(wait=False)
            self.scheduler = None
        await self.dispatcher.stop()
        if self.cloud_poller is not None:
            await self.cloud_poller.close()
        await self.writer.close()
        with contextlib.suppress(Exception):  # the status page then says "stopped", not "silent"
            await self._beat(stopped=True)
        try:
            released = await release_leases(self.database, self.worker_id)
            if released:
                log.info("released %d leases of checks not started", released)
        except Exception:
            log.exception("could not release leases (they expire by themselves)")
        if self._sqlite_lock is not None:
            self._sqlite_lock.release()
        log.info("worker %s stopped", self.worker_id)


class _NoWorker:
    async def stop(self) -> None:
        return None


async def start_embedded_worker(
    settings: Settings, database: Database, *, jobs: Sequence[PeriodicJob] = ()
) -> Worker | _NoWorker:
    """The worker inside `termpulse serve`; on SQLite with a worker already running, the
    pages are served without one (said in the log). `jobs`: periodic jobs of the layers
    above (alerts), run beside the checks."""
    try:
        return await Worker(settings, database, jobs=jobs).start()
    except SecondWorkerRefused as exc:
        log.error("%s The dashboard runs without an embedded worker.", exc)
        return _NoWorker()


JobsFor = Callable[[Settings, Database], Sequence[PeriodicJob]]


def run_worker(settings: Settings, jobs: JobsFor | None = None) -> int:
    """`termpulse worker`: run until SIGINT/SIGTERM. 0 on a clean stop, 1 when refused.
    `jobs`: the periodic jobs of the layers above (alerts), made for this worker's database."""
    return uvloop.run(_worker_main(settings, jobs))


async def _worker_main(settings: Settings, jobs: JobsFor | None = None) -> int:
    # No ping before each transaction (a round trip, ~3 % of a saturated worker's CPU): what
    # a worker does either retries (the writer, under the one retry rule) or runs again at
    # its next time (claims, jobs), so a connection the server dropped costs one attempt.
    database = Database(settings.database_url, pool_pre_ping=False)
    raise_fd_limit()  # a socket per check in flight
    worker = Worker(settings, database, jobs=jobs(settings, database) if jobs else ())
    try:
        await worker.start()
    except SecondWorkerRefused as exc:
        log.error("%s", exc)
        await database.dispose()
        return 1
    tune_gc()
    try:
        await until_terminated()
    finally:
        await worker.stop()
        await database.dispose()
    return 0
