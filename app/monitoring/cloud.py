"""Cloud polls: one provider call per (account, store) updates every terminal of the store.

Cloud monitors (kind "cloud", target = POIID) are not run by the per-monitor sweep; this
poller owns them. Every second (`tick`, an APScheduler job) it

1. claims the stores that have a due cloud monitor, and leases *all* the cloud monitors of
   those stores (PostgreSQL: FOR UPDATE SKIP LOCKED, so several workers share the fleet);
2. makes one call per (account, store) -- Adyen connectedDevices (or the legacy
   connectedTerminals), Stripe readers of the location -- under the account's token bucket;
3. hands the store's outcomes to the worker's `ResultWriter` (the same writer and state
   machine as the scheduled checks), each carrying the store's next due time on its own
   phase within the interval, so polls are spread evenly and calls per sweep == number of
   stores.

Provider failures never make a terminal down: 401/403 -> provider_auth_rejected, 429 ->
provider_rate_limited (the account pauses until Retry-After), 5xx/timeouts ->
provider_unavailable after retries; each is an "error" outcome (state unknown), and the
account's `last_error` shows it to admins.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import func as sa_func
from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.checks.result import Step, step
from app.config import Settings
from app.db import Database, in_transaction, utcnow
from app.inventory.models import Monitor, Store, Terminal
from app.monitoring.metrics import count_check, count_poll
from app.monitoring.models import StateChange
from app.monitoring.status import refresh_status
from app.monitoring.writer import CheckOutcome, ResultWriter, new_owner_id
from app.providers.adapters import Adapter, make_adapter
from app.providers.crypto import KeyUnavailable, decrypt_api_key
from app.providers.hosts import ProviderHosts
from app.providers.http import ProviderError, ProviderHTTP, TokenBucket
from app.providers.models import ProviderAccount
from app.schedule import first_due_at, phase_ms
from app.vocabulary import CloudState, MonitorKind, Outcome, State

log = logging.getLogger(__name__)

LEASE_S = 180  # longer than a call with its retries and backoff
AUTH_PAUSE_MIN_S = 60.0


@dataclass
class _Account:
    """An account as the poller uses it: a snapshot, its clear key in memory only, its budget."""

    snapshot: ProviderAccount
    version: tuple[Any, ...]
    adapter: Adapter | None
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
    due_at: datetime
    poiid: str
    serial: str
    provider: str
    provider_terminal_id: str | None
    account_id: int | None
    store_ref: str | None


@dataclass
class PollStats:
    calls: Counter[str] = field(default_factory=Counter)  # provider calls actually sent, per kind
    stores_polled: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)


class CloudPoller:
    """Polls the providers for the cloud monitors, a store at a time.

    In a worker it shares the worker's `ResultWriter` (and so its lease owner); alone
    (tests, benches, `poll_due_stores`) it runs a writer of its own.
    """

    def __init__(
        self,
        database: Database,
        settings: Settings,
        *,
        writer: ResultWriter | None = None,
        client: httpx.AsyncClient | None = None,
        concurrency: int = 200,
        claim_stores: int = 500,
        retries: int = 2,
        backoff_s: float = 0.5,
        timeout_s: float = 10.0,
    ):
        self.database = database
        self.settings = settings
        self._own_writer = writer is None
        self.writer = writer or ResultWriter(database, f"cloud:{new_owner_id()}", max_delay_s=0.02)
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
        self._inflight: set[asyncio.Task[None]] = set()
        self._sem = asyncio.Semaphore(concurrency)
        self._tick_lock = asyncio.Lock()
        self.stats = PollStats()

    @property
    def owner(self) -> str:
        return self.writer.lease_owner

    # ---- scheduling ---------------------------------------------------------------------
    async def tick(self, cutoff: datetime | None = None) -> int:
        """Claim the due stores and start polling them; returns how many stores were started."""
        if self._tick_lock.locked():
            return 0
        async with self._tick_lock:
            room = self.concurrency * 2 - len(self._inflight)
            if room <= 0:
                return 0
            if self._own_writer:
                self.writer.start()
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
        """Wait for the polls in flight and for their results to be written."""
        while self._inflight:
            await asyncio.gather(*list(self._inflight), return_exceptions=True)
        await self.writer.flush()

    async def sweep(self) -> int:
        """Poll every store with a cloud monitor due now, then return (tests, bench)."""
        started, cutoff = 0, utcnow()
        while True:
            n = await self.tick(cutoff)
            started += n
            if n == 0 and not self._inflight:
                await self.writer.flush()
                return started
            if n == 0:
                await asyncio.wait(list(self._inflight), return_when=asyncio.FIRST_COMPLETED)

    async def close(self) -> None:
        await self.drain()
        if self._own_writer:
            await self.writer.close()
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
        seen: set[int] = set()
        defaults: dict[str, int] = {}
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

    def _runtime(self, acc: ProviderAccount, version: tuple[Any, ...], previous: _Account | None) -> _Account:
        bucket = previous.bucket if previous else TokenBucket(acc.requests_per_second)
        bucket.reconfigure(acc.requests_per_second)
        http = ProviderHTTP(
            self.client,
            bucket,
            retries=self.retries,
            backoff_s=self.backoff_s,
            timeout_s=self.timeout_s,
            counter=self._count,
            hosts=ProviderHosts.from_settings(self.settings),
        )
        adapter: Adapter | None = None
        key_error: str | None = None
        try:
            adapter = make_adapter(
                acc, decrypt_api_key(self.settings.secret_key, acc.api_key_encrypted), http
            )
        except (KeyUnavailable, ValueError) as exc:
            key_error = str(exc)
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
        has_cloud = select(Monitor.terminal_id).where(
            Monitor.kind == MonitorKind.CLOUD, Monitor.enabled.is_(True)
        )

        async def work(session: AsyncSession) -> None:
            ids = (
                (
                    await session.execute(
                        select(Terminal.id).where(
                            Terminal.cloud_state != CloudState.NOT_ENABLED, Terminal.id.not_in(has_cloud)
                        )
                    )
                )
                .scalars()
                .all()
            )
            if ids:
                await refresh_status(session, utcnow(), terminal_ids=ids)

        await in_transaction(self.database, work)

    # ---- claiming -----------------------------------------------------------------------
    async def _claim(self, now: datetime, max_stores: int, cutoff: datetime | None = None) -> list[_Row]:
        free = or_(Monitor.lease_expires_at.is_(None), Monitor.lease_expires_at < now)
        cloud = (Monitor.kind == MonitorKind.CLOUD, Monitor.enabled.is_(True))
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
                ids = ids.with_for_update(skip_locked=True, key_share=True)  # as the sweep claims
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
                        Monitor.next_due_at,
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
                    ref = {"adyen": r.adyen_store_id, "stripe": r.stripe_location_id}.get(kind)
                    rows.append(
                        _Row(
                            r.id,
                            r.store_id,
                            r.terminal_id,
                            r.next_due_at,
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
        except Exception:  # a poller bug must not kill the job; the lease expires
            log.exception("cloud poll failed", extra={"store_id": store_id, "account_id": account_id})

    async def _poll_group_inner(self, account_id: int | None, store_id: int, rows: list[_Row]) -> None:
        acc = self._accounts.get(account_id) if account_id is not None else None
        interval = int(acc.snapshot.poll_interval_s) if acc else self.settings.check_interval_s
        if (
            acc is not None
            and acc.paused_until > time.monotonic()
            and acc.pause_code == "provider_rate_limited"
        ):
            # Honour Retry-After: no call; the store is due again when the pause ends.
            await self._reschedule(rows, utcnow() + timedelta(seconds=acc.paused_until - time.monotonic()))
            return
        started = time.perf_counter()
        results, error_text = await self._ask(acc, rows, interval)
        failed = results[0] if results and all(r[0] == Outcome.ERROR for r in results) else None
        count_poll(rows[0].provider, (failed[1] or "error") if failed else None)
        ms = (time.perf_counter() - started) * 1000
        # The store's own phase within the interval spreads the polls evenly; "no sooner than
        # half an interval" keeps the first move onto that phase from polling a store twice.
        phase = phase_ms(f"cloud:{store_id}", interval)
        next_due = first_due_at(utcnow() + timedelta(seconds=interval / 2), interval, phase)
        checked = utcnow()
        self.stats.stores_polled += 1
        for r, (outcome, code, detail, seen_at) in zip(rows, results, strict=True):
            steps: list[Step] = [step("provider API", outcome == Outcome.OK, ms, detail)]
            self.stats.outcomes[code or outcome] += 1
            count_check(MonitorKind.CLOUD, outcome, code)
            self.writer.submit(
                CheckOutcome(
                    r.monitor_id,
                    outcome,
                    checked,
                    ms,
                    steps,
                    code,
                    detail,
                    due_at=r.due_at,
                    next_due_at=next_due,
                    seen_at=seen_at,
                )
            )
        if acc is not None and error_text != acc.last_error_written:
            await self._record_account_error(acc, error_text)

    async def _ask(
        self, acc: _Account | None, rows: list[_Row], interval: int
    ) -> tuple[list[tuple[Outcome, str | None, str, datetime | None]], str | None]:
        """The provider's answer for each row (outcome, diagnosis, detail, its last seen), and
        the account's error text to show admins (None clears it)."""

        def every(code: str, detail: str) -> list[tuple[Outcome, str | None, str, datetime | None]]:
            return [(Outcome.ERROR, code, detail, None)] * len(rows)

        if acc is None:
            return every(
                "provider_unavailable",
                f"no {rows[0].provider} provider account is configured: add one under Providers",
            ), None
        if acc.adapter is None:
            return every("provider_auth_rejected", f"{acc.snapshot.name}: {acc.key_error}"), acc.key_error
        if acc.paused_until > time.monotonic():  # credentials rejected: don't hammer the provider
            return every(acc.pause_code or "provider_auth_rejected", acc.pause_detail), acc.last_error_written
        store_ref = rows[0].store_ref
        try:
            poll = await acc.adapter.poll_store(store_ref)
        except ProviderError as exc:
            self.stats.errors[exc.code] += 1
            detail = exc.detail
            if exc.code == "provider_rate_limited":
                acc.paused_until = time.monotonic() + (exc.retry_after or 0)
                detail = f"{exc.detail}; retrying after {exc.retry_after or 0:g} s"
            elif exc.code == "provider_auth_rejected":
                acc.paused_until = time.monotonic() + max(float(interval), AUTH_PAUSE_MIN_S)
            acc.pause_code, acc.pause_detail = exc.code, detail
            return every(exc.code, detail), f"{utcnow():%Y-%m-%d %H:%M:%S} UTC: {detail}"
        acc.pause_code = None
        kind = acc.snapshot.kind
        where = f"store {store_ref}" if store_ref else "all stores"
        never_up: set[int] = set()
        if not poll.devices and poll.empty_means_unknown:
            never_up = await self._never_up([r.monitor_id for r in rows])
        answers: list[tuple[Outcome, str | None, str, datetime | None]] = []
        for r in rows:
            state = poll.lookup(r.provider_terminal_id, r.poiid, r.serial)
            seen_at = state.last_seen_at if state is not None else None
            if state is not None and state.connected:
                answers.append((Outcome.OK, None, f"connected to {kind} ({where})", seen_at))
            elif state is not None:
                answers.append(
                    (
                        Outcome.FAIL,
                        "cloud_disconnected",
                        f"{kind} reports the terminal offline ({where})",
                        seen_at,
                    )
                )
            elif r.monitor_id in never_up:
                detail = (
                    f"no terminal of {where} is connected and this one never was: "
                    "its cloud connection (WebSockets) is probably not enabled"
                )
                answers.append((Outcome.FAIL, "cloud_not_enabled", detail, None))
            elif poll.empty_means_unknown:
                detail = f"not among the terminals connected to {kind} ({where})"
                answers.append((Outcome.FAIL, "cloud_disconnected", detail, None))
            else:
                detail = f"not found among the {kind} readers of {where}"
                answers.append((Outcome.FAIL, "cloud_disconnected", detail, None))
        return answers, None

    async def _never_up(self, monitor_ids: list[int]) -> set[int]:
        async with self.database.sessionmaker() as session:
            seen_up = set(
                (
                    await session.execute(
                        select(StateChange.monitor_id)
                        .where(StateChange.monitor_id.in_(monitor_ids), StateChange.to_state == State.UP)
                        .distinct()
                    )
                ).scalars()
            )
        return set(monitor_ids) - seen_up

    async def _record_account_error(self, acc: _Account, error_text: str | None) -> None:
        """The account's last error, for admins (written only when it changes)."""

        async def work(session: AsyncSession) -> None:
            await session.execute(
                update(ProviderAccount)
                .where(ProviderAccount.id == acc.snapshot.id)
                .values(
                    last_error=error_text[:500] if error_text else None, updated_at=ProviderAccount.updated_at
                )
                .execution_options(synchronize_session=False)
            )

        await in_transaction(self.database, work)
        acc.last_error_written = error_text

    async def _reschedule(self, rows: list[_Row], when: datetime) -> None:
        async def work(session: AsyncSession) -> None:
            await session.execute(
                update(Monitor)
                .where(Monitor.id.in_([r.monitor_id for r in rows]), Monitor.lease_owner == self.owner)
                .values(next_due_at=when, lease_owner=None, lease_expires_at=None)
                .execution_options(synchronize_session=False)
            )

        await in_transaction(self.database, work)


async def poll_due_stores(database: Database, settings: Settings) -> int:
    """One-shot entry point (a fresh poller): poll every due store, then return."""
    poller = CloudPoller(database, settings)
    try:
        return await poller.sweep()
    finally:
        await poller.close()
