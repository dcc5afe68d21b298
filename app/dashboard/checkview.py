"""Check connection on the terminal page and Check store on the store page: the check's report
as the page shows it, and the plain-text evidence a support agent pastes into a ticket."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from app.monitoring.manual import DiagnosisText, MonitorCheck, StoreCheckReport, TerminalCheckReport
from app.vocabulary import Outcome, State, Verdict


@dataclass
class CheckView:
    poiid: str
    verdict: Verdict
    store: str = ""
    checks: list[MonitorCheck] = field(default_factory=list)
    diagnosis: DiagnosisText | None = None
    why: str = ""  # for could-not-check: what stopped us
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    total_ms: float | None = None
    tz: str = "UTC"  # the store's time zone: the page shows its local time, the report UTC too
    title: str = ""  # the headline, when not the terminal verdict's (a store's network)
    subject: str = ""  # what was checked, when not a terminal ("Store S-0001 network")
    note: str = ""  # Check store: why its verdict is its store network's, said above it

    @property
    def local_started(self) -> datetime:
        try:
            return self.started_at.astimezone(ZoneInfo(self.tz or "UTC"))
        except (ZoneInfoNotFoundError, ValueError):
            return self.started_at.astimezone(UTC)

    def local_time(self, at: datetime | None = None) -> str:
        """A moment in the store's local time: '14:02:05 CET' (with the date if not today there)."""
        at = at or self.started_at
        try:
            local = at.astimezone(ZoneInfo(self.tz or "UTC"))
        except (ZoneInfoNotFoundError, ValueError):
            local = at.astimezone(UTC)
        today = datetime.now(local.tzinfo).date()
        return f"{local:%H:%M:%S %Z}" if local.date() == today else f"{local:%Y-%m-%d %H:%M:%S %Z}"

    @property
    def headline(self) -> str:
        return self.title or self.verdict.headline

    @property
    def state(self) -> State:
        return self.verdict.state

    @property
    def warnings(self) -> list[MonitorCheck]:
        """Checks that passed with a warning (a certificate expiring soon): shown with their
        fix, never as the verdict."""
        return [c for c in self.checks if c.outcome == Outcome.OK and c.diagnosis]

    def report_text(self) -> str:
        lines = [
            f"TermPulse connection check: {self.headline}",
            self.subject or f"Terminal: {self.poiid}" + (f"   Store: {self.store}" if self.store else ""),
            f"Time: {self.started_at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"
            + (
                f" ({self.local_started:%Y-%m-%d %H:%M:%S %Z} store time)"
                if self.tz not in ("", "UTC")
                else ""
            )
            + (f"   Duration: {self.total_ms:.0f} ms" if self.total_ms is not None else ""),
        ]
        if self.why and self.verdict == Verdict.COULD_NOT_CHECK:
            lines.append(f"Why: {self.why}")
        for c in self.checks:
            latency = f" {c.latency_ms:.1f} ms" if c.latency_ms is not None else ""
            source = "" if c.live else " (last provider poll)"
            lines.append(f"- {c.kind.word} {c.target} [{c.scope}]: {c.outcome.word}{latency}{source}")
            for s in c.steps:
                mark = "ok" if s["ok"] else "FAILED"
                detail = f"  {s['detail']}" if s["detail"] else ""
                lines.append(f"    {s['step']:<12} {s['ms']:7.1f} ms  {mark}{detail}")
            if c.diagnosis:
                said = "finding" if c.outcome != Outcome.OK else "warning"
                lines.append(f"    {said} [{c.diagnosis.code}]: {c.diagnosis.cause}")
        if self.diagnosis:
            lines.append(f"Diagnosis: {self.diagnosis.title} [{self.diagnosis.code}]: {self.diagnosis.cause}")
            lines.append(f"What to do: {self.diagnosis.fix}")
        for d in [c.diagnosis for c in self.warnings if c.diagnosis]:
            lines.append(f"Warning: {d.title} [{d.code}]: {d.cause}")
            lines.append(f"What to do: {d.fix}")
        return "\n".join(lines)


def from_report(report: TerminalCheckReport, tz: str = "UTC") -> CheckView:
    view = CheckView(
        tz=tz,
        poiid=report.poiid,
        verdict=report.verdict,
        store=report.store_code,
        checks=report.checks,
        diagnosis=report.diagnosis,
        started_at=report.checked_at,
        total_ms=report.duration_ms,
    )
    if report.verdict == Verdict.COULD_NOT_CHECK:
        view.why = report.diagnosis.cause if report.diagnosis else "no check produced a result"
    return view


def could_not_check(
    poiid: str, why: str, store: str = "", started: float | None = None, tz: str = "UTC"
) -> CheckView:
    view = CheckView(poiid=poiid, verdict=Verdict.COULD_NOT_CHECK, why=why, store=store, tz=tz)
    if started is not None:
        view.total_ms = (time.perf_counter() - started) * 1000
    return view


@dataclass
class StoreCheckView:
    """Check store: the store's network first, then a CheckView per terminal (its own checks;
    its verdict counts the network, as Check connection's does)."""

    store: str
    name: str
    network: CheckView
    terminals: list[CheckView]
    report: StoreCheckReport

    @property
    def summary(self) -> str:
        """'2 connected, 1 disconnected' (the terminals' verdicts)."""
        words = {
            Verdict.CONNECTED: "connected",
            Verdict.DISCONNECTED: "disconnected",
            Verdict.COULD_NOT_CHECK: "could not be checked",
            Verdict.NOT_MONITORED: "not monitored",
        }
        counts = self.report.counts
        return ", ".join(f"{counts[v]} {words[v]}" for v in words if counts.get(v)) or "no terminals"

    def report_text(self) -> str:
        parts = [
            f"TermPulse store check: {self.store} {self.name}: {self.network.headline.lower()}; "
            f"terminals: {self.summary}",
            self.network.report_text(),
            *(t.report_text() for t in self.terminals),
        ]
        return "\n\n".join(parts)


def from_store_report(report: StoreCheckReport, tz: str = "UTC") -> StoreCheckView:
    network = CheckView(
        poiid="",
        verdict=report.network_verdict,
        store=report.store_code,
        checks=report.network,
        diagnosis=report.network_diagnosis,
        started_at=report.checked_at,
        total_ms=report.duration_ms,
        tz=tz,
        title=report.network_headline,
        subject=f"Store network: {report.store_code} {report.store_name}",
    )
    if report.network_verdict == Verdict.COULD_NOT_CHECK and report.network_diagnosis:
        network.why = report.network_diagnosis.cause
    return StoreCheckView(
        store=report.store_code,
        name=report.store_name,
        network=network,
        terminals=[_in_store(from_report(t, tz), report) for t in report.terminals],
        report=report,
    )


def _in_store(view: CheckView, report: StoreCheckReport) -> CheckView:
    """A terminal whose own checks pass but whose store's network fails: its verdict's cause is
    the network's, shown once above it, so it says so instead of repeating it."""
    own_fine = all(c.outcome == Outcome.OK for c in view.checks)
    network_failed = report.network_diagnosis is not None
    if network_failed and own_fine and view.diagnosis == report.network_diagnosis:
        view.diagnosis = None
        state = "could not be checked" if view.verdict == Verdict.COULD_NOT_CHECK else "is disconnected"
        own = "Its own checks pass" if view.checks else "It has no checks of its own"
        view.note = f"{own}: it {state} because of the store's network (above)."
    return view
