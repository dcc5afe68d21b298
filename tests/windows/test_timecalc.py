"""The time arithmetic of maintenance windows and trading hours (pure functions, no database)."""

from datetime import UTC, date, datetime

import pytest

from app.windows.timecalc import (
    clip,
    hhmm,
    is_trading,
    local_instant,
    mask_days,
    next_weekly_start,
    parse_hhmm,
    weekday_index,
    weekday_mask,
    weekly_occurrence,
    zone,
)

AMS = zone("Europe/Amsterdam")
NYC = zone("America/New_York")
SUN = weekday_mask(["sun"])
SAT = weekday_mask(["sat"])
MON = weekday_mask(["mon"])


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_parse_and_format():
    assert parse_hhmm("22:00") == 1320
    assert parse_hhmm("7:05") == 425
    assert hhmm(1320) == "22:00"
    for bad in ("24:00", "12:60", "noon", "", "12"):
        with pytest.raises(ValueError):
            parse_hhmm(bad)
    assert weekday_index("Monday") == 0 and weekday_index("sun") == 6 and weekday_index(3) == 3
    for bad in ("mo", "funday", "monxyz", 7, -1):
        with pytest.raises(ValueError):
            weekday_index(bad)
    assert mask_days(weekday_mask(["fri", "mon", "sunday"])) == ["mon", "fri", "sun"]
    with pytest.raises(ValueError, match="unknown time zone"):
        zone("Mars/Olympus")


def test_weekly_window_crossing_midnight():
    # Sunday 29 November 2026 22:00 CET (UTC+1) for 8 hours: to Monday 06:00 local.
    rule = (SUN, 22 * 60, 8 * 60)
    assert weekly_occurrence(utc(2026, 11, 29, 20, 59), AMS, *rule) is None
    span = weekly_occurrence(utc(2026, 11, 29, 21, 0), AMS, *rule)
    assert span == (utc(2026, 11, 29, 21), utc(2026, 11, 30, 5))
    # After midnight local (Monday), the Sunday occurrence still covers it.
    assert weekly_occurrence(utc(2026, 11, 30, 4, 59), AMS, *rule) == span
    assert weekly_occurrence(utc(2026, 11, 30, 5, 0), AMS, *rule) is None
    # Not on Saturday.
    assert weekly_occurrence(utc(2026, 11, 28, 21, 30), AMS, *rule) is None


def test_weekly_window_on_dst_nights_lasts_its_duration():
    rule = (SAT, 22 * 60, 8 * 60)
    # Spring forward (Sunday 29 March 2026, 02:00 CET -> 03:00 CEST): 8 hours, to 07:00 CEST.
    start, end = weekly_occurrence(utc(2026, 3, 28, 23), AMS, *rule)
    assert start == utc(2026, 3, 28, 21) and end == utc(2026, 3, 29, 5)
    assert end.astimezone(AMS).hour == 7
    # Fall back (Sunday 25 October 2026, 03:00 CEST -> 02:00 CET): 8 hours, to 05:00 CET.
    start, end = weekly_occurrence(utc(2026, 10, 24, 23), AMS, *rule)
    assert start == utc(2026, 10, 24, 20) and end == utc(2026, 10, 25, 4)
    assert end.astimezone(AMS).hour == 5


def test_local_times_the_clocks_skip_or_repeat():
    # 02:30 does not exist in Amsterdam on 29 March 2026: read with the offset before (CET), 03:30 CEST.
    t = local_instant(date(2026, 3, 29), 150, AMS)
    assert t == utc(2026, 3, 29, 1, 30)
    assert t.astimezone(AMS).strftime("%H:%M") == "03:30"
    # 02:30 happens twice on 25 October 2026: the first (CEST).
    assert local_instant(date(2026, 10, 25), 150, AMS) == utc(2026, 10, 25, 0, 30)
    # A weekly window starting at a skipped time still lasts its duration.
    span = weekly_occurrence(utc(2026, 3, 29, 1, 45), AMS, SUN, 150, 60)
    assert span == (utc(2026, 3, 29, 1, 30), utc(2026, 3, 29, 2, 30))


def test_the_same_rule_in_amsterdam_and_new_york():
    rule = (MON, 9 * 60, 60)  # Mondays 09:00-10:00 local
    # Monday 30 November 2026: Amsterdam UTC+1, New York UTC-5.
    assert weekly_occurrence(utc(2026, 11, 30, 8, 30), AMS, *rule) == (
        utc(2026, 11, 30, 8),
        utc(2026, 11, 30, 9),
    )
    assert weekly_occurrence(utc(2026, 11, 30, 8, 30), NYC, *rule) is None
    assert weekly_occurrence(utc(2026, 11, 30, 14, 30), NYC, *rule) == (
        utc(2026, 11, 30, 14),
        utc(2026, 11, 30, 15),
    )
    assert weekly_occurrence(utc(2026, 11, 30, 14, 30), AMS, *rule) is None
    # Monday 16 March 2026: New York has moved to EDT (UTC-4), Amsterdam not yet (UTC+1).
    assert weekly_occurrence(utc(2026, 3, 16, 13, 15), NYC, *rule) == (
        utc(2026, 3, 16, 13),
        utc(2026, 3, 16, 14),
    )
    assert weekly_occurrence(utc(2026, 3, 16, 8, 15), AMS, *rule) == (
        utc(2026, 3, 16, 8),
        utc(2026, 3, 16, 9),
    )
    # New York's own change (Sunday 8 March 2026, 02:00 EST -> 03:00 EDT): Sunday 01:00 for 3 hours.
    span = weekly_occurrence(utc(2026, 3, 8, 7, 30), NYC, SUN, 60, 180)
    assert span == (utc(2026, 3, 8, 6), utc(2026, 3, 8, 9))
    assert span[1].astimezone(NYC).strftime("%H:%M") == "05:00"


