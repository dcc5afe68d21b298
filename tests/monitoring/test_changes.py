"""Changes published once per transaction through the relay, on both databases: NOTIFY on
PostgreSQL (ids only, each message in one NOTIFY under the 8,000-byte limit), in process on
SQLite; nothing on rollback."""

from __future__ import annotations

import asyncio
import json

from app.db import Database
from app.monitoring.changes import MAX_PAYLOAD, Changes, listen, note_changes
from app.relay import Relay


def test_messages_stay_under_the_notify_limit_and_carry_every_id():
    changes = Changes(frozenset(range(1_000_000, 1_012_000)), frozenset(range(5, 3_005)))
    messages = changes.messages()
    assert len(messages) > 1
    assert all(len(json.dumps(m, separators=(",", ":"))) <= MAX_PAYLOAD for m in messages)
    back = Changes()
    for m in messages:
        back |= Changes.of(m)
    assert back == changes
    assert Changes(frozenset({1}), frozenset({2})).messages() == [{"t": [1], "s": [2]}]


async def _heard(db: Database, work) -> list[Changes]:
    """What a listener of this database hears from `work(session)` and its commit."""
    heard: list[Changes] = []
    arrived = asyncio.Event()

    def deliver(changes: Changes) -> None:
        heard.append(changes)
        arrived.set()

    relay = Relay(db)
    listen(relay, deliver)
    try:
        await asyncio.wait_for(relay.start(), 20)
        await work()
        # A marker transaction after it: once the marker is heard, so is anything before it.
        async with db.sessionmaker() as session:
            note_changes(session, [], [-1])
            await session.commit()
        async with asyncio.timeout(20):
            while not any(-1 in c.stores for c in heard):
                arrived.clear()
                await arrived.wait()
    finally:
        await relay.close()
    # (A resync says the listener connected only after trying again: not a publication.)
    return [c for c in heard if -1 not in c.stores and not (c.resync and not c.terminals and not c.stores)]


async def test_one_publication_per_transaction_with_everything_noted_in_it(db):
    big = list(range(1, 5001))

    async def work() -> None:
        async with db.sessionmaker() as session:
            note_changes(session, [1, 2], [7])
            note_changes(session, big, [8])  # noted twice, published together
            await session.commit()

    heard = await _heard(db, work)
    merged = Changes()
    for c in heard:
        merged |= c
    assert merged == Changes(frozenset(big), frozenset({7, 8}))
    # One batch: in process one delivery; NOTIFY as many as its payload limit needs.
    assert len(heard) == (1 if db.dialect == "sqlite" else len(merged.messages()))


async def test_nothing_is_published_when_the_transaction_rolls_back(db):
    async def work() -> None:
        async with db.sessionmaker() as session:
            note_changes(session, [1], [1])
            await session.rollback()
        async with db.sessionmaker() as session:  # closed without commit
            note_changes(session, [2], [2])

    assert await _heard(db, work) == []
