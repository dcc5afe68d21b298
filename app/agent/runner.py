"""The agent's loops: `Agent(...).start()` ... `stop()`.

Four tasks share one event loop, one HTTP client (`client.AgentAPI`) and one queue
(`buffer.Buffer`):

* **control**: GET /config at start (with If-None-Match), then POST /heartbeat every
  `heartbeat_s` (from the config); a heartbeat's `last_seq` acknowledges queued results, a
  `config_etag` unlike ours fetches the config again. A new config applies at once: new
  monitors start at their next due time, removed ones stop, changed ones run with the new
  parameters (on their new phase if interval or phase changed).
* **checks**: one small task per monitor sleeps until its due time (its `phase_ms` within
  `interval_s`, app.schedule.first_due_at), runs the probe under the concurrency semaphore
  and queues the result with its due and check times; the next due time is due + interval,
  or the next slot on its phase if the run was that late (app.schedule.next_due_at).
* **upload**: POST /results in batches (oldest first, up to `upload_batch` results and
  `upload_max_bytes`), continuously while there is a backlog, lingering a moment when there
  is only a little; a network error or a 5xx backs off (capped, jittered) and checks go on.
* **work**: a long poll GET /work?wait=25; a 200 runs the listed monitors at once (each with
  its timeout, outside the semaphore) and POSTs their results to /work/{id}. They are
  manual checks: not queued, no seq.

The config last received is kept in the queue: an agent restarted while the server is down
starts checking with it. `stop()` stops starting checks, lets running ones finish (briefly),
flushes what it can within `flush_s` and leaves the rest in the queue for the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from app import __version__
from app.agent.buffer import MAX_AGE_S, MAX_COUNT, Buffer
from app.agent.client import AgentAPI, AgentAPIError, RateLimited, Refused, Rejected, Unreachable
from app.checks.context import ProbeContext
from app.checks.probes import PROBES, run_probe
from app.checks.result import ProbeResult
from app.schedule import first_due_at, next_due_at

log = logging.getLogger(__name__)

# What the server takes per result (app.monitoring.agents: AgentResult, AgentAnswer).
MAX_STEPS = 50
MAX_DETAIL = 2000
MAX_CONTEXT = 30


def utcnow() -> datetime:
    return datetime.now(UTC)


def _etag_value(etag: str | None) -> str | None:
    """An ETag compared by its value: W/ and quotes aside (a header and a JSON field may differ)."""
    if not etag:
        return None
    etag = etag.strip()
    etag = etag.removeprefix("W/")
    return etag.strip('"') or None


# --- the config


@dataclass(frozen=True, slots=True)
class MonitorConfig:
    id: int
    kind: str
    target: str
    params: dict[str, Any]
    interval_s: int
    timeout_s: float
    phase_ms: int

    @classmethod
    def from_json(cls, m: dict[str, Any]) -> MonitorConfig:
        interval = int(m["interval_s"])
        if interval <= 0:
            raise ValueError(f"interval_s {interval}")
        return cls(
            id=int(m["id"]),
            kind=str(m["kind"]),
            target=str(m["target"]),
            params=dict(m.get("params") or {}),
            interval_s=interval,
            timeout_s=float(m["timeout_s"]),
            phase_ms=int(m.get("phase_ms") or 0) % (interval * 1000),
        )


@dataclass(frozen=True)
class AgentConfig:
    agent_id: Any
    name: str
    stores: list[str]
    heartbeat_s: float
    monitors: dict[int, MonitorConfig]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AgentConfig:
        monitors: dict[int, MonitorConfig] = {}
        for raw in data.get("monitors") or []:
            try:
                m = MonitorConfig.from_json(raw)
            except (KeyError, TypeError, ValueError) as exc:
                log.error(
                    "config: a monitor cannot be read (%s: %s), skipped: %r", type(exc).__name__, exc, raw
                )
                continue
            if m.kind not in PROBES:
                log.warning(
                    "config: monitor %s is of kind %r, which an agent does not run: skipped", m.id, m.kind
                )
                continue
            monitors[m.id] = m
        agent = data.get("agent") or {}
        heartbeat = float(data.get("heartbeat_s") or 15)
        return cls(
            agent_id=agent.get("id"),
            name=str(agent.get("name") or ""),
            stores=[str(s) for s in data.get("stores") or []],
            heartbeat_s=max(heartbeat, 0.2),
            monitors=monitors,
        )


@dataclass
class AgentOptions:
    """Tuning; the defaults are the production ones (tests shorten the waits)."""

    concurrency: int = 50
    upload_batch: int = 500
    upload_max_bytes: int = 512 * 1024  # the server takes up to 1 MiB
    upload_linger_s: float = 1.0  # gather a few results before posting a small backlog
    backoff_base_s: float = 1.0
    backoff_cap_s: float = 60.0
    auth_retry_s: float = 60.0  # after a 401/403: a revoked token must not spin
    work_wait_s: int = 25  # the long poll's wait
    stop_grace_s: float = 5.0  # running checks may finish this long after stop()
    flush_s: float = 5.0  # then uploading what is queued may take this long
    max_age_s: float = MAX_AGE_S
    max_count: int = MAX_COUNT
    http_timeout_s: float = 15.0


@dataclass(eq=False)
class _Slot:
    """One monitor's place in the schedule."""

    spec: MonitorConfig
    due: datetime
    task: asyncio.Task[None] | None = None
    busy: bool = False  # running its check or queueing the result: not cancelled by a change
    rephased: bool = False  # interval or phase changed while busy: next due on the new phase
    removed: bool = False


