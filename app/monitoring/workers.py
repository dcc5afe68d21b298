"""Checking workers as the status page sees them: each worker writes a heartbeat with its
figures every few seconds (`beat`); one silent for FORGET_AFTER is forgotten."""

from __future__ import annotations

import os
import socket
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from app import __version__
from app.db import dialect_of
from app.monitoring.models import WorkerBeat

BEAT_EVERY_S = 5.0
SILENT_AFTER = timedelta(seconds=3 * BEAT_EVERY_S)  # no heartbeat this long: not running
FORGET_AFTER = timedelta(days=1)


async def beat(
    session: AsyncSession,
    worker_id: str,
    started_at: datetime,
    figures: dict[str, Any],
    now: datetime,
    *,
    stopped: bool = False,
) -> None:
    """Upsert this worker's row; the caller commits. Old silent workers are forgotten."""
    values = {
        "id": worker_id,
        "host": socket.gethostname()[:200],
        "pid": os.getpid(),
        "version": __version__,
        "started_at": started_at,
        "heartbeat_at": now,
        "stopped_at": now if stopped else None,
        "figures": figures,
    }
    insert = pg_insert if dialect_of(session) == "postgresql" else sqlite_insert
    stmt = insert(WorkerBeat).values(values)
    changed = {k: stmt.excluded[k] for k in ("heartbeat_at", "stopped_at", "figures", "version")}
    await session.execute(stmt.on_conflict_do_update(index_elements=["id"], set_=changed))
    await session.execute(delete(WorkerBeat).where(WorkerBeat.heartbeat_at < now - FORGET_AFTER))


async def workers(session: AsyncSession) -> list[WorkerBeat]:
    """Every worker heard from in the last day, running ones first."""
    rows = (await session.scalars(select(WorkerBeat).order_by(WorkerBeat.heartbeat_at.desc()))).all()
    return list(rows)


def is_running(worker: WorkerBeat, now: datetime) -> bool:
    return worker.stopped_at is None and now - worker.heartbeat_at <= SILENT_AFTER
