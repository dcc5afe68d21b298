"""What a probe returns, and the small helpers every probe uses to build it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

from app.checks.diagnoses import Diagnosis, explain, is_ours

Outcome = Literal["ok", "fail", "error"]


@dataclass
class ProbeResult:
    outcome: Outcome  # ok; fail (the target's fault); error (ours: the state is unknown)
    latency_ms: float  # the probe's headline figure (connect, handshake, first byte ...)
    steps: list[dict[str, Any]]  # [{step, ok, ms, detail}] in the order they ran
    diagnosis: str | None = None  # a code from app.checks.diagnoses, None when ok
    detail: str = ""  # one line for people: the diagnosis cause, or what was seen
    context: dict[str, Any] = field(default_factory=dict)  # fills the diagnosis texts

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"

    def explain(self) -> Diagnosis | None:
        return explain(self.diagnosis, **self.context) if self.diagnosis else None

    def as_dict(self) -> dict[str, Any]:
        d = self.explain()
        return {
            "outcome": self.outcome,
            "latency_ms": round(self.latency_ms, 3),
            "steps": self.steps,
            "diagnosis": self.diagnosis,
            "detail": self.detail,
            "cause": d.cause if d else None,
            "fix": d.fix if d else None,
        }


class ProbeFailure(Exception):
    """Raised inside a probe: ends it with this diagnosis; ctx fills the texts."""

    def __init__(self, code: str, detail: str, **ctx: Any):
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.ctx = ctx


class Run:
    """Times the steps of one probe against one deadline."""

    def __init__(self, timeout_s: float):
        self.timeout_s = timeout_s
        self.started = time.perf_counter()
        self.deadline = self.started + timeout_s
        self.steps: list[dict[str, Any]] = []
        self.context: dict[str, Any] = {"timeout_s": f"{timeout_s:g}"}
        self._step: str | None = None
        self._step_t = self.started

    def remaining(self) -> float:
        # Never zero: asyncio treats a zero timeout as "fail at once" even for ready work.
        return max(self.deadline - time.perf_counter(), 0.001)

    def begin(self, step: str) -> None:
        self._step, self._step_t = step, time.perf_counter()

    def end(self, ok: bool = True, detail: str = "") -> float:
        """Close the current step; returns its duration in ms."""
        ms = (time.perf_counter() - self._step_t) * 1000
        if self._step is not None:
            self.steps.append({"step": self._step, "ok": ok, "ms": round(ms, 3), "detail": detail})
        self._step = None
        return ms

    def add(self, step: str, ok: bool, ms: float, detail: str = "") -> None:
        self.steps.append({"step": step, "ok": ok, "ms": round(ms, 3), "detail": detail})

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000

    def ok(self, latency_ms: float, detail: str = "") -> ProbeResult:
        return ProbeResult("ok", latency_ms, self.steps, None, detail, self.context)

    def failed(self, exc: ProbeFailure) -> ProbeResult:
        if self._step is not None:
            self.end(False, exc.detail)
        self.context.update(exc.ctx)
        outcome: Outcome = "error" if is_ours(exc.code) else "fail"
        cause = explain(exc.code, **self.context).cause
        return ProbeResult(outcome, self.elapsed_ms(), self.steps, exc.code, cause, self.context)
