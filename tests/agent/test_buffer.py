"""The agent's local queue: seqs, acks, bounds (count and age), what survives a restart."""

from __future__ import annotations

import json

import pytest

from app.agent.buffer import Buffer, StateDirBusy


class Clock:
    def __init__(self, now: float = 1_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def result(monitor_id: int, n: int = 0) -> dict:
    return {"monitor_id": monitor_id, "checked_at": f"2024-05-01T10:00:{n:02d}+00:00", "outcome": "ok"}


@pytest.fixture
async def opened(tmp_path):
    buffers: list[Buffer] = []

    async def open_buffer(**kwargs) -> Buffer:
        buffer = Buffer(tmp_path / "state", **kwargs)
        await buffer.open()
        buffers.append(buffer)
        return buffer

    yield open_buffer
    for buffer in buffers:
        await buffer.close()


async def test_seqs_follow_the_order_results_are_added_and_acks_delete(opened):
    buffer = await opened()
    assert await buffer.add([result(1, 0), result(2, 1)]) == [1, 2]
    assert await buffer.add([result(1, 2)]) == [3]
    batch = await buffer.batch(10, 1 << 20)
    assert [(p.seq, p.monitor_id) for p in batch] == [(1, 1), (2, 2), (3, 1)]
    assert json.loads(batch[0].json) == {"seq": 1, **result(1, 0)}
    assert await buffer.ack(2) == 2
    assert buffer.pending == 1
    assert [p.seq for p in await buffer.batch(10, 1 << 20)] == [3]


async def test_a_batch_is_bounded_by_count_and_bytes_but_never_empty(opened):
    buffer = await opened()
    await buffer.add([result(1, i) for i in range(10)])
    assert len(await buffer.batch(4, 1 << 20)) == 4
    one = len((await buffer.batch(1, 1 << 20))[0].json)
    assert len(await buffer.batch(10, one * 3 + 3)) == 3
    assert len(await buffer.batch(10, 1)) == 1


async def test_instance_seq_dropped_and_config_survive_a_restart(opened, tmp_path):
    first = await opened()
    await first.add([result(1), result(1)])
    await first.ack(1)
    await first.save_config({"monitors": [{"id": 1}]}, '"abc"')
    instance, dropped = first.instance, first.dropped
    await first.close()

    again = await opened()
    assert again.instance == instance and len(instance) == 32
    assert again.pending == 1 and again.dropped == dropped
    assert await again.add([result(1)]) == [3], "the sequence goes on, even past acked results"
    assert await again.load_config() == ({"monitors": [{"id": 1}]}, '"abc"')


async def test_a_second_agent_on_the_same_state_dir_is_refused(opened, tmp_path):
    await opened()
    with pytest.raises(StateDirBusy, match="another termpulse agent"):
        await opened()


async def test_a_full_queue_drops_the_oldest_and_counts_them(opened):
    buffer = await opened(max_count=5)
    await buffer.add([result(1, i) for i in range(3)])
    await buffer.add([result(1, i) for i in range(3, 8)])
    assert buffer.pending == 5 and buffer.dropped == 3
    assert [p.seq for p in await buffer.batch(10, 1 << 20)] == [4, 5, 6, 7, 8]
    await buffer.add([result(1, 9)])
    assert buffer.dropped == 4 and (await buffer.batch(1, 1 << 20))[0].seq == 5


async def test_results_older_than_the_age_bound_are_dropped_and_counted(opened):
    clock = Clock()
    buffer = await opened(max_age_s=3600, clock=clock)
    await buffer.add([result(1, 0), result(1, 1)])
    clock.now += 1800
    await buffer.add([result(1, 2)])
    clock.now += 1801  # the first two are now older than an hour, the third is not
    assert await buffer.prune_age() == 2
    assert buffer.pending == 1 and buffer.dropped == 2
    clock.now += 1900  # the third is now too old as well
    await buffer.add([result(1, 3)])  # add() prunes too (at most once a minute)
    assert buffer.dropped == 3 and [p.seq for p in await buffer.batch(10, 1 << 20)] == [4]


async def test_an_ack_beyond_our_sequence_moves_it_on(opened):
    buffer = await opened()
    await buffer.add([result(1)])
    assert await buffer.ack(40) == 1
    assert await buffer.add([result(1)]) == [41]


async def test_results_of_monitors_no_longer_ours_can_be_dropped(opened):
    buffer = await opened()
    await buffer.add([result(1), result(2), result(3), result(2)])
    assert await buffer.drop_monitors_except({1, 3}, "moved") == 2
    assert [p.monitor_id for p in await buffer.batch(10, 1 << 20)] == [1, 3]
    assert buffer.dropped == 2
