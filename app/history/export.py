"""Uptime history as CSV and XLSX, for people first: one row per terminal (or per store, or
per region) with its period, how much of it was monitored, uptime %, durations and outages;
the same figures per local day in a separate table (its own CSV download, its own XLSX sheet).

* CSV: one table per file. Percentages as numbers (99.375), durations as h:mm, then the same
  durations in seconds (``*_s`` columns) for machines. Dates and times in the store's zone.
* XLSX: real numbers, dates and durations with number formats (0.000 %, [h]:mm, dates),
  column widths, a frozen header row and an autofilter.
* Store rows count store outages (`uptime.store_outages`), not their terminals' summed;
  region rows sum their stores' outages.

Fleet-sized exports never hold the fleet: terminals are computed a chunk at a time
(`uptime.iter_uptime`) ordered by store; rows go out when the next store starts, per-region
rows (a handful) at the end.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import IO, Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.history.uptime import (
    ChunkUptime,
    Figures,
    Period,
    ScopeKey,
    TerminalUptime,
    iter_uptime,
    store_outages,
    uptime_for_terminals,
    zone,
)

ROW_UNITS = ("terminal", "store", "region")
TABLES = ("summary", "days")
XLSX_MAX_ROWS = 1_048_576

Cell = str | int | float | date | datetime | None  # one value of a row, typed; formatted per column
Row = list[Cell]


@dataclass(frozen=True)
class Column:
    name: str  # the header people read
    kind: str  # text, date, moment, int, pct1, pct3, dur, secs (CSV only)
    width: float  # XLSX column width (characters)


ID_COLUMNS = {
    "terminal": [
        Column("POIID", "text", 20),
        Column("Label", "text", 16),
        Column("Store", "text", 11),
        Column("Store name", "text", 26),
        Column("Region", "text", 14),
        Column("Time zone", "text", 18),
    ],
    "store": [
        Column("Store", "text", 11),
        Column("Store name", "text", 26),
        Column("Region", "text", 14),
        Column("Time zone", "text", 18),
    ],
    "region": [Column("Region", "text", 16)],
}
FIGURE_COLUMNS = [
    Column("Terminals", "int", 10),
    Column("Monitored %", "pct1", 12),
    Column("Uptime %", "pct3", 11),
    Column("Up (h:mm)", "dur", 11),
    Column("Down (h:mm)", "dur", 12),
    Column("Unknown (h:mm)", "dur", 15),
    Column("Paused/maintenance (h:mm)", "dur", 16),
    Column("Outages", "int", 9),
    Column("Longest outage (h:mm)", "dur", 14),
]
SECONDS_COLUMNS = [  # the CSV's machine columns: the same durations in seconds
    Column("up_s", "secs", 0),
    Column("down_s", "secs", 0),
    Column("unknown_s", "secs", 0),
    Column("paused_maintenance_s", "secs", 0),
    Column("longest_outage_s", "secs", 0),
    Column("period_s", "secs", 0),
]
XLSX_FORMATS = {
    "date": "yyyy-mm-dd",
    "moment": "yyyy-mm-dd hh:mm",
    "pct1": "0.0%",
    "pct3": "0.000%",
    "dur": "[h]:mm",
    "int": "#,##0",
}
ABOUT = (
    ("Monitored %", "share of the period the terminals' state was known (up or down)"),
    ("Uptime %", "up / (up + down); unknown and paused/maintenance time are not downtime"),
    (
        "Outages",
        "terminal rows: the terminal's; store rows: runs with any terminal of the store down, "
        "one per store-wide fault; region rows: their stores' outages summed",
    ),
    ("Dates and times", "each store's time zone (days cut at its midnight); region rows in UTC"),
    ("Durations", "hours:minutes, summed over terminals (terminal-time)"),
)


def columns(by: str, *, per_day: bool, seconds: bool) -> list[Column]:
    when = [Column("Date", "date", 11)] if per_day else [Column("From", "date", 17), Column("To", "date", 17)]
    return ID_COLUMNS[by] + when + FIGURE_COLUMNS + (SECONDS_COLUMNS if seconds else [])


def header(by: str, *, per_day: bool, seconds: bool = True) -> list[str]:
    return [c.name for c in columns(by, per_day=per_day, seconds=seconds)]


def safe_text(value: Cell) -> Cell:
    """Text a spreadsheet would run as a formula gets a leading apostrophe (CSV injection)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def figure_cells(f: Figures) -> Row:
    """The figure columns, typed: shares as fractions, durations in seconds (then the seconds)."""
    return [
        f.terminals,
        f.monitored,
        f.uptime,
        f.up,
        f.down,
        f.unknown,
        f.paused,
        f.outages,
        f.longest_outage,
        f.up,
        f.down,
        f.unknown,
        f.paused,
        f.longest_outage,
        f.span,
    ]