def test_long_and_overlapping_recurrences():
    every_day = weekday_mask(range(7))
    # Every day 20:00 for 30 hours: occurrences overlap; the one ending last is reported.
    span = weekly_occurrence(utc(2026, 12, 2, 3), AMS, every_day, 20 * 60, 30 * 60)
    assert span is not None and span[0] == utc(2026, 12, 1, 19)
    # Friday 18:00 for 3 days covers Monday morning.
    fri = weekday_mask(["fri"])
    assert weekly_occurrence(utc(2026, 11, 30, 10), AMS, fri, 18 * 60, 3 * 24 * 60) == (
        utc(2026, 11, 27, 17),
        utc(2026, 11, 30, 17),
    )
    assert weekly_occurrence(utc(2026, 11, 30, 10), AMS, 0, 0, 60) is None


def test_next_start_and_series_bounds():
    after = utc(2026, 11, 28, 12)  # a Saturday
    assert next_weekly_start(after, AMS, SUN, 22 * 60, 60) == (utc(2026, 11, 29, 21), utc(2026, 11, 29, 22))
    assert next_weekly_start(after, AMS, SAT, 11 * 60, 60) == (utc(2026, 12, 5, 10), utc(2026, 12, 5, 11))
    span = (utc(2026, 11, 29, 21), utc(2026, 11, 30, 5))
    at = utc(2026, 11, 30, 2)
    assert clip(span, None, None, at) == span
    assert clip(span, None, utc(2026, 11, 30, 3), at) == (span[0], utc(2026, 11, 30, 3))
    assert clip(span, None, utc(2026, 11, 30, 1), at) is None  # the series was ended before
    assert clip(span, utc(2026, 12, 1), None, at) is None  # the series starts later


def test_trading_hours():
    weekdays = {d: (9 * 60, 18 * 60) for d in range(5)}
    hours = {**weekdays, 5: (10 * 60, 16 * 60), 6: None}
    # Tuesday 1 December 2026 in Amsterdam (UTC+1).
    assert is_trading(utc(2026, 12, 1, 8), AMS, hours)  # 09:00 local
    assert not is_trading(utc(2026, 12, 1, 7, 59), AMS, hours)
    assert not is_trading(utc(2026, 12, 1, 17), AMS, hours)  # 18:00 local: closed
    assert not is_trading(utc(2026, 11, 29, 12), AMS, hours)  # Sunday: closed all day
    assert is_trading(utc(2026, 11, 29, 12), AMS, {})  # no hours set: always trading
    # The same instant, New York: 03:00 local, closed.
    assert not is_trading(utc(2026, 12, 1, 8), NYC, hours)
    assert is_trading(utc(2026, 12, 1, 14), NYC, hours)


def test_trading_hours_past_midnight_and_round_the_clock():
    # Friday 18:00 to Saturday 02:00; Saturday closed; Sunday round the clock.
    hours = {4: (18 * 60, 2 * 60), 5: None, 6: (0, 0)}
    assert is_trading(utc(2026, 11, 27, 22), AMS, hours)  # Friday 23:00
    assert is_trading(utc(2026, 11, 28, 0, 59), AMS, hours)  # Saturday 01:59
    assert not is_trading(utc(2026, 11, 28, 1), AMS, hours)  # Saturday 02:00
    assert is_trading(utc(2026, 11, 29, 3), AMS, hours)  # Sunday
    assert not is_trading(utc(2026, 11, 30, 3), AMS, hours)  # Monday: no row, closed
    # Across the fall-back night the hours are wall-clock: closed from 02:00 summer time (the first 02:00).
    sat = {5: (18 * 60, 2 * 60)}
    assert is_trading(utc(2026, 10, 24, 23, 59), AMS, sat)  # 01:59 CEST
    assert not is_trading(utc(2026, 10, 25, 0, 0), AMS, sat)  # 02:00 CEST
    assert not is_trading(utc(2026, 10, 25, 1, 30), AMS, sat)  # 02:30 CET, the second pass
    # Spring forward: Saturday 22:00 to Sunday 03:00 is 4 hours that night.
    late = {5: (22 * 60, 3 * 60)}
    assert is_trading(utc(2026, 3, 29, 0, 59), AMS, late)  # 01:59 CET
    assert not is_trading(utc(2026, 3, 29, 1, 0), AMS, late)  # 03:00 CEST
