"""Check one terminal now: `termpulse check POIID`, Check connection, the check API.

    report = await check_terminal_now(database, settings, "Move5000-203097992")
    report.verdict      # Verdict.CONNECTED | DISCONNECTED | COULD_NOT_CHECK | NOT_MONITORED
    report.checks       # one MonitorCheck per monitor: steps with timings, diagnosis
    report.diagnosis    # the first failure's cause and fix (None when connected)

Every monitor of the terminal (LAN tcp / paynt_epos / tls, cloud) and of its store's
network (DNS and TCP to the processor) runs at once, each with its own timeout. The cloud
monitor asks the provider now; when no provider account covers the terminal it reports the
last poll instead. The results are stored as manual results through the same writer and
state machine as the scheduled ones, so the dashboard's state follows what the agent saw.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy import or_, select

from app.checks.context import ProbeContext
from app.checks.diagnoses import explain
from app.checks.probes import run_probe
from app.checks.result import ProbeResult, Step, step
from app.config import Settings
from app.db import Database, utcnow
from app.errors import NotFound
from app.inventory.models import Agent, Monitor, Store, Terminal
from app.monitoring.agents import AgentAnswer, AgentBroker, to_server_clock
from app.monitoring.writer import CheckOutcome, write_outcomes
from app.poiid import normalise_poiid
from app.providers.check import cloud_status_now
from app.providers.hosts import ProviderHosts
from app.providers.models import ProviderAccount
from app.vocabulary import AgentState, CloudState, MonitorKind, Outcome, State, StoreStatus, Verdict


@dataclass
class DiagnosisText:
    code: str
    title: str
    cause: str
    fix: str
    ours: bool


@dataclass
class MonitorCheck:
    monitor_id: int
    kind: MonitorKind
    target: str
    scope: str  # "terminal" or "store network"
    outcome: Outcome
    latency_ms: float | None
    steps: list[Step]
    detail: str
    diagnosis: DiagnosisText | None
    state: State  # the monitor's state after this result
    live: bool = True  # False for a cloud monitor reported from the last provider poll
    checked_at: datetime | None = None


@dataclass
class TerminalCheckReport:
    """What a check of one terminal found: the JSON answer of the check API as well."""

    poiid: str
    terminal_id: int
    store_code: str
    verdict: Verdict
    headline: str  # the verdict in words: "Terminal is connected" ...
    checked_at: datetime
    duration_ms: float
    checks: list[MonitorCheck] = field(default_factory=list)
    diagnosis: DiagnosisText | None = None  # the first failure (or our error) to act on
    status: State = State.UNKNOWN  # the terminal's derived status after the check
    cloud_state: CloudState = CloudState.UNKNOWN

    @property
    def connected(self) -> bool:
        return self.verdict == Verdict.CONNECTED

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON types, as the API answers (`termpulse check --json`)."""
        return _REPORT_JSON.dump_python(self, mode="json")


_REPORT_JSON = TypeAdapter(TerminalCheckReport)


def _diagnosis(code: str | None, context: dict[str, Any], target: str) -> DiagnosisText | None:
    if not code:
        return None
    d = explain(code, **{"target": target, **context})
    return DiagnosisText(d.code, d.title, d.cause, d.fix, d.ours)


async def check_terminal_now(
    database: Database,
    settings: Settings,
    poiid: str,
    *,
    probe_context: ProbeContext | None = None,
    persist: bool = True,
    broker: AgentBroker | None = None,
) -> TerminalCheckReport:
    """Run every monitor of the terminal now; raises NotFound for an unknown POIID.

    Monitors that run on a store agent are handed to it through `broker` (the web process's);
    without one (the CLI), or with the agent offline, they are reported as not checked."""
    ctx = probe_context or ProbeContext.from_settings(settings)
    terminal, store_code, monitors, account, agents = await _load(database, normalise_poiid(poiid), poiid)
    started, checked_at = time.perf_counter(), utcnow()
    runs = await _run_now(settings, ctx, broker, monitors, agents, {terminal.id: (terminal, account)})
    duration_ms = (time.perf_counter() - started) * 1000
    states = await _write(database, monitors, runs) if persist else {}
    async with database.sessionmaker() as session:
        status, cloud_state = (
            await session.execute(
                select(Terminal.status, Terminal.cloud_state).where(Terminal.id == terminal.id)
            )
        ).one()
    return _terminal_report(
        terminal, store_code, monitors, runs, states, checked_at, duration_ms, status, cloud_state
    )


