"""Uptime history as CSV and XLSX: one row per terminal (or per store, or per region), then the
same figures per local day.

Fleet-sized exports never hold the fleet: terminals are computed a chunk at a time
(`uptime.iter_uptime`); summary rows go out as they come, per-day rows are spooled to a
temporary file (CSV) or to their own write-only sheet (XLSX) and follow. Per-store rows are
emitted when the next store starts (terminals come ordered by store); per-region rows, a
handful, at the end.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date, datetime
from typing import IO, TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncSession

from app.history.uptime import Figures, Period, ScopeKey, TerminalUptime, iter_uptime

if TYPE_CHECKING:
    from openpyxl.worksheet._write_only import WriteOnlyWorksheet

ROW_UNITS = ("terminal", "store", "region")
FIGURE_HEADER = [
    "up_s",
    "down_s",
    "unknown_s",
    "paused_maintenance_s",
    "uptime_pct",
    "outages",
    "longest_outage_s",
    "terminals",
]
ID_HEADER = {
    "terminal": ["poiid", "label", "store_code", "store_name", "region", "timezone"],
    "store": ["store_code", "store_name", "region", "timezone"],
    "region": ["region"],
}
XLSX_MAX_ROWS = 1_048_576

Cell = str | int | float | None  # one value of a CSV or XLSX row
Row = list[Cell]


def header(by: str, *, per_day: bool) -> list[str]:
    return ID_HEADER[by] + (["date"] if per_day else ["from", "to"]) + FIGURE_HEADER


def safe_text(value: Cell) -> Cell:
    """Text a spreadsheet would run as a formula gets a leading apostrophe (CSV injection)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def figure_cells(f: Figures) -> Row:
    pct = f.uptime_pct
    return [
        round(f.up, 3),
        round(f.down, 3),
        round(f.unknown, 3),
        round(f.paused, 3),
        "" if pct is None else pct,
        f.outages,
        round(f.longest_outage, 3),
        f.terminals,
    ]


def _period_cells(period: Period, row: TerminalUptime | None) -> Row:
    if period.first is not None and period.last is not None:
        return [period.first.isoformat(), period.last.isoformat()]
    start, end = period.window(None)  # a rolling window: the same instants in every timezone
    return [start.isoformat(timespec="seconds"), end.isoformat(timespec="seconds")]


@dataclass
class _Group:
    ids: Row
    total: Figures
    days: dict[date, Figures]


class RowBuilder:
    """Turns terminal figures, in store order, into summary and per-day rows of the chosen unit."""

    def __init__(self, by: str, period: Period) -> None:
        if by not in ROW_UNITS:
            raise ValueError(f"rows per {by!r}: expected one of {', '.join(ROW_UNITS)}")
        self.by, self.period = by, period
        self.current: object = None  # the key of the store being read
        self.groups: dict[object, _Group] = {}
        self.count = 0

    def _ids(self, r: TerminalUptime) -> tuple[object, Row]:
        t = r.terminal
        if self.by == "terminal":
            return t.id, [t.poiid, t.label, t.store_code, t.store_name, t.region, t.tz]
        if self.by == "store":
            return t.store_id, [t.store_code, t.store_name, t.region, t.tz]
        return t.region, [t.region]

    def feed(self, r: TerminalUptime) -> tuple[list[Row], list[Row]]:
        """Rows ready to write after this terminal: (summary rows, per-day rows)."""
        key, ids = self._ids(r)
        out: tuple[list[Row], list[Row]] = ([], [])
        if self.by != "region" and key != self.current:
            out = self._flush_all()
            self.current = key
        group = self.groups.get(key)
        if group is None:
            group = self.groups[key] = _Group(ids, Figures(), {})
        group.total.add(r.total)
        for d, f in r.days:
            day = group.days.get(d)
            if day is None:
                day = group.days[d] = Figures()
            day.add(f)
        return out

    def _flush_all(self) -> tuple[list[Row], list[Row]]:
        summary: list[Row] = []
        days: list[Row] = []
        for g in self.groups.values():
            ids = [safe_text(v) for v in g.ids]
            summary.append(ids + _period_cells(self.period, None) + figure_cells(g.total))
            for d in sorted(g.days):
                days.append([*ids, d.isoformat(), *figure_cells(g.days[d])])
        self.count += len(summary)
        self.groups = {}
        return summary, days

    def finish(self) -> tuple[list[Row], list[Row]]:
        return self._flush_all()


