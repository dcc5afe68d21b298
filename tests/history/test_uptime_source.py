"""Totals read the stored days unless the setting is turned off; the worker keeps them filled
only while they are read."""

from __future__ import annotations

from app.config import Settings
from app.db import Database
from app.history.daily import daily_uptime_jobs, stored_uptime, uptime_source
from app.history.uptime import uptime_for_terminals


def test_stored_days_are_read_and_filled_unless_turned_off(tmp_path):
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
    on = Settings(database_url=database.url)
    off = on.model_copy(update={"stored_daily_uptime": False})
    assert uptime_source(off) is uptime_for_terminals
    assert daily_uptime_jobs(off, database) == []
    assert uptime_source(on) is stored_uptime
    assert [job.name for job in daily_uptime_jobs(on, database)] == ["daily-uptime"]