@dataclass
class AgentStats:
    checks: int = 0
    queued: int = 0
    uploaded: int = 0  # results the server acknowledged in answer to our POSTs
    batches: int = 0
    heartbeats: int = 0
    configs: int = 0  # configs received (200)
    work_items: int = 0
    late_starts: list[float] = field(default_factory=list)  # start minus due (s), last 1000


class Agent:
    """The store agent, in process: `await agent.start()`, later `await agent.stop()`."""

    def __init__(
        self,
        base_url: str,
        token: str,
        state_dir: Path | str,
        *,
        probe_context: ProbeContext,
        verify: ssl.SSLContext | bool = True,
        options: AgentOptions | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ):
        self.options = options or AgentOptions()
        self.probe_context = probe_context
        self.buffer = Buffer(
            Path(state_dir), max_age_s=self.options.max_age_s, max_count=self.options.max_count
        )
        self.api = AgentAPI(
            base_url,
            token,
            verify=verify,
            auth_retry_s=self.options.auth_retry_s,
            timeout_s=self.options.http_timeout_s,
            transport=transport,
        )
        self.config: AgentConfig | None = None
        self.etag: str | None = None
        self.stats = AgentStats()
        self.skew_ms: float | None = None
        self._config_stale = True
        self._slots: dict[int, _Slot] = {}
        self._semaphore = asyncio.Semaphore(self.options.concurrency)
        self._upload_wake = asyncio.Event()  # results queued, or the link is back
        self._answered = asyncio.Event()  # replaced at every heartbeat answered (a broadcast)
        self._config_lock = asyncio.Lock()
        self._config_applied = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._slot_tasks: set[asyncio.Task[None]] = set()
        self._work_tasks: set[asyncio.Task[None]] = set()
        self._batch_limit = self.options.upload_batch
        self._started = False
        self._stopping = False

    # --- lifecycle

    async def start(self) -> None:
        """Open the queue, start with the saved config if there is one, start the loops."""
        await self.buffer.open()
        self._started = True
        log.info(
            "agent %s starting: instance %s, %d results queued, %d dropped so far",
            __version__,
            self.buffer.instance,
            self.buffer.pending,
            self.buffer.dropped,
        )
        saved = await self.buffer.load_config()
        if saved is not None:
            data, etag = saved
            self._apply(AgentConfig.from_json(data), etag, source="saved")
        for name, loop in (
            ("control", self._control_loop),
            ("upload", self._upload_loop),
            ("work", self._work_loop),
        ):
            self._tasks.append(asyncio.create_task(self._guard(name, loop), name=f"agent-{name}"))
        if self.buffer.pending:
            self._upload_wake.set()

    async def stop(self) -> None:
        """Stop checking, flush what can be flushed within flush_s, keep the rest queued."""
        if not self._started or self._stopping:
            return
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        for task in self._work_tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._work_tasks, return_exceptions=True)
        # Sleeping monitors stop now; running checks may finish (and queue) within the grace.
        for slot in self._slots.values():
            if slot.task is not None and not slot.busy:
                slot.task.cancel()
        running = list(self._slot_tasks)
        if running:
            _, late = await asyncio.wait(running, timeout=self.options.stop_grace_s)
            for task in late:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
        sent = 0
        if self.buffer.pending and self.api.gate_s() < self.options.flush_s:
            try:
                async with asyncio.timeout(self.options.flush_s):
                    while self.buffer.pending:
                        acked = await self._upload_once()
                        if not acked:
                            break
                        sent += acked
            except (TimeoutError, AgentAPIError) as exc:
                log.info("stopping: %s", exc if isinstance(exc, AgentAPIError) else "flush took too long")
        log.info("agent stopped: %d results sent while stopping, %d kept queued", sent, self.buffer.pending)
        await self.api.aclose()
        await self.buffer.close()

    async def wait_configured(self) -> None:
        """Until a config (saved or fetched) is applied."""
        await self._config_applied.wait()

    async def _guard(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        """Run a loop for the life of the agent: a bug in one pass must not end it."""
        while not self._stopping:
            try:
                await loop()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("agent %s loop failed; restarting it in 5 s", name)
                await asyncio.sleep(5)

    def _backoff(self, failures: int) -> float:
        o = self.options
        ceiling = min(o.backoff_cap_s, o.backoff_base_s * 2 ** min(failures - 1, 20))
        return ceiling * random.uniform(0.5, 1.0)

    async def _back_off(self, failures: int) -> None:
        """Wait the backoff for this many failures in a row, or until a heartbeat is answered
        (the server is back: no need to wait out a long backoff)."""
        answered = self._answered
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._backoff(failures)):
                await answered.wait()

    def _heard_from_server(self) -> None:
        self._answered.set()
        self._answered = asyncio.Event()
        if self.buffer.pending:
            self._upload_wake.set()

    @property
    def monitor_ids(self) -> set[int]:
        return set(self._slots)

    # --- config and heartbeats

    async def _control_loop(self) -> None:
        failures = 0
        while not self._stopping:
            delay: float | None = None  # a heartbeat interval (read after a config fetch)
            try:
                fetched = False
                if self._config_stale or self.config is None:
                    await self.fetch_config()
                    fetched = True
                if await self._heartbeat():
                    if not fetched:
                        continue  # the config changed: fetch it now
                    # Just fetched, yet the heartbeat names another ETag: it changed again in
                    # between (fetched at the next pass), or the server spells it differently.
                    log.debug("config ETag %s, heartbeat says another: fetching next time", self.etag)
                failures = 0
                self._heard_from_server()  # the link is up: replay now
            except Unreachable:
                failures += 1
                delay = min(self._backoff(failures), self._heartbeat_s())
            except (RateLimited, Refused):
                pass  # the gate holds the next call (401, 429); a 403 waits a heartbeat
            except (Rejected, ValueError, KeyError, TypeError) as exc:
                log.error("config or heartbeat refused: %s", exc)
            await asyncio.sleep(self._heartbeat_s() if delay is None else delay)

    def _heartbeat_s(self) -> float:
        return self.config.heartbeat_s if self.config else 15.0

    async def fetch_config(self) -> bool:
        """GET /config; returns True when a new config was applied."""
        async with self._config_lock:  # the control loop, on-demand work and a 403 may all ask
            return await self._fetch_config()

    async def _fetch_config(self) -> bool:
        headers = {"If-None-Match": self.etag} if self.etag and self.config is not None else None
        response = await self.api.request("GET", "/config", headers=headers)
        if response.status_code == 304:
            self._config_stale = False
            return False
        data = response.json()
        config = AgentConfig.from_json(data)
        etag = response.headers.get("ETag")
        await self.buffer.save_config(data, etag)
        self.stats.configs += 1
        self._apply(config, etag, source="server")
        self._config_stale = False
        return True

    async def _heartbeat(self) -> bool:
        """POST /heartbeat; True when the server's config differs from ours."""
        body = {
            "version": __version__,
            "instance": self.buffer.instance,
            "clock": utcnow().isoformat(),
            "queue": self.buffer.pending,
            "dropped": self.buffer.dropped,
        }
        answer = (await self.api.request("POST", "/heartbeat", json=body)).json()
        self.stats.heartbeats += 1
        last_seq = answer.get("last_seq")
        if last_seq is not None:
            await self.buffer.ack(int(last_seq))
        skew = answer.get("skew_ms")
        if skew is not None:
            if abs(float(skew)) > 5000 and (self.skew_ms is None or abs(self.skew_ms) <= 5000):
                log.warning(
                    "this machine's clock is %.1f s off the server's: the server corrects result "
                    "times, but please set up NTP",
                    float(skew) / 1000,
                )
            self.skew_ms = float(skew)
        server_etag = _etag_value(answer.get("config_etag"))
        if server_etag is not None and server_etag != _etag_value(self.etag):
            self._config_stale = True
            return True
        return False

    def _apply(self, config: AgentConfig, etag: str | None, *, source: str) -> None:
        now = utcnow()
        added = changed = 0
        for mid, spec in config.monitors.items():
            slot = self._slots.get(mid)
            if slot is None:
                slot = _Slot(spec, first_due_at(now, spec.interval_s, spec.phase_ms))
                self._slots[mid] = slot
                self._launch(slot)
                added += 1
            elif slot.spec != spec:
                changed += 1
                old, slot.spec = slot.spec, spec
                if (old.interval_s, old.phase_ms) != (spec.interval_s, spec.phase_ms):
                    if slot.busy:
                        slot.rephased = True
                    else:
                        slot.due = first_due_at(now, spec.interval_s, spec.phase_ms)
                        self._relaunch(slot)
        removed = [mid for mid in self._slots if mid not in config.monitors]
        for mid in removed:
            slot = self._slots.pop(mid)
            slot.removed = True
            if slot.task is not None and not slot.busy:
                slot.task.cancel()
        self.config, self.etag = config, etag
        self._config_applied.set()
        log.info(
            "config (%s) applied: agent %r, stores %s, %d monitors (%d new, %d changed, %d removed), "
            "heartbeat every %g s",
            source,
            config.name,
            ", ".join(config.stores) or "none",
            len(config.monitors),
            added,
            changed,
            len(removed),
            config.heartbeat_s,
        )

    # --- scheduled checks

    def _launch(self, slot: _Slot) -> None:
        if self._stopping:
            return
        task = asyncio.create_task(self._run_slot(slot), name=f"agent-monitor-{slot.spec.id}")
        slot.task = task
        self._slot_tasks.add(task)
        task.add_done_callback(self._slot_tasks.discard)

    def _relaunch(self, slot: _Slot) -> None:
        if slot.task is not None:
            slot.task.cancel()
        self._launch(slot)

    async def _run_slot(self, slot: _Slot) -> None:
        while not self._stopping and not slot.removed:
            # Sleep until due, re-checked after waking: the loop's timers may fire a hair early
            # (never start before due), and the wall clock may have been stepped meanwhile.
            while (wait := (slot.due - (now := utcnow())).total_seconds()) > 0:
                if wait > slot.spec.interval_s + 1:
                    # The clock went back (NTP fixing a clock that was ahead): onto the phase
                    # from the new now, rather than sleeping the step away.
                    slot.due = first_due_at(now, slot.spec.interval_s, slot.spec.phase_ms)
                    continue
                await asyncio.sleep(wait)
            slot.busy = True
            try:
                async with self._semaphore:
                    if self._stopping or slot.removed:
                        return
                    spec, due = slot.spec, slot.due
                    checked_at = utcnow()
                    self._note_lateness((checked_at - due).total_seconds())
                    result = await self._probe(spec)
                self.stats.checks += 1
                if not slot.removed:
                    await self._queue(spec, due, checked_at, result)
            finally:
                slot.busy = False
            now = utcnow()
            current = slot.spec
            if slot.rephased:
                slot.rephased = False
                slot.due = first_due_at(now + timedelta(milliseconds=1), current.interval_s, current.phase_ms)
            else:
                slot.due = next_due_at(due, current.interval_s, current.phase_ms, now)

    def _note_lateness(self, late_s: float) -> None:
        late = self.stats.late_starts
        late.append(late_s)
        if len(late) > 1000:
            del late[:500]

    async def _probe(self, spec: MonitorConfig) -> ProbeResult:
        try:
            return await run_probe(spec.kind, spec.target, spec.params, spec.timeout_s, self.probe_context)
        except Exception as exc:  # the probe contract says it never raises; be safe anyway
            log.exception("check of monitor %s (%s %s) failed", spec.id, spec.kind, spec.target)
            return ProbeResult.failed("internal_error", f"{type(exc).__name__}: {exc}", [])

    @staticmethod
    def _result_json(
        monitor_id: int, result: ProbeResult, checked_at: datetime, due: datetime | None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"monitor_id": monitor_id}
        if due is not None:
            body["due_at"] = due.isoformat()
        body.update(
            checked_at=checked_at.isoformat(),
            outcome=str(result.outcome),
            latency_ms=round(result.latency_ms, 3),
            # Within what the server takes (one oversized result would hold its batch back).
            steps=result.steps[:MAX_STEPS],
            diagnosis=result.diagnosis,
            detail=result.detail[:MAX_DETAIL] if result.detail else result.detail,
        )
        return body

    @staticmethod
    def _context_json(result: ProbeResult) -> dict[str, str]:
        """The words that fill the diagnosis texts (host, address, timeout ...), as strings."""
        items = list(result.context.items())[:MAX_CONTEXT]
        return {str(k): str(v)[:MAX_DETAIL] for k, v in items if v is not None}

    async def _queue(
        self, spec: MonitorConfig, due: datetime, checked_at: datetime, result: ProbeResult
    ) -> None:
        await self.buffer.add([self._result_json(spec.id, result, checked_at, due)])
        self.stats.queued += 1
        self._upload_wake.set()

    # --- upload

    async def _upload_loop(self) -> None:
        failures = 0
        while not self._stopping:
            await self._upload_wake.wait()
            self._upload_wake.clear()
            if 0 < self.buffer.pending < self.options.upload_batch and failures == 0:
                await asyncio.sleep(self.options.upload_linger_s)
            while self.buffer.pending and not self._stopping:
                try:
                    await self._upload_once()
                    failures = 0
                except Unreachable:
                    failures += 1
                    await self._back_off(failures)  # new results do not cut it short
                except RateLimited:
                    pass  # the gate waits for Retry-After
                except Refused as exc:
                    if exc.status == 403 and await self._drop_foreign():
                        continue
                    await asyncio.sleep(self.options.auth_retry_s if exc.status == 403 else 0)
                except Rejected as exc:
                    await self._rejected(exc)

    async def _upload_once(self) -> int:
        """Send the oldest batch; returns how many results the server acknowledged."""
        rows = await self.buffer.batch(self._batch_limit, self.options.upload_max_bytes)
        if not rows:
            return 0
        body = (
            f'{{"instance":{json.dumps(self.buffer.instance)},"results":['
            + ",".join(r.json for r in rows)
            + "]}"
        ).encode()
        response = await self.api.request(
            "POST", "/results", content=body, headers={"Content-Type": "application/json"}
        )
        answer = response.json()
        last_seq = int(answer["last_seq"])
        before = self.buffer.pending
        await self.buffer.ack(last_seq)
        acked = before - self.buffer.pending
        self.stats.batches += 1
        self.stats.uploaded += acked
        if self._batch_limit < self.options.upload_batch:
            self._batch_limit = min(self.options.upload_batch, self._batch_limit * 2)
        if last_seq < rows[0].seq:
            # The server answered but kept nothing of the batch: do not resend it in a loop.
            raise Unreachable(
                "POST /results", response.status_code, f"not acknowledged (last_seq {last_seq})"
            )
        return acked

    async def _drop_foreign(self) -> int:
        """After a 403 on /results: drop queued results of monitors no longer ours (the store
        moved to another agent or back to the central workers while we were offline)."""
        try:
            await self.fetch_config()
        except AgentAPIError as exc:
            log.warning("403 on results and the config cannot be fetched: %s", exc)
            return 0
        return await self.buffer.drop_monitors_except(
            self._slots, "their monitors are no longer this agent's (HTTP 403)"
        )

    async def _rejected(self, exc: Rejected) -> None:
        """A 4xx other than 401/403/429 for a batch (413 too big, 400/422 unreadable): halve
        the batch until the culprit is alone, then drop it, so one bad result cannot hold
        the queue back."""
        if self._batch_limit > 1:
            self._batch_limit = max(1, self._batch_limit // 2)
            log.warning("results batch refused (%s): retrying with %d at a time", exc.text, self._batch_limit)
            return
        rows = await self.buffer.batch(1, self.options.upload_max_bytes)
        if rows:
            log.error("the server refuses result seq %d (%s): dropping it", rows[0].seq, exc.text)
            await self.buffer.drop([rows[0].seq], f"refused by the server ({exc.text})")

    # --- on-demand checks

    async def _work_loop(self) -> None:
        failures = 0
        wait = self.options.work_wait_s
        while not self._stopping:
            try:
                response = await self.api.request(
                    "GET", "/work", params={"wait": wait}, call_timeout_s=wait + self.options.http_timeout_s
                )
                failures = 0
                if response.status_code == 200:
                    item = response.json()
                    task = asyncio.create_task(self._do_work(item), name="agent-work")
                    self._work_tasks.add(task)
                    task.add_done_callback(self._work_tasks.discard)
            except Unreachable:
                failures += 1
                await self._back_off(failures)
            except RateLimited:
                pass
            except (Refused, Rejected):
                await asyncio.sleep(self.options.auth_retry_s)
            except (ValueError, TypeError) as exc:
                log.error("unreadable work item: %s", exc)

    async def _do_work(self, item: dict[str, Any]) -> None:
        try:
            work_id = item["id"]
            ids = [int(i) for i in item.get("monitor_ids") or []]
        except (KeyError, TypeError, ValueError, AttributeError):
            log.error("unreadable work item from the server: %.200r", item)
            return
        self.stats.work_items += 1
        if any(i not in self._slots for i in ids):
            with contextlib.suppress(AgentAPIError, ValueError):
                await self.fetch_config()  # a monitor we do not know yet: our config may be behind
        results = await asyncio.gather(*(self._check_now(i) for i in ids))
        path = f"/work/{quote(str(work_id), safe='')}"
        for attempt in range(1, 4):
            try:
                await self.api.request("POST", path, json={"results": results})
                return
            except Unreachable:
                await self._back_off(attempt)
            except AgentAPIError as exc:
                log.warning("on-demand check %s: results refused: %s", work_id, exc)
                return
        log.warning("on-demand check %s: results could not be sent", work_id)

    async def _check_now(self, monitor_id: int) -> dict[str, Any]:
        slot = self._slots.get(monitor_id)
        checked_at = utcnow()
        if slot is None:
            result = ProbeResult.failed(
                "internal_error", f"monitor {monitor_id} is not in this agent's configuration", []
            )
        else:
            result = await self._probe(slot.spec)
        # An answer is shown at once (Check connection): it carries the diagnosis words too.
        return {
            **self._result_json(monitor_id, result, checked_at, None),
            "context": self._context_json(result),
        }