async def export_rows(
    session: AsyncSession,
    scope: str,
    key: ScopeKey,
    period: Period,
    *,
    by: str = "terminal",
    now: datetime | None = None,
    chunk: int = 2000,
) -> AsyncIterator[tuple[list[Row], list[Row]]]:
    builder = RowBuilder(by, period)
    async for row in iter_uptime(session, scope, key, period, now=now, chunk=chunk):
        summary, days = builder.feed(row)
        if summary or days:
            yield summary, days
    summary, days = builder.finish()
    if summary or days:
        yield summary, days


# --- CSV ----------------------------------------------------------------------------------------


def _csv_text(rows: list[Row] | list[list[str]]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\r\n").writerows(rows)
    return buf.getvalue()


async def csv_chunks(
    session: AsyncSession,
    scope: str,
    key: ScopeKey,
    period: Period,
    *,
    by: str = "terminal",
    title: str = "",
    now: datetime | None = None,
) -> AsyncIterator[str]:
    """The CSV text, piece by piece: a summary table, an empty line, then the per-day table
    (each with its own header). The per-day rows wait in a temporary file meanwhile."""
    yield _csv_text([header(by, per_day=False)])
    with tempfile.TemporaryFile("w+", encoding="utf-8", newline="") as spool:
        spool_writer = csv.writer(spool, lineterminator="\r\n")
        async for summary, days in export_rows(session, scope, key, period, by=by, now=now):
            yield _csv_text(summary)
            spool_writer.writerows(days)
        yield "\r\n" + _csv_text([header(by, per_day=True)])
        spool.seek(0)
        while block := spool.read(1 << 16):
            yield block


async def write_csv(
    session: AsyncSession,
    out: IO[str],
    scope: str,
    key: ScopeKey,
    period: Period,
    *,
    by: str = "terminal",
    title: str = "",
    now: datetime | None = None,
) -> None:
    async for text in csv_chunks(session, scope, key, period, by=by, title=title, now=now):
        out.write(text)


# --- XLSX ---------------------------------------------------------------------------------------


async def write_xlsx(
    session: AsyncSession,
    target: str | os.PathLike[str] | IO[bytes],
    scope: str,
    key: ScopeKey,
    period: Period,
    *,
    by: str = "terminal",
    title: str = "",
    now: datetime | None = None,
) -> None:
    """A workbook (write-only, rows streamed to disk): sheet "Summary" with one row per unit,
    sheet "Per day" (continued on "Per day 2", ... past Excel's row limit), sheet "About"."""
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.styles import Font

    wb = Workbook(write_only=True)
    bold = Font(bold=True)

    def head(ws: WriteOnlyWorksheet, names: list[str]) -> None:
        cells = []
        for n in names:
            c = WriteOnlyCell(ws, value=n)
            c.font = bold
            cells.append(c)
        ws.append(cells)

    summary_ws = wb.create_sheet("Summary")
    summary_ws.freeze_panes = "A2"
    head(summary_ws, header(by, per_day=False))
    day_sheets = [wb.create_sheet("Per day")]
    day_sheets[0].freeze_panes = "A2"
    head(day_sheets[0], header(by, per_day=True))
    day_rows = 1
    async for summary, days in export_rows(session, scope, key, period, by=by, now=now):
        for row in summary:
            summary_ws.append(row)
        for row in days:
            if day_rows >= XLSX_MAX_ROWS:
                ws = wb.create_sheet(f"Per day {len(day_sheets) + 1}")
                head(ws, header(by, per_day=True))
                day_sheets.append(ws)
                day_rows = 1
            day_sheets[-1].append(row)
            day_rows += 1
    about = wb.create_sheet("About")
    for name, value in (
        ("Report", title or scope),
        ("Scope", scope),
        ("Period", period.label()),
        ("Rows per", by),
        ("Uptime", "up / (up + down); unknown and paused/maintenance time are not downtime"),
        ("Days", "midnight in each store's timezone"),
    ):
        about.append([safe_text(name), safe_text(value)])
    wb.save(target)
