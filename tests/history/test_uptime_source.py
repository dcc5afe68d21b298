"""Long reports read the stored days only when the setting asks (they measured slower than the
exact computation with few state changes per terminal); the worker then keeps them filled."""

from __future__ import annotations

from app.config import Settings
from app.db import Database
from app.history.daily import daily_uptime_jobs, stored_uptime, uptime_source
from app.history.uptime import uptime_for_terminals


def test_stored_days_are_read_and_filled_only_when_asked(tmp_path):
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
    off = Settings(database_url=database.url)
    assert uptime_source(off) is uptime_for_terminals
    assert daily_uptime_jobs(off, database) == []
    on = off.model_copy(update={"stored_daily_uptime": True})
    assert uptime_source(on) is stored_uptime
    assert [job.name for job in daily_uptime_jobs(on, database)] == ["daily-uptime"]