Runs = dict[int, tuple[datetime, ProbeResult | None]]


STORE_CHECK_CONCURRENCY = 32  # probes of one Check store run at once (each under its own timeout)

NETWORK_HEADLINES = {
    Verdict.CONNECTED: "The store's network reaches every destination",
    Verdict.DISCONNECTED: "The store's network cannot reach a destination",
    Verdict.COULD_NOT_CHECK: "Could not check the store's network",
    Verdict.NOT_MONITORED: "No network checks (the store has no network profile)",
}


@dataclass
class StoreCheckReport:
    """Check store: the store's network first, then each terminal's verdict, cause and fix
    (the JSON answer of the store check API as well). Each terminal's verdict counts its
    store's network as Check connection does; its `checks` are its own only (the network's
    are listed once, in `network`), and its diagnosis is its own first failure, else the one
    that made its verdict (the network's)."""

    store_code: str
    store_name: str
    checked_at: datetime
    duration_ms: float
    network_verdict: Verdict
    network_headline: str
    network: list[MonitorCheck] = field(default_factory=list)
    network_diagnosis: DiagnosisText | None = None
    terminals: list[TerminalCheckReport] = field(default_factory=list)
    status: StoreStatus = StoreStatus.UNKNOWN  # the store's status after the check (can it take cards?)

    @property
    def counts(self) -> dict[Verdict, int]:
        """How many terminals got each verdict."""
        counts: dict[Verdict, int] = {}
        for t in self.terminals:
            counts[t.verdict] = counts.get(t.verdict, 0) + 1
        return counts

    @property
    def all_connected(self) -> bool:
        return self.network_verdict in (Verdict.CONNECTED, Verdict.NOT_MONITORED) and all(
            t.verdict in (Verdict.CONNECTED, Verdict.NOT_MONITORED) for t in self.terminals
        )

    def as_dict(self) -> dict[str, Any]:
        return _STORE_REPORT_JSON.dump_python(self, mode="json")


_STORE_REPORT_JSON = TypeAdapter(StoreCheckReport)


async def check_store_now(
    database: Database,
    settings: Settings,
    code: str,
    *,
    probe_context: ProbeContext | None = None,
    persist: bool = True,
    broker: AgentBroker | None = None,
    concurrency: int = STORE_CHECK_CONCURRENCY,
) -> StoreCheckReport:
    """Run every network and terminal check of the store now, at once (at most `concurrency`
    probes at a time; a store agent's in one request), store them as manual results, and
    answer one report. Raises NotFound for an unknown store code."""
    ctx = probe_context or ProbeContext.from_settings(settings)
    store, terminals, monitors, agents = await _load_store(database, code)
    started, checked_at = time.perf_counter(), utcnow()
    runs = await _run_now(settings, ctx, broker, monitors, agents, terminals, concurrency)
    duration_ms = (time.perf_counter() - started) * 1000
    states = await _write(database, monitors, runs) if persist else {}
    async with database.sessionmaker() as session:
        store_status = await session.scalar(select(Store.status).where(Store.id == store.id))
        after = {
            row.id: (row.status, row.cloud_state)
            for row in await session.execute(
                select(Terminal.id, Terminal.status, Terminal.cloud_state).where(
                    Terminal.store_id == store.id
                )
            )
        }
    network = [m for m in monitors if m.terminal_id is None]
    network_checks = _checks(network, runs, states, checked_at)
    network_verdict = (
        Verdict.of([c.outcome for c in network_checks]) if network_checks else Verdict.NOT_MONITORED
    )
    first_bad = next((c for c in network_checks if c.outcome == Outcome.FAIL), None) or next(
        (c for c in network_checks if c.outcome == Outcome.ERROR), None
    )
    reports = []
    for terminal, _ in sorted(terminals.values(), key=lambda pair: pair[0].poiid):
        own = [m for m in monitors if m.terminal_id == terminal.id]
        status, cloud_state = after.get(terminal.id, (terminal.status, terminal.cloud_state))
        report = _terminal_report(
            terminal, store.code, network + own, runs, states, checked_at, duration_ms, status, cloud_state
        )
        report.checks = [c for c in report.checks if c.scope == "terminal"]
        own_bad = next((c for c in report.checks if c.outcome == Outcome.FAIL), None) or next(
            (c for c in report.checks if c.outcome == Outcome.ERROR), None
        )
        if own_bad is not None and own_bad.diagnosis is not None:
            report.diagnosis = own_bad.diagnosis  # its own fault first: the network's is said once, above
        reports.append(report)
    return StoreCheckReport(
        store_code=store.code,
        store_name=store.name,
        checked_at=checked_at,
        duration_ms=round(duration_ms, 3),
        network_verdict=network_verdict,
        network_headline=NETWORK_HEADLINES[network_verdict],
        network=network_checks,
        network_diagnosis=first_bad.diagnosis if first_bad else None,
        terminals=reports,
        status=StoreStatus(store_status or StoreStatus.UNKNOWN),
    )


