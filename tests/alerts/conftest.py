"""Fixtures of the alert tests: receivers on loopback, settings with short delays, channels
and rules, and stores put into a state directly (or through the real worker)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import insert, select

from app.alerts import service
from app.alerts.runner import AlertRunner
from app.checks.guard import TargetGuard
from app.checks.probes import ProbeContext
from app.checks.resolver import Resolver
from app.config import Settings
from app.db import Database, in_transaction, utcnow
from app.inventory.models import Monitor, Store, Terminal
from tests.alerts.receivers import SmtpReceiver, WebhookReceiver


@pytest.fixture
async def webhook():
    receiver = await WebhookReceiver().start()
    yield receiver
    await receiver.stop()


@pytest.fixture
async def webhook2():
    receiver = await WebhookReceiver().start()
    yield receiver
    await receiver.stop()


@pytest.fixture
def smtp():
    receiver = SmtpReceiver().start()
    yield receiver
    receiver.stop()


def alert_settings(db: Database, **overrides) -> Settings:
    values = dict(
        database_url=db.url,
        secret_key="test-secret-key",
        allowed_networks=["127.0.0.0/8"],
        base_url="http://termpulse.test",
        alert_evaluate_every_s=0.2,
        alert_deliver_every_s=0.2,
        alert_group_wait_s=0.5,
        alert_quiet_period_s=0.5,
        alert_retry_base_s=0.1,
        alert_retry_max_s=0.5,
        alert_send_timeout_s=5,
    )
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def asettings(db):
    return alert_settings(db)


@pytest.fixture
def probe_ctx():
    return ProbeContext(Resolver(["127.0.0.1"], 1), TargetGuard(["127.0.0.0/8"]))


async def add_channel(db: Database, settings: Settings, name: str, url: str) -> int:
    async def work(session):
        return (await service.create_channel(session, settings.secret_key, name, url)).id

    return await in_transaction(db, work)


async def add_rule(db: Database, name: str, channel_id: int, **fields) -> int:
    data = {"name": name, "channel_id": str(channel_id), "match": "all"}
    data.update({k: str(v) for k, v in fields.items()})

    async def work(session):
        return (await service.create_rule(session, data)).id

    return await in_transaction(db, work)


async def failing_store(
    db: Database,
    code: str,
    *,
    terminals: int = 1,
    down: int | None = None,
    diagnosis: str = "tcp_refused",
    region: str = "",
    tags: str = "",
    ago_s: float = 60,
) -> int:
    """A store whose terminals' LAN checks are down (the state the worker would have left),
    without running checks: `down` of its `terminals` down."""
    down = terminals if down is None else down
    since = utcnow() - timedelta(seconds=ago_s)
    async with db.sessionmaker() as s:
        status = "cannot_pay" if down >= terminals else "degraded" if down else "up"
        store = Store(
            code=code, name=f"Shop {code}", region=region, tags=tags, status=status, status_since=since
        )
        s.add(store)
        await s.flush()
        for i in range(terminals):
            state = "down" if i < down else "up"
            t = Terminal(
                store_id=store.id,
                poiid=f"P400-{code}-{i:03d}",
                integration="local",
                status=state,
                status_since=since,
                cloud_state="not_enabled",
            )
            s.add(t)
            await s.flush()
            await s.execute(
                insert(Monitor).values(
                    key=f"alerts:{code}:{i}",
                    store_id=store.id,
                    terminal_id=t.id,
                    kind="tcp",
                    target=f"127.0.0.{i + 1}:2000",
                    state=state,
                    state_since=since,
                    last_diagnosis=diagnosis if state == "down" else None,
                    next_due_at=utcnow() + timedelta(hours=1),
                    enabled=True,
                )
            )
        await s.commit()
        return store.id


async def heal_store(db: Database, store_id: int) -> None:
    from sqlalchemy import update

    async with db.sessionmaker() as s:
        await s.execute(
            update(Monitor).where(Monitor.store_id == store_id).values(state="up", last_diagnosis=None)
        )
        await s.execute(update(Terminal).where(Terminal.store_id == store_id).values(status="up"))
        await s.execute(update(Store).where(Store.id == store_id).values(status="up"))
        await s.commit()


async def run_until(runner: AlertRunner, predicate, within: float = 20.0):
    """Evaluate and deliver, again and again, until the predicate holds."""
    import asyncio

    deadline = asyncio.get_running_loop().time() + within
    while True:
        await runner.evaluate()
        await runner.deliver()
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {within} s")
        await asyncio.sleep(0.1)


async def incidents(db: Database):
    from app.alerts.models import Incident

    async with db.sessionmaker() as s:
        return list((await s.execute(select(Incident).order_by(Incident.id))).scalars())
