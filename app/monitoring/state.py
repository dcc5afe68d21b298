"""The monitor state machine, as pure functions (the writer applies it in batches).

Rules:

* ``fail`` (the target's fault) counts towards ``fail_threshold`` consecutive failures,
  after which the monitor is ``down``; ``ok`` counts towards ``success_threshold``
  consecutive successes, after which it is ``up``. Either resets the other's streak.
* ``error`` (our side failed: guard refused, internal error, checker overloaded, provider
  API trouble) makes the monitor ``unknown`` at once and is neutral for the streaks: it
  neither counts as a failure nor breaks one. We never call a terminal down because our
  side failed.
* ``paused`` and ``maintenance`` are set by people, not by results: results are recorded
  and streaks kept, the state stays.
* A monitor whose last result is older than ``STALE_INTERVALS`` intervals becomes
  ``unknown`` (the periodic stale job, see ``app.monitoring.maintenance``).
"""

from __future__ import annotations

from dataclasses import dataclass

from app.vocabulary import MANUAL_STATES, Outcome, State

STALE_INTERVALS = 3


@dataclass
class MonitorState:
    state: str
    consecutive_failures: int
    consecutive_successes: int
    fail_threshold: int = 2
    success_threshold: int = 1


def step(current: MonitorState, outcome: str) -> State | None:
    """Apply one outcome to `current` in place; return the new state when it changed."""
    target: State | None
    if outcome == Outcome.OK:
        current.consecutive_successes += 1
        current.consecutive_failures = 0
        target = State.UP if current.consecutive_successes >= max(current.success_threshold, 1) else None
    elif outcome == Outcome.FAIL:
        current.consecutive_failures += 1
        current.consecutive_successes = 0
        target = State.DOWN if current.consecutive_failures >= max(current.fail_threshold, 1) else None
    else:  # error: ours
        target = State.UNKNOWN
    if target is None or target == current.state or current.state in MANUAL_STATES:
        return None
    current.state = target
    return target
