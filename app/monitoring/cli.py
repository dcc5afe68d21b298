"""`termpulse check POIID [--json]`: check one terminal now and explain the result;
`termpulse check --store CODE [--json]`: every network and terminal check of a store at once,
one report (the store's network first, then each terminal).

Exit status: 0 connected (a store: its network and every monitored terminal), 1 disconnected
or could not check, 2 error (unknown POIID or store, database unreachable, ...).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import uvloop
from sqlalchemy.exc import DBAPIError, OperationalError

from app.config import Settings
from app.db import Database
from app.errors import NotFound
from app.monitoring.manual import (
    MonitorCheck,
    StoreCheckReport,
    TerminalCheckReport,
    check_store_now,
    check_terminal_now,
)


class _Report(Protocol):
    def as_dict(self) -> Any: ...


_R = TypeVar("_R", bound=_Report)


def check_command(settings: Settings, poiid: str, as_json: bool = False) -> int:
    return uvloop.run(
        _run(
            settings,
            as_json,
            lambda database: check_terminal_now(database, settings, poiid),
            unknown="unknown_poiid",
            render=render_report,
            connected=lambda report: report.connected,
        )
    )


def check_store_command(settings: Settings, code: str, as_json: bool = False) -> int:
    return uvloop.run(
        _run(
            settings,
            as_json,
            lambda database: check_store_now(database, settings, code),
            unknown="unknown_store",
            render=render_store_report,
            connected=lambda report: report.all_connected,
        )
    )


async def _run(
    settings: Settings,
    as_json: bool,
    check: Callable[[Database], Awaitable[_R]],
    *,
    unknown: str,
    render: Callable[[_R], str],
    connected: Callable[[_R], bool],
) -> int:
    """Run one check command: its report printed (text or JSON); exit 0 connected, 1 not,
    2 on an error (what was named does not exist, no database)."""
    database = Database(settings.database_url)
    try:
        report = await check(database)
    except NotFound as exc:
        return _error(as_json, unknown, exc.message)
    except (DBAPIError, OperationalError, OSError) as exc:
        reason = getattr(exc, "orig", None) or exc
        return _error(as_json, "database_error", f"cannot reach the database: {reason}")
    finally:
        await database.dispose()
    print(json.dumps(report.as_dict(), indent=2) if as_json else render(report))
    return 0 if connected(report) else 1


def _error(as_json: bool, code: str, message: str) -> int:
    if as_json:
        print(json.dumps({"error": code, "message": message}))
    print(f"termpulse check: {message}", file=sys.stderr)
    return 2


def render_report(report: TerminalCheckReport) -> str:
    lines = [f"{report.poiid} (store {report.store_code})", ""]
    lines += _check_lines(report.checks)
    lines += ["", f"Verdict: {report.headline}  ({report.duration_ms:.0f} ms)"]
    if report.diagnosis:
        lines += [f"Cause:   {report.diagnosis.cause}", f"Fix:     {report.diagnosis.fix}"]
    lines.append(f"Status:  {report.status}; cloud: {report.cloud_state}")
    return "\n".join(lines)


def render_store_report(report: StoreCheckReport) -> str:
    """The store's network first, then each terminal: its own checks, verdict, cause and fix."""
    lines = [f"Store {report.store_code} {report.store_name}", "", "Network:"]
    lines += ["  " + line for line in _check_lines(report.network)] or ["  no network checks"]
    lines.append(f"  Verdict: {report.network_headline}")
    if report.network_diagnosis:
        d = report.network_diagnosis
        lines += [f"  Cause:   {d.cause}", f"  Fix:     {d.fix}"]
    for t in report.terminals:
        lines += ["", f"Terminal {t.poiid}:"]
        lines += ["  " + line for line in _check_lines(t.checks)]
        lines.append(f"  Verdict: {t.headline}")
        if t.diagnosis is not None and t.diagnosis == report.network_diagnosis:
            lines.append("  Cause:   the store's network (above)")
        elif t.diagnosis:
            lines += [f"  Cause:   {t.diagnosis.cause}", f"  Fix:     {t.diagnosis.fix}"]
    counts = ", ".join(f"{n} {verdict.replace('_', ' ')}" for verdict, n in sorted(report.counts.items()))
    lines += [
        "",
        f"Store: {report.network_headline.lower().removeprefix('the ')}; terminals: {counts or 'none'}"
        f"  ({report.duration_ms:.0f} ms)",
        f"Status:  {report.status}",
    ]
    return "\n".join(lines)


def _check_lines(checks: list[MonitorCheck]) -> list[str]:
    lines = []
    for c in checks:
        when = "" if c.live else "  [last provider poll]"
        lines.append(f"{c.kind} {c.target} ({c.scope}): {c.outcome}{when}")
        for s in c.steps:
            mark = "ok  " if s["ok"] else "FAIL"
            detail = f"  {s['detail']}" if s["detail"] else ""
            lines.append(f"  [{mark}] {s['step']:<14} {s['ms']:>9.1f} ms{detail}")
        if c.diagnosis:
            lines.append(f"  -> {c.diagnosis.title}")
    return lines
