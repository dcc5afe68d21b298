"""The cloud poller: one provider call per (account, store) updates every terminal of the store.

Cloud monitors (kind "cloud", target = POIID) are not run by the per-monitor sweep; this
poller owns them. Every second (`tick`, an APScheduler job) it

1. claims the stores that have a due cloud monitor, and leases *all* the cloud monitors of
   those stores (PostgreSQL: FOR UPDATE SKIP LOCKED, so several workers share the fleet);
2. makes one call per (account, store) -- Adyen connectedDevices (or the legacy
   connectedTerminals), Stripe readers of the location -- under the account's token bucket;
3. writes the store's outcomes in one transaction through the monitoring engine's
   `apply_outcomes` (state machine, results, state changes, derived status) and sets the
   store's next due time on its own phase within the interval, so polls are spread evenly
   and calls per sweep == number of stores.

Provider failures never make a terminal down: 401/403 -> provider_auth_rejected, 429 ->
provider_rate_limited (the account pauses until Retry-After), 5xx/timeouts ->
provider_unavailable after retries; each is an "error" outcome (state unknown), and the
account's `last_error` shows it to admins.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import httpx
from sqlalchemy import bindparam, or_, select, update
from sqlalchemy import func as sa_func

from app.config import Settings
from app.db import Database, utcnow
from app.inventory.models import Monitor, Store, Terminal
from app.inventory.monitors import first_due_at, phase_ms
from app.monitoring.models import StateChange
from app.providers.adyen import AdyenAdapter
from app.providers.crypto import KeyUnavailable, decrypt_api_key
from app.providers.http import ProviderError, ProviderHTTP, TokenBucket
from app.providers.models import ProviderAccount
from app.providers.stripe import StripeAdapter

log = logging.getLogger(__name__)

LEASE_S = 180  # longer than a call with its retries and backoff
AUTH_PAUSE_MIN_S = 60.0


def make_adapter(account, api_key: str, http: ProviderHTTP):
    if account.kind == "adyen":
        return AdyenAdapter(account, api_key, http)
    if account.kind == "stripe":
        return StripeAdapter(account, api_key, http)
    raise ValueError(f"no adapter for provider kind {account.kind!r}")


@dataclass
class _Account:
    """An account as the poller uses it: a snapshot, its clear key in memory only, its budget."""

    snapshot: object
    version: object
    adapter: object | None
    bucket: TokenBucket
    key_error: str | None = None
    paused_until: float = 0.0  # monotonic
    pause_code: str | None = None
    pause_detail: str = ""
    last_error_written: str | None = None


@dataclass
class _Row:
    monitor_id: int
    store_id: int
    terminal_id: int
    poiid: str
    serial: str
    provider: str
    provider_terminal_id: str | None
    account_id: int | None
    store_ref: str | None


@dataclass
class _Done:
    """A polled store waiting to be written."""

    acc: object
    outcomes: list
    monitor_ids: list[int]
    next_due: datetime
    extra_seen: dict
    error_text: str | None
    future: asyncio.Future | None = None


@dataclass
class PollStats:
    calls: Counter = field(default_factory=Counter)  # provider calls actually sent, per kind
    stores_polled: int = 0
    outcomes: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)


class CloudPoller:
    def __init__(
        self,
        database: Database,
        settings: Settings,
        *,
        client: httpx.AsyncClient | None = None,
        owner: str | None = None,
        concurrency: int = 200,
        claim_stores: int = 500,
        retries: int = 2,
        backoff_s: float = 0.5,
        timeout_s: float = 10.0,
    ):
        self.database = database
        self.settings = settings
        self.owner = owner or f"cloud:{socket.gethostname()}:{os.getpid()}:{id(self) & 0xFFFF:x}"
        self._own_client = client is None
        self.client = client or httpx.AsyncClient(
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
            headers={"User-Agent": "TermPulse cloud poller"},
        )
        self.concurrency = concurrency
        self.claim_stores = claim_stores
        self.retries, self.backoff_s, self.timeout_s = retries, backoff_s, timeout_s
        self._accounts: dict[int, _Account] = {}
        self._defaults: dict[str, int] = {}
        self._accounts_loaded = 0.0
        self._housekept = 0.0
        self._pending: list[_Done] = []
        self._wake = asyncio.Event()
        self._writer_task: asyncio.Task | None = None
        self._inflight: set[asyncio.Task] = set()
        self._sem = asyncio.Semaphore(concurrency)
        # SQLite has one writer: queue the stores' transactions instead of fighting for the lock.
        self._write_sem = asyncio.Semaphore(1 if database.dialect == "sqlite" else 10)
        self._tick_lock = asyncio.Lock()
        self.stats = PollStats()

    # ---- scheduling ---------------------------------------------------------------------
    def register(self, scheduler, *, seconds: float = 1.0) -> None:
        """Add the poll job to an APScheduler 3 AsyncIOScheduler (runs in its event loop)."""
        scheduler.add_job(
            self.tick,
            "interval",
            seconds=seconds,
            id="cloud-poller",
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,
            replace_existing=True,
        )

    async def tick(self, cutoff: datetime | None = None) -> int:
        """Claim the due stores and start polling them; returns how many stores were started."""
        if self._tick_lock.locked():
            return 0
        async with self._tick_lock:
            room = self.concurrency * 2 - len(self._inflight)
            if room <= 0:
                return 0
            await self._load_accounts()
            await self._housekeeping()
            claimed = await self._claim(utcnow(), min(room, self.claim_stores), cutoff)
            groups: dict[tuple[int | None, int], list[_Row]] = defaultdict(list)
            for row in claimed:
                groups[(row.account_id, row.store_id)].append(row)
            for (account_id, store_id), rows in groups.items():
                task = asyncio.create_task(self._poll_group(account_id, store_id, rows))
                self._inflight.add(task)
                task.add_done_callback(self._inflight.discard)
            return len(groups)

    async def drain(self) -> None:
        """Wait for the polls in flight."""
        while self._inflight:
            await asyncio.gather(*list(self._inflight), return_exceptions=True)

    async def sweep(self) -> int:
        """Poll every store with a cloud monitor due now, then return (tests, bench)."""
        started, cutoff = 0, utcnow()
        while True:
            n = await self.tick(cutoff)
            started += n
            if n == 0 and not self._inflight:
                return started
            if n == 0:
                await asyncio.wait(list(self._inflight), return_when=asyncio.FIRST_COMPLETED)

    async def close(self) -> None:
        await self.drain()
        if self._own_client:
            await self.client.aclose()

    # ---- accounts -----------------------------------------------------------------------
    async def _load_accounts(self, force: bool = False) -> None:
        if not force and time.monotonic() - self._accounts_loaded < 5:
            return
        async with self.database.sessionmaker() as session:
            accounts = (
                (await session.execute(select(ProviderAccount).order_by(ProviderAccount.id))).scalars().all()
            )
        seen, defaults = set(), {}
        for acc in accounts:
            seen.add(acc.id)
            defaults.setdefault(acc.kind, acc.id)
            version = (acc.updated_at, acc.api_key_hint, bytes(acc.api_key_encrypted or b""))
            current = self._accounts.get(acc.id)
            if current is not None and current.version == version:
                current.snapshot = acc
                current.bucket.reconfigure(acc.requests_per_second)
                continue
            self._accounts[acc.id] = self._runtime(acc, version, current)
        for gone in set(self._accounts) - seen:
            del self._accounts[gone]
        self._defaults = defaults
        self._accounts_loaded = time.monotonic()

    def _runtime(self, acc, version, previous: _Account | None) -> _Account:
        bucket = previous.bucket if previous else TokenBucket(acc.requests_per_second)
        bucket.reconfigure(acc.requests_per_second)
        http = ProviderHTTP(
            self.client,
            bucket,
            retries=self.retries,
            backoff_s=self.backoff_s,
            timeout_s=self.timeout_s,
            counter=self._count,
        )
        try:
            key = decrypt_api_key(self.settings.secret_key, acc.api_key_encrypted)
            adapter, key_error = make_adapter(acc, key, http), None
        except (KeyUnavailable, ValueError) as exc:
            adapter, key_error = None, str(exc)
        # A changed account (new key, new URL) starts afresh: no pause carried over.
        return _Account(acc, version, adapter, bucket, key_error=key_error, last_error_written=acc.last_error)

    def _count(self, what: str) -> None:
        self.stats.calls[what] += 1
        self.stats.calls["total"] += 1

    def account_for(self, provider: str, account_id: int | None) -> int | None:
        """The terminal's own account, else the first account of its provider."""
        if account_id is not None and account_id in self._accounts:
            return account_id
        return self._defaults.get(provider)

    async def _housekeeping(self, every_s: float = 30.0) -> None:
        """Terminals without a cloud monitor show the minus sign (cloud_state not_enabled)."""
        if time.monotonic() - self._housekept < every_s:
            return
        self._housekept = time.monotonic()
        from app.monitoring.status import refresh_status

        has_cloud = select(Monitor.terminal_id).where(Monitor.kind == "cloud", Monitor.enabled.is_(True))
        async with self._write_sem, self.database.sessionmaker() as session:
            ids = (
                (
                    await session.execute(
                        select(Terminal.id).where(
                            Terminal.cloud_state != "not_enabled", Terminal.id.not_in(has_cloud)
                        )
                    )
                )
                .scalars()
                .all()
            )
            if ids:
                await refresh_status(session, utcnow(), terminal_ids=ids)
                await session.commit()

    # ---- claiming -----------------------------------------------------------------------
    async def _claim(self, now: datetime, max_stores: int, cutoff: datetime | None = None) -> list[_Row]:
        free = or_(Monitor.lease_expires_at.is_(None), Monitor.lease_expires_at < now)
        cloud = (Monitor.kind == "cloud", Monitor.enabled.is_(True))
        async with self.database.sessionmaker() as session:
            stores = (
                (
                    await session.execute(
                        select(Monitor.store_id)
                        .where(*cloud, Monitor.next_due_at <= (cutoff or now), free)
                        .group_by(Monitor.store_id)
                        .order_by(sa_func.min(Monitor.next_due_at))
                        .limit(max_stores)
                    )
                )
                .scalars()
                .all()
            )
            if not stores:
                return []
            ids = select(Monitor.id).where(*cloud, Monitor.store_id.in_(stores), free)
            if self.database.dialect == "postgresql":
                ids = ids.with_for_update(skip_locked=True)
            leased = (
                (
                    await session.execute(
                        update(Monitor)
                        .where(Monitor.id.in_(ids.scalar_subquery()))
                        .values(lease_owner=self.owner, lease_expires_at=now + timedelta(seconds=LEASE_S))
                        .returning(Monitor.id)
                        .execution_options(synchronize_session=False)
                    )
                )
                .scalars()
                .all()
            )
            await session.commit()
            rows = []
            for i in range(0, len(leased), 5000):
                chunk = leased[i : i + 5000]
                result = await session.execute(
                    select(
                        Monitor.id,
                        Monitor.store_id,
                        Monitor.terminal_id,
                        Terminal.poiid,
                        Terminal.serial,
                        Terminal.provider,
                        Terminal.provider_terminal_id,
                        Terminal.provider_account_id,
                        Store.adyen_store_id,
                        Store.stripe_location_id,
                    )
                    .join(Terminal, Terminal.id == Monitor.terminal_id)
                    .join(Store, Store.id == Monitor.store_id)
                    .where(Monitor.id.in_(chunk))
                )
                for r in result:
                    account_id = self.account_for(r.provider, r.provider_account_id)
                    kind = self._accounts[account_id].snapshot.kind if account_id else r.provider
                    ref = (
                        r.adyen_store_id
                        if kind == "adyen"
                        else r.stripe_location_id
                        if kind == "stripe"
                        else None
                    )
                    rows.append(
                        _Row(
                            r.id,
                            r.store_id,
                            r.terminal_id,
                            r.poiid,
                            r.serial or "",
                            r.provider,
                            r.provider_terminal_id,
                            account_id,
                            ref,
                        )
                    )
            return rows

    # ---- one (account, store) -----------------------------------------------------------
    async def _poll_group(self, account_id: int | None, store_id: int, rows: list[_Row]) -> None:
        try:
            async with self._sem:
                await self._poll_group_inner(account_id, store_id, rows)
        except Exception:
            log.exception("cloud poll failed", extra={"store_id": store_id, "account_id": account_id})

    async def _poll_group_inner(self, account_id: int | None, store_id: int, rows: list[_Row]) -> None:
        from app.monitoring.writer import Outcome

        acc = self._accounts.get(account_id) if account_id is not None else None
        store_ref = rows[0].store_ref
        interval = int(acc.snapshot.poll_interval_s) if acc else self.settings.check_interval_s
        now_mono = time.monotonic()
        extra_seen: dict[int, datetime] = {}
        started = time.perf_counter()
        outcomes: list[Outcome] = []

        def every(outcome: str, code: str, detail: str, ms: float | None = None) -> None:
            checked = utcnow()
            step = [
                {"step": "provider API", "ok": outcome == "ok", "ms": round(ms or 0.0, 3), "detail": detail}
            ]
            for r in rows:
                outcomes.append(Outcome(r.monitor_id, outcome, checked, ms, step, code, detail))

        error_text = None  # for the account's last_error: None clears it
        if acc is None:
            provider = rows[0].provider
            every(
                "error",
                "provider_unavailable",
                f"no {provider} provider account is configured: add one under Providers",
            )
        elif acc.adapter is None:
            every("error", "provider_auth_rejected", f"{acc.snapshot.name}: {acc.key_error}")
            error_text = acc.key_error
        elif acc.paused_until > now_mono and acc.pause_code == "provider_rate_limited":
            # Honour Retry-After: no call; the store is due again when the pause ends.
            await self._reschedule(rows, utcnow() + timedelta(seconds=acc.paused_until - now_mono))
            return
        elif acc.paused_until > now_mono:  # credentials rejected: don't hammer the provider with them
            every("error", acc.pause_code, acc.pause_detail)
            error_text = acc.last_error_written
        else:
            try:
                poll = await acc.adapter.poll_store(store_ref)
            except ProviderError as exc:
                ms = (time.perf_counter() - started) * 1000
                self.stats.errors[exc.code] += 1
                detail = exc.detail
                if exc.code == "provider_rate_limited":
                    acc.paused_until = time.monotonic() + (exc.retry_after or 0)
                    detail = f"{exc.detail}; retrying after {exc.retry_after:g} s"
                elif exc.code == "provider_auth_rejected":
                    acc.paused_until = time.monotonic() + max(float(interval), AUTH_PAUSE_MIN_S)
                acc.pause_code, acc.pause_detail = exc.code, detail
                every("error", exc.code, detail, ms)
                error_text = f"{utcnow():%Y-%m-%d %H:%M:%S} UTC: {detail}"
            else:
                ms = (time.perf_counter() - started) * 1000
                checked = utcnow()
                where = f"store {store_ref}" if store_ref else "all stores"
                never_up = set()
                if not poll.devices and poll.empty_means_unknown:
                    never_up = await self._never_up([r.monitor_id for r in rows])
                for r in rows:
                    state = poll.lookup(r.provider_terminal_id, r.poiid, r.serial)
                    if state is not None and state.connected:
                        outcome, code, detail = "ok", None, f"connected to {acc.snapshot.kind} ({where})"
                    elif state is not None:
                        outcome, code = "fail", "cloud_disconnected"
                        detail = f"{acc.snapshot.kind} reports the terminal offline ({where})"
                    elif r.monitor_id in never_up:
                        outcome, code = "fail", "cloud_not_enabled"
                        detail = (
                            f"no terminal of {where} is connected and this one never was: "
                            "its cloud connection (WebSockets) is probably not enabled"
                        )
                    elif poll.empty_means_unknown:
                        outcome, code = "fail", "cloud_disconnected"
                        detail = f"not among the terminals connected to {acc.snapshot.kind} ({where})"
                    else:
                        outcome, code = "fail", "cloud_disconnected"
                        detail = f"not found among the {acc.snapshot.kind} readers of {where}"
                    if state is not None and state.last_seen_at is not None:
                        extra_seen[r.terminal_id] = state.last_seen_at
                    step = [
                        {"step": "provider API", "ok": outcome == "ok", "ms": round(ms, 3), "detail": detail}
                    ]
                    outcomes.append(Outcome(r.monitor_id, outcome, checked, ms, step, code, detail))
                acc.pause_code = None
        self.stats.stores_polled += 1
        for o in outcomes:
            self.stats.outcomes[o.diagnosis or o.outcome] += 1
        # The store's own phase within the interval spreads the polls evenly; "no sooner than
        # half an interval" keeps the first move onto that phase from polling a store twice.
        phase = phase_ms(f"cloud:{store_id}", interval)
        next_due = first_due_at(utcnow() + timedelta(seconds=interval / 2), interval, phase)
        await self._submit(
            _Done(acc, outcomes, [r.monitor_id for r in rows], next_due, extra_seen, error_text)
        )

    async def _never_up(self, monitor_ids: list[int]) -> set[int]:
        async with self.database.sessionmaker() as session:
            seen_up = set(
                (
                    await session.execute(
                        select(StateChange.monitor_id)
                        .where(StateChange.monitor_id.in_(monitor_ids), StateChange.to_state == "up")
                        .distinct()
                    )
                ).scalars()
            )
        return set(monitor_ids) - seen_up

    async def _submit(self, done: _Done) -> None:
        """Queue a store's outcomes for the writer and wait until they are committed."""
        done.future = asyncio.get_running_loop().create_future()
        self._pending.append(done)
        self._wake.set()
        if self._writer_task is None or self._writer_task.done():
            self._writer_task = asyncio.create_task(self._writer())
        await done.future

    async def _writer(self) -> None:
        """Several stores per transaction (each store's terminals always together): far fewer
        commits than one per store when thousands of polls finish within seconds."""
        while self._pending:
            await asyncio.sleep(0.02)  # let a few more polls finish
            batch, size = [], 0
            while self._pending and size < 5000:
                done = self._pending.pop(0)
                batch.append(done)
                size += len(done.monitor_ids)
            try:
                await self._write_batch(batch)
            except Exception as exc:
                log.exception("could not write the cloud results of %d stores", len(batch))
                for done in batch:
                    if not done.future.done():
                        done.future.set_exception(exc)
            else:
                for done in batch:
                    if not done.future.done():
                        done.future.set_result(None)

    async def _write_batch(self, batch: list[_Done]) -> None:
        from app.monitoring.writer import apply_outcomes

        mt, tt = Monitor.__table__, Terminal.__table__
        outcomes = [o for d in batch for o in d.outcomes]
        due_rows = sorted(
            ({"b_id": mid, "due": d.next_due} for d in batch for mid in d.monitor_ids),
            key=lambda r: r["b_id"],
        )
        seen = {}
        for d in batch:
            seen.update(d.extra_seen)
        errors = {}
        for d in batch:
            if d.acc is not None and d.error_text != d.acc.last_error_written:
                errors[d.acc.snapshot.id] = (d.acc, d.error_text)
        for attempt in range(5):
            try:
                async with self._write_sem, self.database.sessionmaker() as session:
                    await apply_outcomes(session, outcomes)
                    await session.execute(
                        update(mt)
                        .where(mt.c.id == bindparam("b_id"), mt.c.lease_owner == self.owner)
                        .values(next_due_at=bindparam("due"), lease_owner=None, lease_expires_at=None)
                        .execution_options(synchronize_session=False),
                        due_rows,
                    )
                    if seen:  # Stripe's own last_seen_at wins over "seen by us"
                        await session.execute(
                            update(tt)
                            .where(tt.c.id == bindparam("b_id"))
                            .values(last_seen_at=bindparam("seen"), updated_at=tt.c.updated_at)
                            .execution_options(synchronize_session=False),
                            [{"b_id": k, "seen": v} for k, v in sorted(seen.items())],
                        )
                    for account_id, (_acc, text_) in sorted(errors.items()):
                        await session.execute(
                            update(ProviderAccount)
                            .where(ProviderAccount.id == account_id)
                            .values(
                                last_error=text_[:500] if text_ else None,
                                updated_at=ProviderAccount.updated_at,
                            )
                            .execution_options(synchronize_session=False)
                        )
                    await session.commit()
                for acc, text_ in errors.values():
                    acc.last_error_written = text_
                return
            except Exception as exc:
                if attempt < 4 and ("database is locked" in str(exc) or "deadlock" in str(exc).lower()):
                    await asyncio.sleep(0.05 * 2**attempt)
                    continue
                raise

    async def _reschedule(self, rows: list[_Row], when: datetime) -> None:
        async with self._write_sem, self.database.sessionmaker() as session:
            await session.execute(
                update(Monitor)
                .where(Monitor.id.in_([r.monitor_id for r in rows]), Monitor.lease_owner == self.owner)
                .values(next_due_at=when, lease_owner=None, lease_expires_at=None)
                .execution_options(synchronize_session=False)
            )
            await session.commit()


async def poll_due_stores(database: Database, settings: Settings) -> int:
    """One-shot entry point (a fresh poller): poll every due store, then return."""
    poller = CloudPoller(database, settings)
    try:
        return await poller.sweep()
    finally:
        await poller.close()
