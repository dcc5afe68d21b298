"""The state machine: thresholds, flapping, our own failures, derived status."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from app.db import utcnow
from app.inventory.models import Monitor, Store, Terminal
from app.monitoring.compact import Day, Kept
from app.monitoring.models import CheckResult, LatencyDay
from app.monitoring.state import MonitorState, step
from app.monitoring.writer import CheckOutcome, apply_outcomes
from tests.monitoring.helpers import add_monitors, add_store, add_terminals, state_changes


def expected_changes(outcomes: str, fail_threshold: int, success_threshold: int, start: str = "unknown"):
    """An independent, literal reading of the rules: o = ok, f = fail, e = ours."""
    state, fails, oks, changes = start, 0, 0, []
    for o in outcomes:
        if o == "o":
            oks, fails = oks + 1, 0
            new = "up" if oks >= success_threshold else state
        elif o == "f":
            fails, oks = fails + 1, 0
            new = "down" if fails >= fail_threshold else state
        else:
            new = "unknown"
        if new != state:
            changes.append((state, new))
            state = new
    return changes


@pytest.mark.parametrize("fail_threshold,success_threshold", [(1, 1), (2, 1), (3, 2), (2, 3)])
@pytest.mark.parametrize(
    "sequence",
    [
        "oooo",
        "ffff",
        "ofofofof",
        "offoffo",
        "ooffffoo",
        "foooff",
        "ffeff",
        "oeoo",
        "ffofff",
        "ooeffoe",
    ],
)
def test_pure_state_machine_matches_the_rules(sequence, fail_threshold, success_threshold):
    m = MonitorState("unknown", 0, 0, fail_threshold, success_threshold)
    changes = []
    for o in sequence:
        before = m.state
        new = step(m, {"o": "ok", "f": "fail", "e": "error"}[o])
        if new:
            changes.append((before, new))
    assert changes == expected_changes(sequence, fail_threshold, success_threshold)


def test_default_thresholds_down_after_two_up_after_one():
    m = MonitorState("up", 0, 0)
    assert step(m, "fail") is None and m.state == "up"
    assert step(m, "fail") == "down"
    assert step(m, "ok") == "up"


def test_ours_never_makes_down():
    m = MonitorState("up", 0, 0)
    for _ in range(10):
        step(m, "error")
    assert m.state == "unknown" and m.consecutive_failures == 0


def test_paused_and_maintenance_stay():
    for manual in ("paused", "maintenance"):
        m = MonitorState(manual, 0, 0)
        assert [step(m, o) for o in ("fail", "fail", "ok", "error")] == [None] * 4
        assert m.state == manual


async def test_flapping_through_the_database_gives_exactly_the_implied_changes(db):
    store = await add_store(db)
    [terminal] = await add_terminals(db, store, 1)
    [mid] = await add_monitors(
        db,
        [{"store_id": store, "terminal_id": terminal, "kind": "tcp", "target": "127.79.0.1:1"}],
        fail_threshold=3,
        success_threshold=2,
    )
    sequence = "ooffoffffooofoooeffffoo"
    t0 = utcnow()
    # In batches of varying size: several outcomes of one monitor in one batch are applied in order.
    outcomes = [
        CheckOutcome(
            mid,
            {"o": "ok", "f": "fail", "e": "error"}[c],
            t0 + timedelta(seconds=i),
            diagnosis=None if c == "o" else ("internal_error" if c == "e" else "tcp_refused"),
        )
        for i, c in enumerate(sequence)
    ]
    for chunk in (outcomes[:1], outcomes[1:5], outcomes[5:6], outcomes[6:15], outcomes[15:]):
        async with db.sessionmaker() as s:
            await apply_outcomes(s, chunk)
            await s.commit()
    assert await state_changes(db, mid) == expected_changes(sequence, 3, 2)
    async with db.sessionmaker() as s:
        assert await s.scalar(select(Monitor.state).where(Monitor.id == mid)) == "up"
        rows = len((await s.execute(select(CheckResult.id).where(CheckResult.monitor_id == mid))).all())
        days = (await s.execute(select(LatencyDay).where(LatencyDay.monitor_id == mid))).scalars().all()
        folded = sum(sum(Day.unpack(d.buckets, d.recent).counts) for d in days)  # plain successes
        kept = sum(len(Kept.unpack(d.kept).entries) for d in days)  # the rest that changed nothing
        assert rows + folded + kept == len(sequence)


async def test_terminal_and_store_status_follow_their_monitors(db):
    store = await add_store(db)
    t1, t2 = await add_terminals(db, store, 2)
    lan1, lan2, net = await add_monitors(
        db,
        [
            {"store_id": store, "terminal_id": t1, "kind": "tcp", "target": "127.79.0.1:1"},
            {"store_id": store, "terminal_id": t2, "kind": "tcp", "target": "127.79.0.2:1"},
            {"store_id": store, "kind": "dns", "target": "prodssl.protectedtransactions.com"},
        ],
        fail_threshold=1,
    )
    cloud = (
        await add_monitors(
            db,
            [{"store_id": store, "terminal_id": t1, "kind": "cloud", "target": "P400-1"}],
            fail_threshold=1,
        )
    )[0]

    async def apply(*pairs):
        async with db.sessionmaker() as s:
            await apply_outcomes(s, [CheckOutcome(m, o, utcnow(), diagnosis=d) for m, o, d in pairs])
            await s.commit()
        async with db.sessionmaker() as s:
            ts = dict((await s.execute(select(Terminal.id, Terminal.status))).all())
            clouds = dict((await s.execute(select(Terminal.id, Terminal.cloud_state))).all())
            st = await s.scalar(select(Store.status).where(Store.id == store))
        return ts[t1], ts[t2], clouds[t1], clouds[t2], st

    assert await apply((lan1, "ok", None), (lan2, "ok", None), (net, "ok", None), (cloud, "ok", None)) == (
        "up",
        "up",
        "connected",
        "not_enabled",
        "up",
    )
    assert await apply((cloud, "fail", "cloud_disconnected")) == (
        "down",
        "up",
        "disconnected",
        "not_enabled",
        "degraded",  # one of two terminals down: the store can still take cards
    )
    assert await apply((cloud, "error", "provider_rate_limited")) == (
        "unknown",
        "up",
        "unknown",
        "not_enabled",
        "unknown",
    )
    assert await apply((cloud, "ok", None), (net, "fail", "dns_nxdomain")) == (
        "down",
        "down",
        "connected",
        "not_enabled",
        "cannot_pay",
    )  # the store's network fails them all: the store cannot take cards
    assert await apply((net, "ok", None), (cloud, "fail", "cloud_not_enabled")) == (
        "down",
        "up",
        "not_enabled",
        "not_enabled",
        "degraded",
    )
    assert await apply((cloud, "ok", None)) == ("up", "up", "connected", "not_enabled", "up")
    async with db.sessionmaker() as s:
        since = await s.scalar(select(Terminal.status_since).where(Terminal.id == t1))
        seen = await s.scalar(select(Terminal.last_seen_at).where(Terminal.id == t1))
    assert since is not None and seen is not None
