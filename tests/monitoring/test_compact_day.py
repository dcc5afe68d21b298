"""A folded day changed in place: counts, latency means and the recent ones as if unpacked,
added to and packed each time (what the writer does once per batch)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from app.monitoring.compact import BUCKET_S, RECENT, Day, plain_buckets


def test_adding_in_place_keeps_counts_means_and_the_newest_recent_in_time_order():
    start = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)
    day = Day.empty()
    latencies = [10.0, 20.0, None, 30.0, float("nan")]
    for i, ms in enumerate(latencies):
        day = Day.unpack(**day.packed())  # a batch each: the stored bytes are the only state
        day.add(start + timedelta(seconds=i), ms)
    late = start - timedelta(seconds=BUCKET_S)  # an agent's buffered result, one bucket earlier
    day.add(late, 5.0)
    b = (10 * 3600) // BUCKET_S
    assert day.counts[b] == 5 and day.counts[b - 1] == 1 and sum(day.counts) == 6
    assert day.timed[b] == 3 and day.means[b] == 20.0 and day.means[b - 1] == 5.0
    assert [t for t, _ms in day.recent] == sorted(t for t, _ms in day.recent)
    assert day.recent[0] == (late.timestamp(), 5.0) and math.isnan(day.recent[3][1])

    for i in range(RECENT + 5):
        day.add(start + timedelta(minutes=1, seconds=i), 1.0)
    assert len(day.recent) == RECENT
    assert day.recent[-1][0] == (start + timedelta(minutes=1, seconds=RECENT + 4)).timestamp()


async def test_plain_buckets_are_those_starting_in_the_window_whatever_its_edges():
    """Only the buckets of the window are read (an hour's rollup: 12 of a day's 288); the edges
    as before: a bucket counts when its start is in [start, end), on either day of a window
    across midnight."""
    d0 = datetime(2026, 11, 27, tzinfo=UTC)
    days = {(7, d0.date()): Day.empty(), (7, (d0 + timedelta(days=1)).date()): Day.empty()}
    seconds = (0, 299, 300, 600, 3599, 3600, 3900, 86100, 86399, 86400, 90000)
    added = [d0 + timedelta(seconds=s) for s in seconds]
    for at in added:
        days[(7, at.date())].add(at, 12.0)
    us = timedelta(microseconds=1)
    windows = [
        (d0 + timedelta(hours=1), d0 + timedelta(hours=2)),
        (d0, d0 + timedelta(hours=1)),
        (d0 + timedelta(seconds=300) - us, d0 + timedelta(seconds=600) + us),
        (d0 + timedelta(seconds=300) + us, d0 + timedelta(seconds=3600)),
        (d0 + timedelta(hours=23), d0 + timedelta(hours=26)),  # across midnight
        (d0 - timedelta(hours=2), d0 + timedelta(days=3)),
        (d0 + timedelta(hours=5), d0 + timedelta(hours=5)),
    ]
    for start, end in windows:
        got = await plain_buckets(None, [7], start, end, days)  # type: ignore[arg-type]
        bucket_of = {at - timedelta(seconds=(at - d0).total_seconds() % BUCKET_S) for at in added}
        expected = sorted(b for b in bucket_of if start <= b < end)
        assert [b.start for b in got] == expected, (start, end)
        for b in got:
            assert b.count == sum(1 for at in added if b.start <= at < b.start + timedelta(seconds=BUCKET_S))
            assert b.mean_ms == 12.0