async def _load_store(
    database: Database, code: str
) -> tuple[Store, dict[int, tuple[Terminal, ProviderAccount | None]], list[Monitor], dict[int, Agent]]:
    """The store, its terminals (each with the provider account that covers it), every enabled
    monitor of the store and its terminals (network first, then by kind), and its agents."""
    async with database.sessionmaker() as session:
        store = await session.scalar(select(Store).where(Store.code == code.strip()))
        if store is None:
            store = await session.scalar(select(Store).where(Store.code == code.strip().upper()))
        if store is None:
            raise NotFound("store", repr(code))
        rows = list(await session.scalars(select(Terminal).where(Terminal.store_id == store.id)))
        monitors = list(
            await session.scalars(
                select(Monitor).where(Monitor.enabled.is_(True), Monitor.store_id == store.id)
            )
        )
        cloud = {m.terminal_id for m in monitors if m.kind == MonitorKind.CLOUD}
        accounts: list[ProviderAccount] = []
        if cloud:
            accounts = list(await session.scalars(select(ProviderAccount).order_by(ProviderAccount.id)))
        agent_ids = {m.agent_id for m in monitors if m.agent_id is not None}
        agents = {
            a.id: a for a in (await session.scalars(select(Agent).where(Agent.id.in_(agent_ids)))).all()
        }

    def account_of(t: Terminal) -> ProviderAccount | None:
        if t.id not in cloud:
            return None
        if t.provider_account_id is not None:
            return next((a for a in accounts if a.id == t.provider_account_id), None)
        return next((a for a in accounts if a.kind == t.provider), None)

    terminals = {t.id: (t, account_of(t)) for t in rows}
    known = set(terminals)
    ordered = sorted(
        (m for m in monitors if m.terminal_id is None or m.terminal_id in known),
        key=lambda m: (m.terminal_id is not None, MonitorKind(m.kind).order, m.id),
    )
    return store, terminals, ordered, agents


async def _run_now(
    settings: Settings,
    ctx: ProbeContext,
    broker: AgentBroker | None,
    monitors: list[Monitor],
    agents: dict[int, Agent],
    terminals: dict[int, tuple[Terminal, ProviderAccount | None]],
    concurrency: int | None = None,
) -> Runs:
    """Every monitor run now, at once: ours here (at most `concurrency` at a time when given),
    a store agent's handed to it in one request. A cloud monitor without a provider account
    has no result (None: the caller reports the last poll)."""
    limit = asyncio.Semaphore(concurrency) if concurrency else None

    async def probe(m: Monitor) -> tuple[datetime, ProbeResult | None]:
        at = utcnow()
        if m.kind != MonitorKind.CLOUD:
            return at, await run_probe(m.kind, m.target, m.params or {}, m.timeout_s, ctx)
        terminal, account = terminals.get(m.terminal_id or 0, (None, None))
        if terminal is None or account is None:  # no account covers it: the caller reports the last poll
            return at, None
        reader = terminal.provider_terminal_id or f"tmr_{terminal.serial}"
        return at, await cloud_status_now(
            settings.secret_key, account, terminal.poiid, reader, hosts=ProviderHosts.from_settings(settings)
        )

    async def one(m: Monitor) -> tuple[datetime, ProbeResult | None]:
        if limit is None:
            return await probe(m)
        async with limit:
            return await probe(m)

    async def central() -> Runs:
        ours = [m for m in monitors if m.agent_id is None]
        return dict(zip([m.id for m in ours], await asyncio.gather(*(one(m) for m in ours)), strict=True))

    groups = [
        _via_agent(broker, agents[agent_id], [m for m in monitors if m.agent_id == agent_id])
        for agent_id in sorted(agents)
    ]
    by_id: Runs = {}
    for part in await asyncio.gather(central(), *groups):
        by_id.update(part)
    return by_id


