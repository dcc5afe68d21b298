"""The alert jobs, run on the checking worker's scheduler (app.monitoring.worker takes them as
PeriodicJobs, so monitoring never imports alerts):

* evaluate, every `alert_evaluate_every_s`: one worker at a time (an advisory lock on
  PostgreSQL), one transaction: incidents, their timeline and the outbox rows together;
* deliver, every `alert_deliver_every_s`, in every worker: claim and send the outbox.

`termpulse serve` (its embedded worker), `termpulse worker` and the demo start them."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence

from app.alerts.engine import AlertConfig, Report, evaluate
from app.alerts.outbox import Deliverer
from app.config import Settings
from app.db import Database, in_transaction, utcnow
from app.monitoring.worker import PeriodicJob
from app.monitoring.writer import new_owner_id

log = logging.getLogger(__name__)

EVALUATE_LOCK = 0x7E57_0A01


class AlertRunner:
    def __init__(self, settings: Settings, database: Database, *, owner: str | None = None):
        self.settings = settings
        self.database = database
        self.config = AlertConfig.from_settings(settings)
        self.deliverer = Deliverer(settings, database, owner or f"alerts-{new_owner_id()}")
        self.started = time.monotonic()

    async def evaluate(self) -> Report:
        now = utcnow()
        warm = time.monotonic() - self.started >= self.settings.alert_stalled_after_s
        config = dataclasses.replace(self.config, watch_stalled=warm)
        report = await in_transaction(self.database, lambda session: evaluate(session, now, config))
        if report.opened or report.resolved or report.fleet_opened or report.queued:
            log.info(
                "alerts: %d incidents opened (%d fleet), %d resolved, %d notifications queued",
                report.opened,
                report.fleet_opened,
                report.resolved,
                report.queued,
            )
        return report

    async def deliver(self) -> int:
        return await self.deliverer.tick()

    def jobs(self) -> list[PeriodicJob]:
        return [
            PeriodicJob(
                "alerts-evaluate", self.settings.alert_evaluate_every_s, self.evaluate, EVALUATE_LOCK
            ),
            PeriodicJob("alerts-deliver", self.settings.alert_deliver_every_s, self.deliver),
        ]


def alert_jobs(settings: Settings, database: Database) -> Sequence[PeriodicJob]:
    """What a worker runs for alerting (pass to Worker(jobs=...), start_embedded_worker, run_worker)."""
    return AlertRunner(settings, database).jobs()
