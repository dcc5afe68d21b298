"""The small, very frequent pieces of markup (state badges, Websocket icons, icon uses) as
memoised Python functions: a 50-row page calls them hundreds of times, and a Jinja macro
call costs far more than a dictionary lookup. The templates import them from
dashboard/_ui.html under the same names, so the markup has one source."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache

from markupsafe import Markup, escape

from app.web.templating import _ago

STATE_WORDS = {
    "up": "Up",
    "down": "Down",
    "unknown": "Unknown",
    "paused": "Paused",
    "maintenance": "Maintenance",
    "none": "Not checked",
}
WS_WORDS = {
    "connected": "Connected",
    "disconnected": "Disconnected",
    "not_enabled": "Not enabled",
    "unknown": "Unknown",
}
WS_TIPS = {
    "connected": "Cloud connection (WebSocket) is live",
    "disconnected": "Cloud connection (WebSocket) is down",
    "not_enabled": "Cloud connection (WebSocket) is not enabled for this terminal",
    "unknown": "Cloud connection state is unknown: the provider could not be asked",
}
WS_ICONS = {
    "connected": "cloud",
    "disconnected": "cloud-off",
    "not_enabled": "minus",
    "unknown": "cloud-unknown",
}


@lru_cache(maxsize=256)
def icon(name: str, cls: str = "icon") -> Markup:
    return Markup(
        f'<svg class="{escape(cls)}" width="16" height="16" aria-hidden="true" focusable="false">'
        f'<use href="#i-{escape(name)}"/></svg>'
    )


@lru_cache(maxsize=64)
def state(value: str | None, small: bool = False) -> Markup:
    v = value if value in STATE_WORDS else "unknown"
    size = " small" if small else ""
    return Markup(
        f'<span class="badge {v}{size}" data-state="{v}">{icon(v)}<span>{STATE_WORDS[v]}</span></span>'
    )


@lru_cache(maxsize=16)
def ws(value: str | None) -> Markup:
    v = value if value in WS_WORDS else "unknown"
    return Markup(
        f'<span class="ws ws-{v}" data-ws="{v}" title="{WS_TIPS[v]}" role="img" aria-label="Websocket: {WS_WORDS[v]}">'
        f'{icon(WS_ICONS[v])}<span class="ws-word" aria-hidden="true">{WS_WORDS[v]}</span></span>'
    )


def lasted(value: datetime | None) -> str:
    """How long a state has lasted: '12 min', '3 h 5 min', '4 d 2 h'."""
    if value is None:
        return "—"
    seconds = max(int((datetime.now(UTC) - value).total_seconds()), 0)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min"
    return f"{seconds} s"


def when(dt: datetime | None, prefix: str = "") -> Markup:
    """A moment as 'x ago' (kept current by dashboard.js), the exact UTC time as tooltip."""
    if dt is None:
        return Markup('<span class="muted">never</span>')
    return Markup(
        f'<time datetime="{dt.isoformat()}" data-rel title="{dt:%Y-%m-%d %H:%M:%S} UTC">'
        f"{escape(prefix)}{_ago(dt)}</time>"
    )


def since(dt: datetime | None) -> Markup:
    """How long the current state has lasted, the start as tooltip."""
    if dt is None:
        return Markup('<span class="muted">—</span>')
    return Markup(
        f'<time datetime="{dt.isoformat()}" data-rel="since" title="since {dt:%Y-%m-%d %H:%M:%S} UTC">'
        f"{lasted(dt)}</time>"
    )


def uptime(value: float | None) -> Markup:
    if value is None:
        return Markup('<span class="muted" title="No up or down time in the period">—</span>')
    pct = value * 100
    low = " low" if pct < 99 else ""
    text = "100" if pct >= 100 else f"{min(pct, 99.99):.2f}"
    return Markup(f'<span class="uptime{low}">{text} %</span>')


def lan(row) -> Markup:
    if not row.lan_host:
        return Markup('<span class="muted" title="No LAN address">—</span>')
    port = f":{row.lan_port}" if row.lan_port else ""
    badge = f" {state(row.lan_state, True)}" if row.lan_state != "none" else ""
    return Markup(f'<span class="lan"><span class="mono">{escape(row.lan_host)}{port}</span>{badge}</span>')
