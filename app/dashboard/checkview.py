"""Turns the result of a manual Check connection into what the page shows and the plain-text
report a support agent pastes into a ticket.

The runner (app.checks.runner.check_terminal_now) returns a TerminalCheckReport; this module
reads it by attribute or key, so a dict or a dataclass both work."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

VERDICT_TEXT = {
    "connected": "Terminal is connected",
    "disconnected": "Terminal is disconnected",
    "unknown": "Could not check",
}


def _get(obj: Any, *names: str, default: Any = None) -> Any:
    for name in names:
        if isinstance(obj, dict) and name in obj:
            return obj[name]
        if hasattr(obj, name):
            value = getattr(obj, name)
            return value() if callable(value) and name in ("explain",) else value
    return default


@dataclass
class StepView:
    name: str
    ok: bool | None
    ms: float | None
    detail: str


@dataclass
class CheckGroup:
    """One monitor run by the check: e.g. TCP to the terminal, DNS of the processor's name."""

    kind: str
    target: str
    scope: str
    outcome: str  # ok | fail | error
    latency_ms: float | None
    steps: list[StepView]
    detail: str
    finding: str = ""
    live: bool = True

    @property
    def state(self) -> str:
        return {"ok": "up", "fail": "down"}.get(self.outcome, "unknown")


KIND_NAMES = {
    "dns": "DNS",
    "tcp": "TCP",
    "tls": "TLS",
    "https": "HTTPS",
    "paynt_epos": "EPOS API",
    "cloud": "Cloud",
}


@dataclass
class CheckView:
    poiid: str
    verdict: str  # connected | disconnected | unknown
    why: str = ""
    checks: list[CheckGroup] = field(default_factory=list)
    code: str | None = None
    title: str = ""
    cause: str = ""
    fix: str = ""
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    total_ms: float | None = None
    store: str = ""
    status: str | None = None

    @property
    def headline(self) -> str:
        return VERDICT_TEXT.get(self.verdict, "Could not check")

    @property
    def state(self) -> str:
        return {"connected": "up", "disconnected": "down"}.get(self.verdict, "unknown")

    @property
    def targets(self) -> list[str]:
        return [f"{KIND_NAMES.get(c.kind, c.kind)} {c.target}" for c in self.checks]

    def report_text(self) -> str:
        lines = [
            f"TermPulse connection check: {self.headline}",
            f"Terminal: {self.poiid}" + (f"   Store: {self.store}" if self.store else ""),
            f"Time: {self.started_at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"
            + (f"   Duration: {self.total_ms:.0f} ms" if self.total_ms is not None else ""),
        ]
        if self.why and self.verdict == "unknown":
            lines.append(f"Why: {self.why}")
        for c in self.checks:
            result = {"ok": "OK", "fail": "FAILED", "error": "NOT CHECKED"}.get(c.outcome, c.outcome)
            latency = f" {c.latency_ms:.1f} ms" if c.latency_ms is not None else ""
            source = "" if c.live else " (last provider poll)"
            lines.append(
                f"- {KIND_NAMES.get(c.kind, c.kind)} {c.target} [{c.scope}]: {result}{latency}{source}"
            )
            for s in c.steps:
                mark = "ok" if s.ok else ("FAILED" if s.ok is False else "-")
                ms = f"{s.ms:7.1f} ms" if s.ms is not None else "       - "
                lines.append(f"    {s.name:<12} {ms}  {mark}" + (f"  {s.detail}" if s.detail else ""))
            if c.outcome != "ok" and c.finding:
                lines.append(f"    finding: {c.finding}")
        if self.cause:
            lines.append(f"Diagnosis: {self.title + ': ' if self.title else ''}{self.cause}")
        if self.fix:
            lines.append(f"What to do: {self.fix}")
        return "\n".join(lines)


def _verdict(value: Any) -> str:
    v = str(value or "").lower()
    if v in ("connected", "up", "ok", "online", "true"):
        return "connected"
    if v in ("disconnected", "down", "fail", "offline", "false"):
        return "disconnected"
    return "unknown"  # could_not_check, error, anything else


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) else None


def from_report(report: Any, poiid: str, store: str = "") -> CheckView:
    """From app.checks.runner.TerminalCheckReport (read by attribute or key)."""
    view = CheckView(
        poiid=str(_get(report, "poiid", default=poiid)),
        store=str(_get(report, "store_code", default=store)),
        verdict=_verdict(_get(report, "verdict", "outcome")),
    )
    started = _get(report, "checked_at", "started_at")
    if isinstance(started, datetime):
        view.started_at = started if started.tzinfo else started.replace(tzinfo=UTC)
    view.total_ms = _float(_get(report, "duration_ms", "total_ms"))
    view.status = _get(report, "status")
    for c in _get(report, "checks", default=()) or ():
        d = _get(c, "diagnosis")
        finding = ""
        if d is not None:
            finding = str(_get(d, "cause", default="") or _get(d, "title", default="") or "")
        view.checks.append(
            CheckGroup(
                kind=str(_get(c, "kind", default="")),
                target=str(_get(c, "target", default="")),
                scope=str(_get(c, "scope", default="terminal")),
                outcome=str(_get(c, "outcome", default="error")),
                latency_ms=_float(_get(c, "latency_ms")),
                detail=str(_get(c, "detail", default="") or ""),
                finding=finding,
                live=bool(_get(c, "live", default=True)),
                steps=[
                    StepView(
                        str(_get(s, "step", "name", default="step")),
                        None if _get(s, "ok") is None else bool(_get(s, "ok")),
                        _float(_get(s, "ms")),
                        str(_get(s, "detail", default="") or ""),
                    )
                    for s in (_get(c, "steps", default=()) or ())
                ],
            )
        )
    d = _get(report, "diagnosis")
    if d is not None:
        view.code = _get(d, "code")
        view.title = str(_get(d, "title", default="") or "")
        view.cause = str(_get(d, "cause", default="") or "")
        view.fix = str(_get(d, "fix", default="") or "")
    if view.verdict == "unknown":
        view.why = view.cause or "no check produced a result"
    return view


def could_not_check(poiid: str, why: str, store: str = "", started: float | None = None) -> CheckView:
    view = CheckView(poiid=poiid, verdict="unknown", why=why, store=store)
    if started is not None:
        view.total_ms = (time.perf_counter() - started) * 1000
    return view