def _period_cells(period: Period, tz: str | None) -> Row:
    """From and to: dates for a period of dates; for a rolling window its instants in the
    store's time zone (UTC for regions), to the minute, without a zone (spreadsheets have none)."""
    if period.first is not None and period.last is not None:
        return [period.first, period.last]
    start, end = period.window(None)
    z = zone(tz)
    return [
        start.astimezone(z).replace(tzinfo=None, second=0, microsecond=0),
        end.astimezone(z).replace(tzinfo=None, second=0, microsecond=0),
    ]


@dataclass
class _Group:
    ids: Row
    tz: str | None
    total: Figures
    days: dict[date, Figures]


@dataclass
class _Store:
    """The store being read: its terminals' down spells make its outages."""

    id: int | None = None
    tz: str | None = None
    group: object = None
    downs: list[tuple[float, float]] = field(default_factory=list)


class RowBuilder:
    """Turns terminal figures, in store order, into summary and per-day rows of the chosen unit."""

    def __init__(self, by: str, period: Period, *, per_day: bool = True) -> None:
        if by not in ROW_UNITS:
            raise ValueError(f"rows per {by!r}: expected one of {', '.join(ROW_UNITS)}")
        self.by, self.period, self.per_day = by, period, per_day
        self.groups: dict[object, _Group] = {}
        self.store = _Store()
        self.count = 0

    def _ids(self, r: TerminalUptime) -> tuple[object, Row, str | None]:
        t = r.terminal
        if self.by == "terminal":
            return t.id, [t.poiid, t.label, t.store_code, t.store_name, t.region, t.tz], t.tz
        if self.by == "store":
            return t.store_id, [t.store_code, t.store_name, t.region, t.tz], t.tz
        return t.region, [t.region], None

    def feed(self, r: TerminalUptime) -> tuple[list[Row], list[Row]]:
        """Rows ready to write after this terminal: (summary rows, per-day rows)."""
        key, ids, tz = self._ids(r)
        out: tuple[list[Row], list[Row]] = ([], [])
        if r.terminal.store_id != self.store.id:
            self._close_store()
            if self.by != "region":
                out = self._flush_all()
            self.store = _Store(r.terminal.store_id, r.terminal.tz, key)
        group = self.groups.get(key)
        if group is None:
            group = self.groups[key] = _Group(ids, tz, Figures(), {})
        own = self.by == "terminal"  # a terminal's own outages; above it, store outages
        group.total.add(r.total, outages=own)
        for d, f in r.days:
            day = group.days.get(d)
            if day is None:
                day = group.days[d] = Figures()
            day.add(f, outages=own)
        if not own:
            self.store.downs.extend(r.downs)
        return out

    def _close_store(self) -> None:
        group = self.groups.get(self.store.group)
        if self.by == "terminal" or group is None:
            return
        n, longest, days = store_outages(self.store.downs, self.store.tz, per_day=self.per_day)
        group.total.outages += n
        group.total.longest_outage = max(group.total.longest_outage, longest)
        for d, (dn, dl) in days.items():
            day = group.days.get(d)
            if day is not None:
                day.outages += dn
                day.longest_outage = max(day.longest_outage, dl)

    def _flush_all(self) -> tuple[list[Row], list[Row]]:
        summary: list[Row] = []
        days: list[Row] = []
        for g in self.groups.values():
            ids = [safe_text(v) for v in g.ids]
            summary.append(ids + _period_cells(self.period, g.tz) + figure_cells(g.total))
            for d in sorted(g.days):
                days.append([*ids, d, *figure_cells(g.days[d])])
        self.count += len(summary)
        self.groups = {}
        return summary, days

    def finish(self) -> tuple[list[Row], list[Row]]:
        self._close_store()
        return self._flush_all()


