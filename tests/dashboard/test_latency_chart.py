"""The terminal page's latency chart: buckets on the clock, labels that say the real span."""

from __future__ import annotations

from datetime import UTC, datetime

from app.dashboard.routes import latency_chart


def test_buckets_and_labels_are_the_real_quarter_hours():
    at = datetime(2026, 11, 28, 3, 0, tzinfo=UTC)
    points = [(at, 10.0), (at.replace(minute=15), 20.0)]  # checks made at 03:05-03:22
    now = datetime(2026, 11, 28, 3, 22, tzinfo=UTC)
    chart = latency_chart(points, 900, now)
    assert chart is not None
    assert [b["title"] for b in chart["buckets"]] == [
        "03:00\u201303:15 UTC · 10.0 ms (mean)",
        "03:15\u201303:22 UTC · 20.0 ms (mean)",  # the last bucket ends now
    ]
    assert chart["start"] == "28 Nov 03:00 UTC" and chart["end"] == "28 Nov 03:22 UTC"
    assert chart["span"] == "22 min" and chart["bucket_min"] == 15
    # x: each bucket's middle on the time axis, inside the box; the y labels are data, not SVG text.
    xs = [b["cx"] for b in chart["buckets"]]
    assert 0 < xs[0] < xs[1] < chart["w"]
    assert [t["label"] for t in chart["ticks"]] == ["0", "11", "22"]


def test_a_day_of_buckets_says_hours():
    at = datetime(2026, 11, 27, 4, 0, tzinfo=UTC)
    points = [(datetime.fromtimestamp(at.timestamp() + 900 * i, UTC), 5.0) for i in range(96)]
    chart = latency_chart(points, 900, datetime(2026, 11, 28, 4, 0, tzinfo=UTC))
    assert chart is not None and chart["span"] == "24 hours" and chart["n"] == 96
    assert chart["buckets"][0]["title"].startswith("27 Nov 04:00\u201304:15 UTC")