async def _write(database: Database, monitors: list[Monitor], runs: Runs) -> dict[int, State]:
    """The results, stored as manual results (the one writer); each monitor's state after."""
    outcomes = [
        CheckOutcome.of(m.id, result, at, manual=True)
        for m in monitors
        for at, result in [runs[m.id]]
        if result is not None
    ]
    if not outcomes:
        return {}
    return (await write_outcomes(database, outcomes)).states


def _checks(
    monitors: list[Monitor], runs: Runs, states: dict[int, State], checked_at: datetime
) -> list[MonitorCheck]:
    return [
        _monitor_check(m, at, result, states.get(m.id))
        if result is not None
        else _cloud_from_last_poll(m, checked_at)
        for m in monitors
        for at, result in [runs[m.id]]
    ]


def _terminal_report(
    terminal: Terminal,
    store_code: str,
    monitors: list[Monitor],
    runs: Runs,
    states: dict[int, State],
    checked_at: datetime,
    duration_ms: float,
    status: str,
    cloud_state: str,
) -> TerminalCheckReport:
    """The verdict on one terminal from its monitors' runs and its store network's (ordered
    network first)."""
    checks = _checks(monitors, runs, states, checked_at)
    verdict = Verdict.of([c.outcome for c in checks])
    first_bad = next((c for c in checks if c.outcome == Outcome.FAIL), None) or next(
        (c for c in checks if c.outcome == Outcome.ERROR), None
    )
    diagnosis = first_bad.diagnosis if first_bad else None
    if checks and not any(m.terminal_id is not None for m in monitors):
        # Only its store's network was checked: that says nothing about the terminal itself.
        verdict = Verdict.NOT_MONITORED
        if diagnosis is None:
            diagnosis = DiagnosisText(
                "not_monitored",
                "Terminal not monitored",
                f"The terminal {terminal.poiid} has no LAN address and no enabled cloud connection, so "
                "TermPulse cannot reach it nor ask a provider about it; only its store's network was "
                "checked (it reaches the payment processor).",
                "Ask the store to try a card payment on it. To monitor it, add its LAN address or enable "
                "its cloud connection in the inventory.",
                True,
            )
    if not checks:
        diagnosis = DiagnosisText(
            "no_monitors",
            "Nothing to check",
            f"The terminal {terminal.poiid} has no LAN address, no enabled cloud connection and its store "
            "no network profile, so TermPulse has nothing to check.",
            "Add the terminal's LAN address or enable its cloud connection in the inventory.",
            True,
        )
    return TerminalCheckReport(
        poiid=terminal.poiid,
        terminal_id=terminal.id,
        store_code=store_code,
        verdict=verdict,
        headline=verdict.headline,
        checked_at=checked_at,
        duration_ms=round(duration_ms, 3),
        checks=checks,
        diagnosis=diagnosis,
        status=State(status),
        cloud_state=CloudState(cloud_state),
    )


async def _load(
    database: Database, key: str, asked: str
) -> tuple[Terminal, str, list[Monitor], ProviderAccount | None, dict[int, Agent]]:
    """The terminal, its store's code, its monitors and its store network's (DNS -> TCP ->
    TLS -> HTTP -> provider API order, the terminal's after the network's), and the provider
    account that covers it (its own, else the first of its provider), and the store agents
    that run some of them."""
    async with database.sessionmaker() as session:
        row = (
            await session.execute(
                select(Terminal, Store.code)
                .join(Store, Store.id == Terminal.store_id)
                .where(Terminal.poiid == key)
            )
        ).first()
        if row is None:
            raise NotFound("terminal with POIID", repr(asked))
        terminal, store_code = row
        monitors = (
            (
                await session.execute(
                    select(Monitor).where(
                        Monitor.enabled.is_(True),
                        or_(
                            Monitor.terminal_id == terminal.id,
                            (Monitor.store_id == terminal.store_id) & Monitor.terminal_id.is_(None),
                        ),
                    )
                )
            )
            .scalars()
            .all()
        )
        account = None
        if any(m.kind == MonitorKind.CLOUD for m in monitors):
            query = select(ProviderAccount).where(ProviderAccount.kind == terminal.provider)
            if terminal.provider_account_id is not None:
                query = select(ProviderAccount).where(ProviderAccount.id == terminal.provider_account_id)
            account = (await session.scalars(query.order_by(ProviderAccount.id).limit(1))).first()
        agent_ids = {m.agent_id for m in monitors if m.agent_id is not None}
        agents = {
            a.id: a for a in (await session.scalars(select(Agent).where(Agent.id.in_(agent_ids)))).all()
        }
    ordered = sorted(monitors, key=lambda m: (m.terminal_id is not None, MonitorKind(m.kind).order, m.id))
    return terminal, store_code, ordered, account, agents