async def export_rows(
    session: AsyncSession,
    scope: str,
    key: ScopeKey,
    period: Period,
    *,
    by: str = "terminal",
    per_day: bool = True,
    now: datetime | None = None,
    chunk: int = 2000,
    compute: ChunkUptime = uptime_for_terminals,
) -> AsyncIterator[tuple[list[Row], list[Row]]]:
    builder = RowBuilder(by, period, per_day=per_day)
    rows = iter_uptime(session, scope, key, period, per_day=per_day, now=now, chunk=chunk, compute=compute)
    async for row in rows:
        summary, days = builder.feed(row)
        if summary or days:
            yield summary, days
    summary, days = builder.finish()
    if summary or days:
        yield summary, days


# --- CSV ----------------------------------------------------------------------------------------


def _csv_formatter(cols: list[Column]) -> Callable[[Row], list[Any]]:
    """A row's cells as the CSV writes them: shares as percentages, durations as h:mm, dates
    ISO, times to the minute; text, counts and seconds as they are (the csv module writes None
    as an empty field). Only the columns that need it are converted: a fleet's per-day table is
    150,000 rows."""
    shares = [i for i, c in enumerate(cols) if c.kind in ("pct1", "pct3")]
    digits = {i: 1 if cols[i].kind == "pct1" else 3 for i in shares}
    durations = [i for i, c in enumerate(cols) if c.kind == "dur"]
    seconds = [i for i, c in enumerate(cols) if c.kind == "secs"]
    dates = [i for i, c in enumerate(cols) if c.kind == "date"]

    def fmt(row: Row) -> list[Any]:
        out: list[Any] = list(row)
        for i in shares:
            v = out[i]
            out[i] = "" if v is None else f"{100.0 * v:.{digits[i]}f}"
        for i in durations:  # h:mm, to the minute, hours past 24 kept (30:05)
            minutes = round(out[i] / 60)
            out[i] = f"{minutes // 60}:{minutes % 60:02d}"
        for i in seconds:
            out[i] = round(out[i], 3)
        for i in dates:
            v = out[i]
            out[i] = v.strftime("%Y-%m-%d %H:%M") if isinstance(v, datetime) else v.isoformat()
        return out

    return fmt


def _csv_text(rows: list[list[str | int]] | list[list[str]]) -> str:
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
    table: str = "summary",
    title: str = "",
    now: datetime | None = None,
    compute: ChunkUptime = uptime_for_terminals,
) -> AsyncIterator[str]:
    """The CSV text, piece by piece: one table, the summary (one row per unit over the period)
    or `table="days"` (one row per unit and local day)."""
    if table not in TABLES:
        raise ValueError(f"table {table!r}: expected one of {', '.join(TABLES)}")
    per_day = table == "days"
    cols = columns(by, per_day=per_day, seconds=True)
    fmt = _csv_formatter(cols)
    yield _csv_text([[c.name for c in cols]])
    async for summary, days in export_rows(
        session, scope, key, period, by=by, per_day=per_day, now=now, compute=compute
    ):
        rows = days if per_day else summary
        if rows:
            yield _csv_text([fmt(r) for r in rows])


async def write_csv(
    session: AsyncSession,
    out: IO[str],
    scope: str,
    key: ScopeKey,
    period: Period,
    *,
    by: str = "terminal",
    table: str = "summary",
    title: str = "",
    now: datetime | None = None,
    compute: ChunkUptime = uptime_for_terminals,
) -> None:
    chunks = csv_chunks(session, scope, key, period, by=by, table=table, now=now, compute=compute)
    async for text in chunks:
        out.write(text)


