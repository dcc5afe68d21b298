"""Prometheus counters of the checks this process runs: by kind and outcome, failures by kind and
diagnosis, how late scheduled checks start, and provider polls and their errors.

Counters are per process (Prometheus sums them over the processes it scrapes); the fleet's
state (terminals, stores and monitors by state, overdue monitors) is read from the database
at each scrape by `app.ops.routes`, the same for every process.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from app.vocabulary import Outcome

CHECKS = Counter("termpulse_checks_total", "Checks run (scheduled and cloud polls)", ["kind", "outcome"])
CHECK_FAILURES = Counter(
    "termpulse_check_failures_total",
    "Checks that failed (the target's fault) or errored (ours), by diagnosis",
    ["kind", "diagnosis"],
)
START_LAG = Histogram(
    "termpulse_check_start_lag_seconds",
    "How long after its due time a scheduled check started",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
)
PROVIDER_POLLS = Counter("termpulse_provider_polls_total", "Provider API polls (one per store)", ["provider"])
PROVIDER_POLL_ERRORS = Counter(
    "termpulse_provider_poll_errors_total",
    "Provider polls that got no answer about the terminals (rate-limited, rejected, unreachable)",
    ["provider", "diagnosis"],
)


def count_check(kind: str, outcome: str, diagnosis: str | None) -> None:
    CHECKS.labels(kind, outcome).inc()
    if outcome != Outcome.OK:
        CHECK_FAILURES.labels(kind, diagnosis or "none").inc()


def count_poll(provider: str, error: str | None) -> None:
    PROVIDER_POLLS.labels(provider).inc()
    if error is not None:
        PROVIDER_POLL_ERRORS.labels(provider, error).inc()
