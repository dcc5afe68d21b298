"""Store status rules ("can we take cards?") and not-monitored terminals: the pure rules, the
reasons in words, and the derived rows as the state machine writes them."""

from __future__ import annotations

import pytest
from sqlalchemy import select, update

from app.dashboard.reasons import Problem, store_reason
from app.db import utcnow
from app.inventory.models import Monitor, Store, Terminal
from app.monitoring.status import reconcile_status, refresh_status, store_status, terminal_status
from app.vocabulary import State, StoreStatus
from tests.monitoring.helpers import add_monitors, add_store, add_terminals

UP, DOWN, UNKNOWN, PAUSED, MAINT, NONE = (
    State.UP,
    State.DOWN,
    State.UNKNOWN,
    State.PAUSED,
    State.MAINTENANCE,
    State.NONE,
)


@pytest.mark.parametrize(
    "network,terminals,expected",
    [
        # The store network cannot reach the processor: no terminal can pay, whatever they say.
        ([DOWN, UP], [UP, UP, UP], StoreStatus.CANNOT_PAY),
        ([DOWN], [NONE, NONE], StoreStatus.CANNOT_PAY),
        # Every monitored terminal down: cannot take cards; some: degraded.
        ([UP], [DOWN, DOWN, DOWN, DOWN], StoreStatus.CANNOT_PAY),
        ([UP], [DOWN, UP, UP, UP, UP, UP, UP], StoreStatus.DEGRADED),
        ([], [DOWN, UNKNOWN], StoreStatus.DEGRADED),
        ([], [DOWN, NONE], StoreStatus.CANNOT_PAY),  # the only monitored terminal is down
        ([], [DOWN, PAUSED], StoreStatus.CANNOT_PAY),  # paused ones are not counted either way
        # All up (and its network): up; anything we could not tell: unknown.
        ([UP, UP], [UP, UP], StoreStatus.UP),
        ([], [UP, NONE], StoreStatus.UP),
        ([UP], [UP, UNKNOWN], StoreStatus.UNKNOWN),
        ([UNKNOWN], [UP], StoreStatus.UNKNOWN),
        # Nothing monitored: never up because of network checks alone.
        ([UP, UP], [NONE, NONE], StoreStatus.NONE),
        ([], [], StoreStatus.NONE),
        ([UP], [], StoreStatus.NONE),
        ([UNKNOWN], [NONE], StoreStatus.UNKNOWN),
        # Set by people.
        ([MAINT, MAINT], [MAINT, MAINT], StoreStatus.MAINTENANCE),
        ([MAINT], [DOWN], StoreStatus.MAINTENANCE),
        ([], [MAINT, PAUSED], StoreStatus.MAINTENANCE),
        ([PAUSED], [PAUSED, NONE], StoreStatus.PAUSED),
    ],
)
def test_store_status_rules(network, terminals, expected):
    assert store_status(network, terminals) == expected


def test_terminal_with_nothing_of_its_own_is_not_monitored():
    assert terminal_status([], [UP, UP]) == State.NONE
    assert terminal_status([], [DOWN]) == State.NONE
    assert terminal_status([UP], [UP]) == State.UP
    assert terminal_status([UP], [DOWN]) == State.DOWN  # its store's network takes it down


def test_store_status_words():
    assert StoreStatus.CANNOT_PAY.word == "Cannot take cards"
    assert StoreStatus.NONE.word == "Not monitored"
    assert State.NONE.word == "Not monitored"
    worst_first = sorted(StoreStatus, key=lambda s: s.severity)
    assert worst_first[:3] == [StoreStatus.CANNOT_PAY, StoreStatus.DEGRADED, StoreStatus.UNKNOWN]


@pytest.mark.parametrize(
    "problems,expected",
    [
        (
            [Problem(None, "tcp", "temterminalsnar01.icloud.ingenico.com:7003", DOWN, "tcp_timeout")],
            "Port 7003 blocked",
        ),
        (
            [
                Problem(None, "tcp", "prodssl.protectedtransactions.com:443", DOWN, "dns_nxdomain"),
                Problem(None, "dns", "prodssl.protectedtransactions.com", DOWN, "dns_nxdomain"),
            ],
            "DNS failing",
        ),
        (
            [
                Problem(1, "paynt_epos", "h:1", DOWN, "http_401"),
                Problem(2, "paynt_epos", "h:2", DOWN, "http_401"),
            ],
            "2 terminals unpaired",
        ),
        ([Problem(1, "cloud", "P-1", DOWN, "cloud_disconnected")], "1 terminal: cloud disconnected"),
        ([Problem(1, "tcp", "h:1", UNKNOWN, "agent_offline")], "Unknown: store agent offline"),
    ],
)
def test_store_reason_in_words(problems, expected):
    reason = store_reason(StoreStatus.DEGRADED, problems)
    assert reason is not None and reason.text == expected


def test_store_reason_for_a_store_with_nothing_checked():
    reason = store_reason(StoreStatus.NONE, [], total=3)
    assert reason is not None and reason.text == "Nothing checked on its terminals"
    assert store_reason(StoreStatus.UP, [], total=3) is None


async def test_derived_rows(db):
    """A terminal without monitors of its own is not monitored whatever its store's network
    says; the store follows the shop's rule; the reconcile job repairs rows written before."""
    store_id = await add_store(db, "S-1")
    [watched, bare] = await add_terminals(db, store_id, 2)
    own = await add_monitors(
        db, [{"store_id": store_id, "terminal_id": watched, "kind": "tcp", "target": "h:1"}]
    )
    net = await add_monitors(db, [{"store_id": store_id, "kind": "dns", "target": "processor.example"}])
    now = utcnow()
    async with db.sessionmaker() as s:
        await s.execute(update(Monitor).where(Monitor.id.in_(own + net)).values(state=UP))
        await refresh_status(s, now, network_changed_store_ids=[store_id])
        await s.commit()
        statuses = dict((await s.execute(select(Terminal.id, Terminal.status))).all())
        assert statuses == {watched: UP, bare: NONE}
        assert await s.scalar(select(Store.status)) == StoreStatus.UP

        await s.execute(update(Monitor).where(Monitor.id.in_(own)).values(state=DOWN))
        await refresh_status(s, now, terminal_ids=[watched])
        await s.commit()
        assert await s.scalar(select(Store.status)) == StoreStatus.CANNOT_PAY  # its only monitored terminal

        # Rows from before: a bare terminal marked up, a store "down" -> repaired by the job.
        await s.execute(update(Terminal).where(Terminal.id == bare).values(status=UP))
        await s.execute(update(Store).values(status=DOWN))
        await s.commit()
        changed = await reconcile_status(s, now)
        await s.commit()
        assert changed["terminals"] >= 1 and changed["stores"] == 1
        assert await s.scalar(select(Terminal.status).where(Terminal.id == bare)) == NONE
        assert await s.scalar(select(Store.status)) == StoreStatus.CANNOT_PAY
        assert await reconcile_status(s, now) == {"terminals": 0, "stores": 0}


def test_history_counts_no_time_before_a_terminal_had_a_check_of_its_own():
    """Its LAN check added at t=10 (none before); its store's DNS check up all along: the time
    before is not monitored, not up (the live status's rule, in history)."""
    from app.history.uptime import combined_segments

    own = ("none", [(10.0, "up")])
    network = ("up", [])
    assert combined_segments([own, network], 0.0, 30.0, own=1) == [(0.0, 10.0, "none"), (10.0, 30.0, "up")]
    # Without the own count (a store-level view), the network's state is the terminal's.
    assert combined_segments([own, network], 0.0, 30.0) == [(0.0, 30.0, "up")]