# --- XLSX ---------------------------------------------------------------------------------------


class _Sheet:
    """A write-only sheet with a bold, frozen header row, column widths, an autofilter over
    its rows and each cell's number format from its column."""

    def __init__(self, ws: Any, cols: list[Column]) -> None:  # a WriteOnlyWorksheet (untyped attributes)
        from openpyxl.cell import WriteOnlyCell
        from openpyxl.styles import Font
        from openpyxl.utils import get_column_letter

        self.ws, self.cols, self.rows = ws, cols, 1
        self.last_col = get_column_letter(len(cols))
        for i, c in enumerate(cols, start=1):
            ws.column_dimensions[get_column_letter(i)].width = c.width
        ws.freeze_panes = "A2"
        bold = Font(bold=True)
        head = []
        for c in cols:
            cell = WriteOnlyCell(ws, value=c.name)
            cell.font = bold
            head.append(cell)
        ws.append(head)
        # One cell per formatted column, its number format set once, reused row after row (a row
        # is written out before the next is appended); text goes in as plain values. Text columns
        # come first: openpyxl writes a plain value after a cell object with that cell's style.
        kinds = [c.kind for c in cols]
        first_formatted = next((i for i, k in enumerate(kinds) if k != "text"), len(kinds))
        assert "text" not in kinds[first_formatted:], "text columns first"
        self.cells: list[Any] = []
        for c in cols:
            if c.kind == "text":
                self.cells.append(None)
                continue
            cell = WriteOnlyCell(ws)
            cell.number_format = XLSX_FORMATS.get(c.kind, "General")
            self.cells.append(cell)
        self.durations = [c.kind == "dur" for c in cols]

    def append(self, row: Row) -> None:
        cells: list[Any] = []
        value: Any
        for value, cell, is_duration in zip(row, self.cells, self.durations, strict=False):
            if value is None or cell is None:
                cells.append(value)
                continue
            cell.value = value / 86400.0 if is_duration else value  # a spreadsheet's durations are days
            cells.append(cell)
        self.ws.append(cells)
        self.rows += 1

    def close(self) -> None:
        self.ws.auto_filter.ref = f"A1:{self.last_col}{self.rows}"


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
    compute: ChunkUptime = uptime_for_terminals,
) -> None:
    """A workbook (write-only, rows streamed to disk): sheet "Summary" with one row per unit,
    sheet "Per day" (continued on "Per day 2", ... past Excel's row limit), sheet "About"."""
    from openpyxl import Workbook

    wb = Workbook(write_only=True)
    summary_cols = columns(by, per_day=False, seconds=False)
    day_cols = columns(by, per_day=True, seconds=False)
    if not period.is_dates:  # instants, not dates
        summary_cols = [Column(c.name, "moment", c.width) if c.kind == "date" else c for c in summary_cols]
    summary_ws = _Sheet(wb.create_sheet("Summary"), summary_cols)
    day_sheets = [_Sheet(wb.create_sheet("Per day"), day_cols)]
    n_summary, n_days = len(summary_cols), len(day_cols)
    async for summary, days in export_rows(session, scope, key, period, by=by, now=now, compute=compute):
        for row in summary:
            summary_ws.append(row[:n_summary])
        for row in days:
            if day_sheets[-1].rows >= XLSX_MAX_ROWS:
                day_sheets.append(_Sheet(wb.create_sheet(f"Per day {len(day_sheets) + 1}"), day_cols))
            day_sheets[-1].append(row[:n_days])
    for sheet in (summary_ws, *day_sheets):
        sheet.close()
    about = wb.create_sheet("About")
    about.column_dimensions["A"].width = 18
    about.column_dimensions["B"].width = 90
    made = datetime.now(UTC).replace(microsecond=0, tzinfo=None)
    for name, value in (
        ("Report", title or scope),
        ("Scope", scope),
        ("Period", period.label()),
        ("Rows per", by),
        *ABOUT,
        ("Made", f"{made:%Y-%m-%d %H:%M} UTC"),
    ):
        about.append([safe_text(name), safe_text(value)])
    wb.save(target)
