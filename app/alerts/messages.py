"""The words of a notification: what a person on call needs, in plain text.

Store, how many terminals are down, since when (the store's local time), the diagnosis with
its fix, and links to the store page and the incident."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import quote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from app.checks.diagnoses import Diagnosis, explain

PREFIX = "[TermPulse]"
MAX_STORES_LISTED = 40


@dataclass
class StoreFacts:
    id: int
    code: str
    name: str
    region: str
    timezone: str
    terminals_down: int
    terminals_total: int
    network_down: list[str] = field(default_factory=list)  # store network checks failing ("TCP host:7003")
    since: datetime | None = None
    cannot_pay: bool = False  # the store's status: its network is down, or no terminal can pay
    diagnosis: str | None = None
    target: str | None = None

    @property
    def label(self) -> str:
        return f"{self.code} {self.name}"


def local_time(at: datetime | None, tz: str) -> str:
    if at is None:
        return "an unknown time"
    try:
        zone = ZoneInfo(tz or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        zone, tz = ZoneInfo("UTC"), "UTC"
    return f"{at.astimezone(zone):%Y-%m-%d %H:%M} ({tz or 'UTC'})"


def diagnosis_of(code: str | None, target: str | None) -> Diagnosis | None:
    """The catalogue's words for a code, filled from the monitor's target (host:port, name, URL)."""
    if not code:
        return None
    ctx: dict[str, object] = {}
    if target:
        if "://" in target:
            parts = urlsplit(target)
            ctx.update(target=target, host=parts.hostname or target)
        elif target.count(":") == 1 and target.rsplit(":", 1)[1].isdigit():
            host, port = target.rsplit(":", 1)
            ctx.update(host=host, port=int(port))
        else:
            ctx.update(host=target, name=target, target=target)
    return explain(code, **ctx)


def store_link(base_url: str, code: str) -> str:
    return f"{base_url.rstrip('/')}/stores/{quote(code, safe='')}"


def incident_link(base_url: str, incident_id: int) -> str:
    return f"{base_url.rstrip('/')}/incidents/{incident_id}"


def store_headline(s: StoreFacts) -> str:
    if s.terminals_total and s.terminals_down >= s.terminals_total:
        what = "cannot take cards" + (
            f" (all {s.terminals_total} terminals down)"
            if s.terminals_total > 1
            else " (its terminal is down)"
        )
    elif s.terminals_down:
        what = f"{s.terminals_down} of {s.terminals_total} terminals down"
    elif s.network_down:
        what = "store network check failing"
    else:
        what = "checks failing"
    return f"{s.label}: {what}"


def store_title(kind: str, s: StoreFacts) -> str:
    lead = {"reminder": "Reminder, not acknowledged: ", "escalation": "Escalated: "}.get(kind, "")
    return f"{PREFIX} {lead}{store_headline(s)}"


def store_body(s: StoreFacts, base_url: str, incident_id: int, *, note: str = "") -> str:
    lines = [f"Store: {s.label}" + (f" (region {s.region})" if s.region else "")]
    lines.append(f"Terminals down: {s.terminals_down} of {s.terminals_total}")
    if s.network_down:
        lines.append("Store network checks failing: " + ", ".join(s.network_down[:5]))
    lines.append(f"Since: {local_time(s.since, s.timezone)}")
    d = diagnosis_of(s.diagnosis, s.target)
    if d is not None:
        lines.append(f"Diagnosis: {d.title}. {d.cause}")
        lines.append(f"Fix: {d.fix}")
    if note:
        lines.append(note)
    lines.append(f"Store page: {store_link(base_url, s.code)}")
    lines.append(f"Incident: {incident_link(base_url, incident_id)}")
    return "\n".join(lines)


def fleet_title(kind: str, stores: int, terminals_down: int, cause: str | None) -> str:
    lead = {"reminder": "Reminder, not acknowledged: ", "escalation": "Escalated: "}.get(kind, "")
    d = diagnosis_of(cause, None)
    what = f" ({d.title})" if d else ""
    return f"{PREFIX} {lead}Fleet incident: {stores} stores failing, {terminals_down} terminals down{what}"


def fleet_body(
    stores: list[StoreFacts], base_url: str, incident_id: int, cause: str | None, target: str | None
) -> str:
    first = min((s.since for s in stores if s.since), default=None)
    down, total = sum(s.terminals_down for s in stores), sum(s.terminals_total for s in stores)
    lines = [
        f"{len(stores)} stores are failing at once: one notification for all of them.",
        f"Terminals down: {down} of {total}",
        f"Since: {local_time(first, 'UTC')}",
    ]
    d = diagnosis_of(cause, target)
    if d is not None:
        lines.append(f"Most common diagnosis: {d.title}. {d.cause}")
        lines.append(f"Fix: {d.fix}")
    lines.append("Stores:")
    ordered = sorted(stores, key=lambda s: s.code)
    for s in ordered[:MAX_STORES_LISTED]:
        lines.append(
            f"- {store_headline(s)}, since {local_time(s.since, s.timezone)} {store_link(base_url, s.code)}"
        )
    if len(ordered) > MAX_STORES_LISTED:
        lines.append(f"... and {len(ordered) - MAX_STORES_LISTED} more stores (see the incident)")
    lines.append(f"Incident: {incident_link(base_url, incident_id)}")
    return "\n".join(lines)


def cannot_check_title(kind: str, title: str) -> str:
    lead = {"reminder": "Reminder, not acknowledged: ", "escalation": "Escalated: "}.get(kind, "")
    return f"{PREFIX} {lead}{title}"


def resolved_title(title: str) -> str:
    return f"{PREFIX} Resolved: {title.removeprefix(PREFIX).strip()}"


def resolved_body(
    title: str, opened_at: datetime, resolved_at: datetime, base_url: str, incident_id: int, tz: str = "UTC"
) -> str:
    """`tz`: the store's time zone (fleet and cannot-check incidents: UTC)."""
    minutes = max(1, round((resolved_at - opened_at).total_seconds() / 60))
    return "\n".join(
        [
            f"Resolved: {title.removeprefix(PREFIX).strip()}",
            f"Everything involved is up again, after about {minutes} min "
            f"(opened {local_time(opened_at, tz)}, resolved {local_time(resolved_at, tz)}).",
            f"Incident: {incident_link(base_url, incident_id)}",
        ]
    )
