"""Why a store is in its state, in words a shop understands: the title of its worst problem
("Port 7003 blocked", "DNS failing", "2 terminals unpaired", "Cloud disconnected").

Pure functions over the monitors that are not up (read for the stores on one page only, by
app.dashboard.queries); the diagnosis codes stay in the reports and tooltips.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from app.checks.diagnoses import CATALOGUE
from app.vocabulary import MonitorKind, State, StoreStatus

DNS_CODES = frozenset({"dns_nxdomain", "dns_servfail", "dns_timeout", "dns_no_answer"})
# A few words per code for a terminal problem, said of a number of terminals.
_TERMINAL_WORDS = {
    "http_401": ("terminal unpaired", "terminals unpaired"),
    "cloud_disconnected": ("terminal: cloud disconnected", "terminals: cloud disconnected"),
    "cloud_not_enabled": ("terminal: cloud not enabled", "terminals: cloud not enabled"),
    "host_unreachable": ("terminal unreachable", "terminals unreachable"),
    "tcp_refused": ("terminal refuses connections", "terminals refuse connections"),
    "stalled": ("terminal not answering", "terminals not answering"),
    "result_stale": ("terminal without recent result", "terminals without recent result"),
}


@dataclass(frozen=True)
class Problem:
    """A monitor of the store that is not up."""

    terminal_id: int | None  # None: a store network check
    kind: str
    target: str
    state: str
    diagnosis: str | None


@dataclass(frozen=True)
class Reason:
    text: str
    code: str  # the diagnosis code behind it ("" when none): tooltips and tests
    detail: str = ""  # a longer tooltip


def _port(target: str) -> str:
    host, _, port = target.rpartition(":")
    return port if host and port.isdigit() else ""


def title(code: str | None) -> str:
    entry = CATALOGUE.get(code or "")
    return entry.title if entry else (code or "")


def network_words(p: Problem) -> str:
    """A store network check's problem: 'Port 7003 blocked', 'DNS failing', ..."""
    code = p.diagnosis or ""
    if code in DNS_CODES or (p.kind == MonitorKind.DNS and not code):
        return "DNS failing"
    port = _port(p.target)
    if code == "tcp_timeout" and port:
        return f"Port {port} blocked"
    if code in ("tcp_refused", "tcp_reset") and port:
        return f"Port {port}: {title(code).lower()}"
    if code:
        return f"Store network: {title(code).lower()}"
    return "Store network down"


def network_rank(kind: str, diagnosis: str | None) -> int:
    """Which of a store's failing network checks explains the others: DNS, then a blocked
    port, then other connection faults, then the rest (TLS, HTTP)."""
    code = diagnosis or ""
    if code in DNS_CODES or kind == MonitorKind.DNS:
        return 0
    if code == "tcp_timeout":
        return 1
    if code.startswith(("tcp_", "host_")):
        return 2
    if kind == MonitorKind.TCP:
        return 3
    return 4


def terminal_words(code: str, n: int) -> str:
    one, many = _TERMINAL_WORDS.get(code, ("", ""))
    if one:
        return f"{n} {one if n == 1 else many}"
    words = title(code) if code else "down"
    return f"{n} terminal{'s' if n != 1 else ''}: {words[:1].lower() + words[1:]}"


def store_reason(
    status: str, problems: list[Problem], *, terminals_down: int = 0, not_monitored: int = 0, total: int = 0
) -> Reason | None:
    """The reason shown on a store's row, from its monitors that are not up; None when all is well."""
    down = [p for p in problems if p.state == State.DOWN]
    net_down = [p for p in down if p.terminal_id is None]
    if net_down:
        # The fault that explains the others first: DNS, then a blocked port, then the rest.
        p = min(net_down, key=lambda p: (network_rank(p.kind, p.diagnosis), p.target, p.kind))
        text = network_words(p)
        others = len({network_words(o) for o in net_down} - {text})
        if others:
            text += f" (+{others} more)"
        return Reason(text, p.diagnosis or "", f"{p.kind} {p.target}: {title(p.diagnosis)}")
    if down:
        # Per terminal its first down monitor's diagnosis; the commonest cause names the row.
        per_terminal: dict[int, str] = {}
        for p in sorted(down, key=lambda p: (p.terminal_id or 0, p.kind)):
            if p.terminal_id is not None:
                per_terminal.setdefault(p.terminal_id, p.diagnosis or "")
        causes = Counter(per_terminal.values())
        code, n = causes.most_common(1)[0]
        text = terminal_words(code, n)
        others = len(per_terminal) - n
        if others > 0:
            text += f" (+{others} other)"
        return Reason(text, code, f"{len(per_terminal)} terminal(s) down")
    unknown = [p for p in problems if p.state == State.UNKNOWN]
    if unknown:
        codes = Counter(p.diagnosis or "" for p in unknown)
        code, _ = codes.most_common(1)[0]
        if code:
            return Reason(f"Unknown: {title(code).lower()}", code)
        return Reason("No result yet", "")
    if status == StoreStatus.NONE:
        if total == 0:
            return Reason("No terminals", "")
        return Reason("Nothing checked on its terminals", "", "No cloud connection and no LAN address")
    if status == StoreStatus.CANNOT_PAY and terminals_down:
        return Reason(f"{terminals_down} terminal{'s' if terminals_down != 1 else ''} down", "")
    return None
