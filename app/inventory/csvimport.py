"""Bulk import from the fleet CSV format: every bad row reported, nothing half-imported.

Accepts UTF-8 with or without BOM, CRLF, quoted fields, and ';' or tab separated files as
spreadsheet programs save them in many locales. The file kind (stores or terminals) is told
by its header, so the order of the files does not matter.
"""

from __future__ import annotations

import csv
import gc
import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import select_where_in
from app.errors import Conflict
from app.inventory.models import Store
from app.inventory.profile_service import profile_names
from app.inventory.schemas import StoreIn, TerminalIn, field_errors
from app.inventory.service import UpsertSummary, upsert_inventory

SAMPLE_FLEET = Path(__file__).with_name("fleet")  # stores.csv and terminals.csv in this format
STORE_REQUIRED = ("code", "name")
TERMINAL_REQUIRED = ("store_code", "poiid")


@dataclass
class RowError:
    file: str
    line: int
    column: str
    reason: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.column}: {self.reason}" if self.column else f"{where}: {self.reason}"


@dataclass
class ParsedFleet:
    stores: list[StoreIn] = field(default_factory=list)
    terminals: list[TerminalIn] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)
    store_lines: dict[str, tuple[str, int]] = field(default_factory=dict)
    terminal_lines: dict[str, tuple[str, int]] = field(default_factory=dict)
    # Rows that failed validation still get their store code checked: (file, line, code).
    unchecked_store_refs: list[tuple[str, int, str]] = field(default_factory=list)


class ImportFailed(Exception):
    def __init__(self, errors: list[RowError]):
        super().__init__(f"{len(errors)} error(s)")
        self.errors = errors


def _decode(data: bytes, name: str, errors: list[RowError]) -> str | None:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        errors.append(RowError(name, line, "", "file is not UTF-8: save it as 'CSV UTF-8' and retry"))
        return None


def _dialect(text: str) -> str:
    header = text.split("\n", 1)[0]
    return max(",;\t", key=header.count)


def _records(text: str) -> Iterator[tuple[int, list[str]]]:
    """(line number where the record starts, cells) for the header and each non-blank record."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_dialect(text))
    start = 1
    for record in reader:
        if any(cell.strip() for cell in record):
            yield start, record
        start = reader.line_num + 1


def parse_file(name: str, data: bytes, fleet: ParsedFleet) -> None:
    text = _decode(data, name, fleet.errors)
    if text is None:
        return
    records = _records(text)
    header = [h.strip().lower() for h in next(records, (1, []))[1]]
    model: type[StoreIn] | type[TerminalIn]
    if "poiid" in header:
        kind, model, required, key = "terminals", TerminalIn, TERMINAL_REQUIRED, "poiid"
    elif "code" in header:
        kind, model, required, key = "stores", StoreIn, STORE_REQUIRED, "code"
    else:
        fleet.errors.append(
            RowError(name, 1, "", "header has neither 'code' (stores) nor 'poiid' (terminals)")
        )
        return
    missing = [c for c in required if c not in header]
    if missing:
        fleet.errors.append(RowError(name, 1, ", ".join(missing), "required column missing from the header"))
        return
    target: list = fleet.terminals if kind == "terminals" else fleet.stores
    lines = fleet.terminal_lines if kind == "terminals" else fleet.store_lines
    for line, cells in records:
        if len(cells) > len(header):
            fleet.errors.append(
                RowError(name, line, "", f"{len(cells)} fields but the header has {len(header)}")
            )
            continue
        row = dict(zip(header, cells, strict=False))
        try:
            item = model.model_validate(row)
        except ValidationError as exc:
            problems = field_errors(exc, row, model)
            fleet.errors += [RowError(name, line, col, reason) for col, reason in problems.items()]
            if kind == "terminals" and "store_code" not in problems:
                fleet.unchecked_store_refs.append((name, line, row["store_code"].strip()))
            continue
        ident = getattr(item, key)
        if ident in lines:
            first = lines[ident]
            fleet.errors.append(
                RowError(name, line, key, f"{ident} already appears at {first[0]}:{first[1]}")
            )
            continue
        lines[ident] = (name, line)
        target.append(item)


async def _check_store_references(session: AsyncSession, fleet: ParsedFleet) -> None:
    refs = [
        (*fleet.terminal_lines[t.poiid], t.store_code) for t in fleet.terminals
    ] + fleet.unchecked_store_refs
    referenced = {code for _, _, code in refs} - {s.code for s in fleet.stores}
    known = set(await select_where_in(session, select(Store.code), Store.code, referenced, scalars=True))
    for name, line, code in refs:
        if code in referenced - known:
            fleet.errors.append(
                RowError(name, line, "store_code", f"no store {code!r} in this import or the database")
            )


async def _check_profile_references(session: AsyncSession, fleet: ParsedFleet) -> None:
    """A store's network_profile must name one of the profile records."""
    known = await profile_names(session)
    for store in fleet.stores:
        if store.network_profile is not None and store.network_profile not in known:
            name, line = fleet.store_lines[store.code]
            reason = f"no network profile {store.network_profile!r} (one of: {', '.join(known)})"
            fleet.errors.append(RowError(name, line, "network_profile", reason))


async def import_fleet(
    session: AsyncSession, files: list[tuple[str, bytes]], *, dry_run: bool = False
) -> UpsertSummary:
    """Validate every file, then write everything in one transaction, or nothing.

    Raises ImportFailed with every bad row. With dry_run the writes are rolled back, so the
    summary is exactly what a real run would do.
    """
    with _collector_paused():
        return await _import(session, files, dry_run)


@contextmanager
def _collector_paused() -> Iterator[None]:
    """An import builds a few hundred thousand objects (rows, models, records) that all live
    until it ends; the cyclic garbage collector would scan them over and over (about a fifth
    to half of the import's CPU). Reference counting still frees everything; the collector
    runs again when the import ends."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


async def _import(session: AsyncSession, files: list[tuple[str, bytes]], dry_run: bool) -> UpsertSummary:
    fleet = ParsedFleet()
    for name, data in files:
        parse_file(name, data, fleet)
    await _check_store_references(session, fleet)
    await _check_profile_references(session, fleet)
    if fleet.errors:
        fleet.errors.sort(key=lambda e: (e.file, e.line))
        raise ImportFailed(fleet.errors)
    try:
        summary = await upsert_inventory(session, fleet.stores, fleet.terminals)
    except Conflict as exc:  # a store deleted between the check and the write
        await session.rollback()
        raise ImportFailed([RowError(files[-1][0], 0, "store_code", str(exc))]) from exc
    except Exception:
        await session.rollback()
        raise
    if dry_run:
        await session.rollback()
    else:
        await session.commit()
    return summary
