"""The incidents export (CSV and XLSX) beside the uptime export: outage evidence for an ISP
or a provider. One row per incident: store, what failed, when (UTC and the store's local
time), how long, who acknowledged it, and the fleet incident it was part of."""

from __future__ import annotations

import os
from datetime import datetime
from typing import IO
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy.ext.asyncio import AsyncSession

from app.alerts.messages import diagnosis_of
from app.alerts.queries import Filters, IncidentRow, list_incidents
from app.history.export import safe_text

HEADER = [
    "Incident",
    "Kind",
    "State",
    "Store",
    "Store name",
    "Region",
    "Title",
    "Diagnosis",
    "Opened (UTC)",
    "Opened (store local time)",
    "Resolved (UTC)",
    "Duration (min)",
    "Terminals down",
    "Terminals",
    "Stores (fleet)",
    "Part of fleet incident",
    "Acknowledged by",
    "Acknowledged at (UTC)",
    "Silenced",
]


def _local(at: datetime, tz: str | None) -> str:
    try:
        zone = ZoneInfo(tz or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo("UTC")
    return f"{at.astimezone(zone):%Y-%m-%d %H:%M:%S}"


def _iso(at: datetime | None) -> str:
    return f"{at:%Y-%m-%d %H:%M:%S}" if at else ""


def row_cells(r: IncidentRow) -> list[object]:
    d = diagnosis_of(r.cause, None)
    return [
        r.id,
        r.kind,
        r.state,
        safe_text(r.store_code or ""),
        safe_text(r.store_name or ""),
        safe_text(r.region or ""),
        safe_text(r.title),
        d.title if d else "",
        _iso(r.opened_at),
        _local(r.opened_at, r.timezone),
        _iso(r.resolved_at),
        round(r.duration_s / 60, 1),
        r.terminals_down,
        r.terminals_total,
        r.stores_count,
        r.parent_id or "",
        safe_text(r.acked_by or ""),
        _iso(r.acked_at),
        safe_text(r.silenced or ""),
    ]


async def incident_rows(session: AsyncSession, filters: Filters, now: datetime) -> list[list[object]]:
    rows = await list_incidents(session, filters, now, limit=None)
    header: list[object] = list(HEADER)
    return [header] + [row_cells(r) for r in rows]


def write_xlsx(
    target: str | os.PathLike[str] | IO[bytes], rows: list[list[object]], filters: Filters
) -> None:
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.styles import Font

    wb = Workbook(write_only=True)
    ws = wb.create_sheet("Incidents")
    ws.freeze_panes = "A2"
    bold = Font(bold=True)
    head = []
    for name in rows[0]:
        cell = WriteOnlyCell(ws, value=str(name))
        cell.font = bold
        head.append(cell)
    ws.append(head)
    for row in rows[1:]:
        ws.append(row)
    about = wb.create_sheet("About")
    for name, value in (
        ("Report", "Incidents"),
        ("State", filters.state),
        ("Kind", filters.kind or "all"),
        ("Store", filters.q or "all"),
        ("Region", filters.region or "all"),
        ("Period", f"open now, and resolved within the last {filters.days} days"),
        ("Times", "UTC, and the store's local time where it has one"),
    ):
        about.append([name, safe_text(value)])
    wb.save(target)