def _scope(m: Monitor) -> str:
    return "terminal" if m.terminal_id is not None else "store network"


def _monitor_check(m: Monitor, at: datetime, r: ProbeResult, state: State | None) -> MonitorCheck:
    return MonitorCheck(
        monitor_id=m.id,
        kind=MonitorKind(m.kind),
        target=m.target,
        scope=_scope(m),
        outcome=r.outcome,
        latency_ms=round(r.latency_ms, 3),
        steps=r.steps,
        detail=r.detail,
        diagnosis=_diagnosis(r.diagnosis, r.context, m.target),
        state=state or State(m.state),
        checked_at=at,
    )


def _cloud_from_last_poll(m: Monitor, now: datetime) -> MonitorCheck:
    """No provider account covers the terminal: what the last poll found, and how old it is."""
    if m.last_checked_at is None:
        detail = "the provider has not been polled for this terminal yet"
        return MonitorCheck(
            m.id,
            MonitorKind.CLOUD,
            m.target,
            _scope(m),
            Outcome.ERROR,
            None,
            [step("provider API", False, 0.0, detail)],
            detail,
            _diagnosis("provider_unavailable", {"error": "not polled yet"}, m.target),
            State(m.state),
            live=False,
        )
    age = (now - m.last_checked_at).total_seconds()
    outcome = {State.UP: Outcome.OK, State.DOWN: Outcome.FAIL}.get(State(m.state), Outcome.ERROR)
    detail = f"last provider poll {age:.0f} s ago: {m.last_detail or m.state}"
    code = m.last_diagnosis if outcome != Outcome.OK else None
    if outcome == Outcome.ERROR and not code:
        code = "provider_unavailable"
    return MonitorCheck(
        m.id,
        MonitorKind.CLOUD,
        m.target,
        _scope(m),
        outcome,
        m.last_latency_ms,
        [step("provider API", outcome == Outcome.OK, m.last_latency_ms or 0.0, detail)],
        detail,
        _diagnosis(code, {}, m.target),
        State(m.state),
        live=False,
        checked_at=m.last_checked_at,
    )


async def _via_agent(
    broker: AgentBroker | None, agent: Agent, monitors: list[Monitor]
) -> dict[int, tuple[datetime, ProbeResult | None]]:
    """These monitors, run now by their store agent; each a named 'could not check' when the
    agent cannot be asked (offline, or no broker in this process) or does not answer in time."""
    now = utcnow()

    def not_checked(code: str, detail: str, **context: str) -> dict[int, tuple[datetime, ProbeResult | None]]:
        return {
            m.id: (
                now,
                ProbeResult.failed(
                    code, detail, [step("store agent", False, 0.0, detail)], 0.0, target=m.target, **context
                ),
            )
            for m in monitors
        }

    heard = f"{agent.last_heard_at:%Y-%m-%d %H:%M:%S} UTC" if agent.last_heard_at else "never"
    if broker is None:
        return not_checked("agent_unreachable", f"checked from inside the store by agent {agent.name}")
    if agent.state != AgentState.ONLINE:
        return not_checked(
            "agent_offline",
            f"store agent {agent.name} is {agent.state}, last heard {heard}",
            last_heard=heard,
        )
    wait_s = max(m.timeout_s for m in monitors) + 2
    answers = await broker.run(agent.id, [m.id for m in monitors], wait_s)
    if answers is None:
        return not_checked(
            "agent_offline", f"store agent {agent.name} did not answer within {wait_s:g} s", last_heard=heard
        )
    results: dict[int, tuple[datetime, ProbeResult | None]] = {}
    for answer in answers:
        a = AgentAnswer.model_validate(answer)
        context = {"target": next((m.target for m in monitors if m.id == a.monitor_id), ""), **a.context}
        result = ProbeResult(a.outcome, a.latency_ms or 0.0, a.steps, a.diagnosis, a.detail or "", context)
        results[a.monitor_id] = (to_server_clock(agent, a.checked_at), result)
    missing = [m for m in monitors if m.id not in results]
    return (
        {
            **not_checked("agent_offline", "the store agent did not report this check", last_heard=heard),
            **results,
        }
        if missing
        else results
    )
