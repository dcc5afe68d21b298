"""Check one terminal now: `termpulse check POIID` and the dashboard's Check connection.

    report = await check_terminal_now(database, settings, "Move5000-203097992")
    report.verdict      # "connected" | "disconnected" | "could_not_check"
    report.headline     # "Terminal is connected" ...
    report.checks       # one MonitorCheck per monitor: steps with timings, diagnosis
    report.diagnosis    # the first failure's cause and fix (None when connected)

Every monitor of the terminal (LAN tcp / paynt_epos / tls) and of its store's network
(DNS and TCP to the processor) runs at once, concurrently, each with its own timeout.
The results are stored as manual check results through the same state machine as the
scheduled ones (`apply_outcomes`), so the dashboard's state follows what the agent saw.

Cloud monitors are the provider poller's (one API call per store): the check reports the
last poll (its age, its verdict) rather than calling the provider per terminal.

Verdict: any failure (the target's fault) -> disconnected; otherwise, any check we could
not make (our side: guard, internal error, provider API trouble, no monitor at all) ->
could_not_check; otherwise connected.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select

from app.checks.diagnoses import explain
from app.config import Settings
from app.db import Database, utcnow
from app.inventory.models import Monitor, Store, Terminal
from app.monitoring.writer import Outcome, apply_outcomes
from app.poiid import normalise_poiid
from app.providers.check import cloud_status_for_terminal

HEADLINES = {
    "connected": "Terminal is connected",
    "disconnected": "Terminal is disconnected",
    "could_not_check": "Could not check the terminal",
}
# The order steps are shown in: DNS -> TCP -> TLS -> HTTP -> provider API.
_KIND_ORDER = {"dns": 0, "tcp": 1, "tls": 2, "https": 3, "paynt_epos": 4, "cloud": 5}


class TerminalNotFound(LookupError):
    pass


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
    kind: str
    target: str
    scope: str  # "terminal" or "store network"
    outcome: str  # ok | fail | error
    latency_ms: float | None
    steps: list[dict[str, Any]]
    detail: str
    diagnosis: DiagnosisText | None
    state: str  # the monitor's state after this result
    live: bool = True  # False for a cloud monitor reported from the last provider poll
    checked_at: datetime | None = None


@dataclass
class TerminalCheckReport:
    poiid: str
    terminal_id: int
    store_code: str
    verdict: str
    headline: str
    checked_at: datetime
    duration_ms: float
    checks: list[MonitorCheck] = field(default_factory=list)
    diagnosis: DiagnosisText | None = None  # the first failure (or our error) to act on
    status: str = "unknown"  # the terminal's derived status after the check
    cloud_state: str = "unknown"

    @property
    def connected(self) -> bool:
        return self.verdict == "connected"

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["checked_at"] = self.checked_at.isoformat()
        for c in d["checks"]:
            c["checked_at"] = c["checked_at"].isoformat() if c["checked_at"] else None
        return d


def _diagnosis(
    code: str | None, context: dict | None = None, target: str | None = None
) -> DiagnosisText | None:
    if not code:
        return None
    ctx = dict(context or {})
    if target and "target" not in ctx:
        ctx["target"] = target
    d = explain(code, **ctx)
    return DiagnosisText(d.code, d.title, d.cause, d.fix, d.ours)


def verdict_of(outcomes: list[str]) -> str:
    if "fail" in outcomes:
        return "disconnected"
    if not outcomes or "error" in outcomes:
        return "could_not_check"
    return "connected"


async def check_terminal_now(
    database: Database, settings: Settings, poiid: str, *, probe_context=None, persist: bool = True
) -> TerminalCheckReport:
    """Run every monitor of the terminal now; raises TerminalNotFound for an unknown POIID."""
    from app.checks.probes import ProbeContext, run_probe

    ctx = probe_context or ProbeContext.from_settings(settings)
    key = normalise_poiid(poiid)
    async with database.sessionmaker() as session:
        row = (
            await session.execute(
                select(Terminal.id, Terminal.poiid, Terminal.store_id, Store.code)
                .join(Store, Store.id == Terminal.store_id)
                .where(Terminal.poiid == key)
            )
        ).first()
        if row is None:
            raise TerminalNotFound(f"no terminal with POIID {poiid!r}")
        terminal_id, poiid, store_id, store_code = row
        monitors = (
            (
                await session.execute(
                    select(Monitor).where(
                        Monitor.enabled.is_(True),
                        or_(
                            Monitor.terminal_id == terminal_id,
                            (Monitor.store_id == store_id) & Monitor.terminal_id.is_(None),
                        ),
                    )
                )
            )
            .scalars()
            .all()
        )
    monitors = sorted(monitors, key=lambda m: (m.terminal_id is not None, _KIND_ORDER.get(m.kind, 9), m.id))

    started = time.perf_counter()
    checked_at = utcnow()

    async def one(m: Monitor):
        at = utcnow()
        if m.kind == "cloud":  # the provider, asked now; None when no account covers the terminal
            return at, await cloud_status_for_terminal(database, settings.secret_key, terminal_id)
        return at, await run_probe(m.kind, m.target, m.params or {}, m.timeout_s, ctx)

    results = dict(zip((m.id for m in monitors), await asyncio.gather(*(one(m) for m in monitors))))
    duration_ms = (time.perf_counter() - started) * 1000

    outcomes = [
        Outcome(m.id, r.outcome, at, r.latency_ms, r.steps, r.diagnosis, r.detail, manual=True)
        for m in monitors
        for at, r in [results[m.id]]
        if r is not None
    ]
    states: dict[int, str] = {}
    status, cloud_state = "unknown", "unknown"
    async with database.sessionmaker() as session:
        if persist and outcomes:
            report = await apply_outcomes(session, outcomes)
            states = report.states
        status, cloud_state = (
            await session.execute(
                select(Terminal.status, Terminal.cloud_state).where(Terminal.id == terminal_id)
            )
        ).one()
        await session.commit()

    checks: list[MonitorCheck] = []
    for m in monitors:
        scope = "terminal" if m.terminal_id is not None else "store network"
        at, r = results[m.id]
        if r is None:
            checks.append(_cloud_from_last_poll(m, scope, checked_at))
            continue
        checks.append(
            MonitorCheck(
                monitor_id=m.id,
                kind=m.kind,
                target=m.target,
                scope=scope,
                outcome=r.outcome,
                latency_ms=round(r.latency_ms, 3) if r.latency_ms is not None else None,
                steps=r.steps,
                detail=r.detail,
                diagnosis=_diagnosis(r.diagnosis, r.context, m.target),
                state=states.get(m.id, m.state),
                checked_at=at,
            )
        )

    verdict = verdict_of([c.outcome for c in checks])
    first_bad = next((c for c in checks if c.outcome == "fail"), None) or next(
        (c for c in checks if c.outcome == "error"), None
    )
    diagnosis = first_bad.diagnosis if first_bad else None
    if not checks:
        diagnosis = DiagnosisText(
            "no_monitors",
            "Nothing to check",
            f"The terminal {poiid} has no LAN address, no enabled cloud connection and its store "
            "no network profile, so TermPulse has nothing to check.",
            "Add the terminal's LAN address or enable its cloud connection in the inventory.",
            True,
        )
    return TerminalCheckReport(
        poiid=poiid,
        terminal_id=terminal_id,
        store_code=store_code,
        verdict=verdict,
        headline=HEADLINES[verdict],
        checked_at=checked_at,
        duration_ms=round(duration_ms, 3),
        checks=checks,
        diagnosis=diagnosis,
        status=status,
        cloud_state=cloud_state,
    )


def _cloud_from_last_poll(m: Monitor, scope: str, now: datetime) -> MonitorCheck:
    if m.last_checked_at is None:
        outcome, detail = "error", "the provider has not been polled for this terminal yet"
        step = {"step": "provider API", "ok": False, "ms": 0.0, "detail": detail}
        return MonitorCheck(
            m.id,
            m.kind,
            m.target,
            scope,
            outcome,
            None,
            [step],
            detail,
            _diagnosis("provider_unavailable", {"error": "not polled yet"}, m.target),
            m.state,
            live=False,
            checked_at=None,
        )
    age = (now - m.last_checked_at).total_seconds()
    outcome = {"up": "ok", "down": "fail"}.get(m.state, "error")
    detail = f"last provider poll {age:.0f} s ago: {m.last_detail or m.state}"
    step = {
        "step": "provider API",
        "ok": outcome == "ok",
        "ms": round(m.last_latency_ms or 0.0, 3),
        "detail": detail,
    }
    code = m.last_diagnosis if outcome != "ok" else None
    if outcome == "error" and not code:
        code = "provider_unavailable"
    return MonitorCheck(
        m.id,
        m.kind,
        m.target,
        scope,
        outcome,
        m.last_latency_ms,
        [step],
        detail,
        _diagnosis(code, None, m.target),
        m.state,
        live=False,
        checked_at=m.last_checked_at,
    )
