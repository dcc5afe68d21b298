"""`termpulse export`: uptime history of a terminal, store, region or the fleet as CSV or XLSX.

Exit status: 0 written; 2 bad input (message on stderr, nothing written); 1 other failure."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from pathlib import Path

from app.config import Settings
from app.db import Database
from app.errors import InvalidInput
from app.history.daily import uptime_source
from app.history.export import ROW_UNITS, write_csv, write_xlsx
from app.history.params import parse_period, resolve_scope

FLAG = {"from": "--from", "to": "--to", "id": "--id", "scope": "--scope", "period": "--from/--to"}


def export_command(settings: Settings, args: argparse.Namespace) -> int:
    fmt = getattr(args, "format", "csv") or "csv"
    output = getattr(args, "output", None)
    by = getattr(args, "by", None) or "terminal"
    if fmt not in ("csv", "xlsx"):
        return _bad(f"--format must be csv or xlsx, not {fmt!r}")
    if by not in ROW_UNITS:
        return _bad(f"rows per {by!r}: expected one of {', '.join(ROW_UNITS)}")
    table = "days" if getattr(args, "per_day", False) else "summary"
    if fmt == "xlsx" and table == "days":
        return _bad("--per-day is for CSV: the XLSX has the per-day rows on their own sheet")
    if fmt == "xlsx" and not output:
        return _bad("XLSX is a binary file: give -o FILE.xlsx")
    if not getattr(args, "since", None) or not getattr(args, "until", None):
        return _bad(
            "give the period with --from YYYY-MM-DD --to YYYY-MM-DD (inclusive, each store's local days)"
        )
    if output and not Path(output).resolve().parent.is_dir():
        return _bad(f"-o {output}: the directory does not exist")
    try:
        return asyncio.run(_export(settings, args, fmt, output, by, table))
    except InvalidInput as exc:
        field = exc.field or ""
        return _bad(f"{FLAG.get(field, field)}: {exc.message}")


def _bad(message: str) -> int:
    print(f"termpulse export: {message}", file=sys.stderr)
    return 2


async def _export(
    settings: Settings, args: argparse.Namespace, fmt: str, output: str | None, by: str, table: str
) -> int:
    period = parse_period("custom", args.since, args.until)
    database = Database(settings.database_url)
    try:
        async with database.sessionmaker() as session:
            scope, key, title = await resolve_scope(session, args.scope, args.id)
            if output is None:
                await write_csv(
                    session,
                    sys.stdout,
                    scope,
                    key,
                    period,
                    by=by,
                    table=table,
                    title=title,
                    compute=uptime_source(settings),
                )
                sys.stdout.flush()
                return 0
            # Written next to the target, then renamed: never a half-written file under its name.
            # (Blocking file calls are fine here: this command's one coroutine has nothing to wait on.)
            target = Path(output)
            directory = target.resolve().parent  # noqa: ASYNC240
            fd, tmp = tempfile.mkstemp(prefix=".termpulse-export-", dir=directory)
            try:
                if fmt == "csv":
                    with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
                        await write_csv(
                            session,
                            out,
                            scope,
                            key,
                            period,
                            by=by,
                            table=table,
                            title=title,
                            compute=uptime_source(settings),
                        )
                else:
                    os.close(fd)
                    await write_xlsx(
                        session, tmp, scope, key, period, by=by, title=title, compute=uptime_source(settings)
                    )
                os.replace(tmp, target)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)  # noqa: ASYNC240
                raise
            print(f"wrote {target} ({scope} {title}, {period.label()})", file=sys.stderr)
            return 0
    finally:
        await database.dispose()
