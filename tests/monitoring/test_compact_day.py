"""A folded day changed in place: counts, latency means and the recent ones as if unpacked,
added to and packed each time (what the writer does once per batch)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from app.monitoring.compact import BUCKET_S, RECENT, Day


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
