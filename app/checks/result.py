"""What a probe returns (a `ProbeResult` of `Step`s), and the `Run` every probe builds it with."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from typing_extensions import TypedDict  # pydantic reads it on Python 3.11 (the check API)

from app.checks.diagnoses import Diagnosis, explain, is_ours
from app.vocabulary import Outcome


class Step(TypedDict):
    """One timed step of a check (resolve, connect, tls, first_byte, http, provider API ...).

    A TypedDict rather than a class: steps are stored as JSON as they are, at thousands of
    checks a second."""

    step: str
    ok: bool
    ms: float
    detail: str


def step(name: str, ok: bool, ms: float, detail: str = "") -> Step:
    return {"step": name, "ok": ok, "ms": round(ms, 3), "detail": detail}


_KEYS = {"step", "ok", "ms", "detail"}


def pack_steps(steps: list[Any]) -> list[Any]:
    """Steps as they are stored: [name, ok 1/0, ms] and the detail if any (about half the
    bytes of the dicts in JSON); a step with other keys stays as it is."""
    return [
        [s["step"], int(bool(s["ok"])), s["ms"], *([s["detail"]] if s["detail"] else [])]
        if isinstance(s, dict) and set(s) == _KEYS
        else s
        for s in steps
    ]


def unpack_steps(stored: list[Any]) -> list[Step]:
    """The steps `pack_steps` stored (and dicts as they were stored before it), as Steps."""
    return [
        {"step": s[0], "ok": bool(s[1]), "ms": s[2], "detail": s[3] if len(s) > 3 else ""}
        if isinstance(s, list)
        else s
        for s in stored
    ]


@dataclass
class ProbeResult:
    outcome: Outcome  # ok; fail (the target's fault); error (ours: the state is unknown)
    latency_ms: float  # the probe's headline figure (connect, handshake, first byte ...)
    steps: list[Step]  # in the order they ran
    # A code from app.checks.diagnoses: what failed; on an ok result a warning that does not
    # make the monitor down (tls_expiring_soon: the certificate is valid but expires soon).
    diagnosis: str | None = None
    detail: str = ""  # one line for people: the diagnosis cause, or what was seen
    context: dict[str, Any] = field(default_factory=dict)  # fills the diagnosis texts

    @property
    def ok(self) -> bool:
        return self.outcome == Outcome.OK

    def explain(self) -> Diagnosis | None:
        return explain(self.diagnosis, **self.context) if self.diagnosis else None

    @classmethod
    def failed(
        cls, code: str, detail: str, steps: list[Step], latency_ms: float = 0.0, **context: Any
    ) -> ProbeResult:
        """A result for a failure named by its diagnosis code (ours -> error, else fail)."""
        outcome = Outcome.ERROR if is_ours(code) else Outcome.FAIL
        return cls(outcome, latency_ms, steps, code, detail, context)


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
        self.steps: list[Step] = []
        self.context: dict[str, Any] = {"timeout_s": f"{timeout_s:g}"}
        self._step: str | None = None
        self.step_started = self.started
        self.warning: str | None = None  # a diagnosis to report on an ok result (still up)
        # One timeout per check: run_probe bounds a "bounded" run at its deadline (the steps
        # then set none of their own), and a timeout is named by what was awaited when it
        # fired: `if_timeout`, set by the step (a connect: tcp_timeout; a handshake:
        # tls_stalled; a failure already found while a second pass looks closer: that one).
        self.bounded = False
        self.if_timeout: ProbeFailure | None = None

    def remaining(self) -> float:
        # Never zero: asyncio treats a zero timeout as "fail at once" even for ready work.
        return max(self.deadline - time.perf_counter(), 0.001)

    def begin(self, name: str, at: float | None = None) -> None:
        """Start a step now (or at `at`, a perf_counter time it really started)."""
        self._step, self.step_started = name, time.perf_counter() if at is None else at

    def end(self, ok: bool = True, detail: str = "") -> float:
        """Close the current step; returns its duration in ms."""
        ms = (time.perf_counter() - self.step_started) * 1000
        if self._step is not None:
            self.steps.append(step(self._step, ok, ms, detail))
        self._step = None
        return ms

    def add(self, name: str, ok: bool, ms: float, detail: str = "") -> None:
        self.steps.append(step(name, ok, ms, detail))

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000

    def ok(self, latency_ms: float, detail: str = "") -> ProbeResult:
        if self.warning is not None:  # ok, and what needs attention before it fails
            detail = explain(self.warning, **self.context).cause
        return ProbeResult(Outcome.OK, latency_ms, self.steps, self.warning, detail, self.context)

    def warn(self, code: str, **ctx: Any) -> None:
        """The check passes, with a warning (a diagnosis that is not a failure)."""
        self.context.update(ctx)
        self.warning = code

    def failed(self, exc: ProbeFailure) -> ProbeResult:
        if self._step is not None:
            self.end(False, exc.detail)
        self.context.update(exc.ctx)
        cause = explain(exc.code, **self.context).cause
        return ProbeResult.failed(exc.code, cause, self.steps, self.elapsed_ms(), **self.context)
