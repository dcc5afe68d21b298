"""Template helpers: the small, very frequent pieces of markup (state badges, Websocket icons,
icon uses) and the formatting of moments, durations and shares.

The markup helpers are memoised Python functions: a 50-row page calls them hundreds of times,
and a Jinja macro call costs far more than a dictionary lookup. app.web.templating registers
them; templates import them from dashboard/_ui.html under the same names, so the markup has
one source. Names and words come from app.vocabulary.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from functools import lru_cache
from typing import Protocol

from markupsafe import Markup, escape

from app.checks.diagnoses import CATALOGUE
from app.vocabulary import AgentState, CloudState, MonitorKind, Outcome, State, StoreStatus

_STATES = frozenset(State)
_CLOUD_STATES = frozenset(CloudState)
_KINDS = frozenset(MonitorKind)
_AGENT_STATES = frozenset(AgentState)
_STORE_STATUSES = frozenset(StoreStatus)
# A store agent's clock further off than this is flagged (its results are moved onto ours anyway).
SKEW_WARN_MS = 2000.0
# The sprite symbol (dashboard/_ui.html) of each Websocket state.
WS_ICONS = {
    CloudState.CONNECTED: "cloud",
    CloudState.DISCONNECTED: "cloud-off",
    CloudState.NOT_ENABLED: "minus",
    CloudState.UNKNOWN: "cloud-unknown",
}


@lru_cache(maxsize=256)
def icon(name: str, cls: str = "icon") -> Markup:
    return Markup(
        f'<svg class="{escape(cls)}" width="16" height="16" aria-hidden="true" focusable="false">'
        f'<use href="#i-{escape(name)}"/></svg>'
    )


@lru_cache(maxsize=64)
def state(value: str | None, small: bool = False) -> Markup:
    """A state badge: icon and word (an unknown value shows as unknown)."""
    v = State(value) if value in _STATES else State.UNKNOWN
    size = " small" if small else ""
    return Markup(f'<span class="badge {v}{size}" data-state="{v}">{icon(v)}<span>{v.word}</span></span>')


@lru_cache(maxsize=32)
def store_state(value: str | None, small: bool = False) -> Markup:
    """A store's status badge ("Cannot take cards", "Degraded" ...): icon, word and tooltip."""
    v = StoreStatus(value) if value in _STORE_STATUSES else StoreStatus.UNKNOWN
    size = " small" if small else ""
    return Markup(
        f'<span class="badge {v.colour} store-{v}{size}" data-store-status="{v}" title="{v.tip}">'
        f"{icon(v.colour)}<span>{v.word}</span></span>"
    )


# A store agent's state as a badge: the sprite symbol and the badge colour (a state's class).
AGENT_BADGES = {
    AgentState.OFFLINE: ("agent-offline", State.DOWN),
    AgentState.NEVER_SEEN: (State.NONE, State.NONE),
    AgentState.ONLINE: (State.UP, State.UP),
    AgentState.REVOKED: ("revoked", State.PAUSED),
}


@lru_cache(maxsize=16)
def agent_state(value: str | None, small: bool = False) -> Markup:
    """A store agent's state badge: icon and word (offline, never seen, online, revoked)."""
    v = AgentState(value) if value in _AGENT_STATES else AgentState.NEVER_SEEN
    symbol, colour = AGENT_BADGES[v]
    size = " small" if small else ""
    return Markup(
        f'<span class="badge {colour}{size}" data-agent-state="{v}">'
        f"{icon(symbol)}<span>{v.word}</span></span>"
    )


@lru_cache(maxsize=16)
def ws(value: str | None) -> Markup:
    """The Websocket column: cloud, crossed cloud, minus, with the word for screen readers."""
    v = CloudState(value) if value in _CLOUD_STATES else CloudState.UNKNOWN
    return Markup(
        f'<span class="ws ws-{v}" data-ws="{v}" title="{v.tip}" role="img" aria-label="Websocket: {v.word}">'
        f'{icon(WS_ICONS[v])}<span class="ws-word" aria-hidden="true">{v.word}</span></span>'
    )


def state_word(value: str) -> str:
    """'Down' for down; a value outside the vocabulary as it is."""
    return State(value).word if value in _STATES else value


def kind_word(value: str) -> str:
    """'DNS' for dns, 'EPOS API' for paynt_epos; a value outside the vocabulary as it is."""
    return MonitorKind(value).word if value in _KINDS else value


def diagnosis_title(code: str | None) -> str:
    if not code:
        return ""
    entry = CATALOGUE.get(code)
    return entry.title if entry else code


def ago(value: datetime | None) -> str:
    if value is None:
        return "never"
    seconds = int((datetime.now(UTC) - value).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{max(seconds, 0)} s ago"


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


def _exact(iso: str) -> str:
    """'%Y-%m-%d %H:%M:%S' of a moment, cut from its isoformat() (the tag carries it anyway):
    strftime cost a third of a moment's markup, and a page shows up to hundreds."""
    return f"{iso[:10]} {iso[11:19]}"


def when(dt: datetime | None, prefix: str = "") -> Markup:
    """A moment as 'x ago' (kept current by dashboard.js), the exact UTC time as tooltip."""
    if dt is None:
        return Markup('<span class="muted">never</span>')
    iso = dt.isoformat()
    return Markup(
        f'<time datetime="{iso}" data-rel title="{_exact(iso)} UTC">'
        f"{escape(prefix) if prefix else ''}{ago(dt)}</time>"
    )


def clock_text(dt: datetime) -> str:
    """A moment as a time of day in UTC, '14:02 UTC', with the date when not within a day."""
    recent = abs((datetime.now(UTC) - dt).total_seconds()) < 86400
    return f"{dt:%H:%M} UTC" if recent else f"{dt:%d %b %H:%M} UTC"


def clock(dt: datetime | None) -> Markup:
    """clock_text() with the exact time as tooltip."""
    if dt is None:
        return Markup('<span class="muted">—</span>')
    return Markup(
        f'<time datetime="{dt.isoformat()}" title="{dt:%Y-%m-%d %H:%M:%S} UTC">{clock_text(dt)}</time>'
    )


def skew(ms: float | None) -> Markup:
    """A store agent's clock skew, signed ('+1.2 s'; behind with a minus sign, U+2212), flagged
    beyond SKEW_WARN_MS."""
    if ms is None:
        return Markup('<span class="muted" title="Not measured yet: no heartbeat">—</span>')
    seconds = abs(ms) / 1000
    sign = "" if seconds < 0.05 else "+" if ms > 0 else "\u2212"  # no sign on what rounds to 0.0
    text = f"{sign}{seconds:.1f} s" if seconds < 100 else f"{sign}{duration(seconds)}"
    way = "ahead of" if ms >= 0 else "behind"
    exact = f"{abs(ms):.0f} ms" if abs(ms) < 1000 else f"{seconds:.1f} s"
    tip = f"The agent's clock is {exact} {way} the server's; its results are moved onto ours"
    if abs(ms) <= SKEW_WARN_MS:
        return Markup(f'<span class="skew" title="{tip}">{text}</span>')
    return Markup(
        f'<span class="skew warn" title="{tip}. Fix the machine\'s time (NTP).">'
        f"{icon(State.DOWN)}{text}</span>"
    )


def since(dt: datetime | None) -> Markup:
    """How long the current state has lasted, the start as tooltip."""
    if dt is None:
        return Markup('<span class="muted">—</span>')
    iso = dt.isoformat()
    return Markup(
        f'<time datetime="{iso}" data-rel="since" title="since {_exact(iso)} UTC">{lasted(dt)}</time>'
    )


def uptime(value: float | None) -> Markup:
    """A share of time up (0..1) as a percentage, flagged below 99 %."""
    if value is None:
        return Markup('<span class="muted" title="No up or down time in the period">—</span>')
    pct = value * 100
    low = " low" if pct < 99 else ""
    text = "100" if pct >= 100 else f"{min(pct, 99.99):.2f}"
    return Markup(f'<span class="uptime{low}">{text} %</span>')


class _Cell(Protocol):
    start: datetime
    end: datetime
    state: str


def strip(cells: Sequence[_Cell]) -> Markup:
    """A store's last hours as cells, the worst state of any of its checks in each (the
    overview's strip, Uptime Kuma's heartbeats): 50 rows of 12 cells on every overview."""
    if not cells:
        return Markup('<span class="muted">—</span>')
    return _strip(tuple((c.start, c.end, c.state) for c in cells))


@lru_cache(maxsize=512)
def _strip(cells: tuple[tuple[datetime, datetime, str], ...]) -> Markup:
    said = ", ".join(f"{a:%H:%M} {escape(state_word(s).lower())}" for a, _b, s in cells)
    spans = "".join(
        f'<i class="seg-{escape(s)}" title="{a:%H:%M}\u2013{b:%H:%M} UTC: {escape(state_word(s))}"></i>'
        for a, b, s in cells
    )
    label = f"Last {len(cells)} hours: {said}"
    return Markup(f'<span class="hstrip" role="img" aria-label="{label}">{spans}</span>')


@lru_cache(maxsize=512)
def count_cell(n: int, hot: bool = False, label: str = "") -> Markup:
    """A count in a table cell, 0 greyed, a hot one (down) red."""
    cls = " strong down-text" if n and hot else "" if n else " zero"
    data = f' data-label="{escape(label)}"' if label else ""
    shown = n if n else '<span class="muted">0</span>'
    return Markup(f'<td class="num{cls}"{data}>{shown}</td>')


class _Covered(Protocol):
    up: float
    down: float
    span: float

    @property
    def uptime(self) -> float | None: ...


def period_words(seconds: float) -> str:
    """A period as people say it: '24 h', '7 days', '45 min'."""
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.0f} days"
    if seconds >= 3600:
        return f"{seconds / 3600:.0f} h"
    return f"{max(seconds, 0) / 60:.0f} min"


def uptime_covered(fig: _Covered | None) -> Markup:
    """Uptime with how much of the period it rests on: '94.2 % (monitored 7 min of 7 days)'."""
    if fig is None or fig.span <= 0:
        return Markup('<span class="muted">—</span>')
    seen = fig.up + fig.down
    share = seen / fig.span
    if fig.uptime is None:
        return Markup(f'<span class="muted">not monitored in the last {period_words(fig.span)}</span>')
    covered = "all" if share >= 0.999 else duration(seen)
    return Markup(
        f'{uptime(fig.uptime)} <span class="muted small-text coverage" data-monitored="{share:.4f}">'
        f"(monitored {covered} of {period_words(fig.span)})</span>"
    )


def uptime_in_a_cell(fig: _Covered | None) -> Markup:
    """`uptime_covered` for a table cell: the uptime, and under it how much of the period it
    rests on when that is not all of it ('of 3 min'), so 100 % never stands for a minute."""
    if fig is None or fig.span <= 0 or fig.uptime is None:
        words = period_words(fig.span) if fig is not None and fig.span > 0 else "period"
        return Markup(f'<span class="muted" title="Not monitored in the last {words}">—</span>')
    seen = fig.up + fig.down
    share = seen / fig.span
    if share >= 0.999:
        return uptime(fig.uptime)
    return Markup(
        f'<span title="Monitored {duration(seen)} of the last {period_words(fig.span)}">'
        f'{uptime(fig.uptime)}<br><span class="muted small-text coverage" data-monitored="{share:.4f}">'
        f"of {duration(seen)}</span></span>"
    )


class _OnTheLan(Protocol):
    lan_host: str | None
    lan_port: int | None
    lan_state: str


def lan(row: _OnTheLan) -> Markup:
    """A terminal's LAN address and, when it has LAN checks, their state."""
    if not row.lan_host:
        return Markup('<span class="muted" title="No LAN address">—</span>')
    port = f":{row.lan_port}" if row.lan_port else ""
    badge = f" {state(row.lan_state, True)}" if row.lan_state != State.NONE else ""
    return Markup(f'<span class="lan"><span class="mono">{escape(row.lan_host)}{port}</span>{badge}</span>')


def duration(seconds: float | None) -> str:
    """'0 s', '45 s', '12 min', '3 h 05 min', '2 d 4 h'."""
    if seconds is None:
        return "—"
    s = round(seconds)
    days, rest = divmod(s, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min" if not secs else f"{minutes} min {secs:02d} s"
    return f"{secs} s"


def pct(value: float | None) -> str:
    """A percentage (0..100) with three decimals, '100 %' when whole."""
    if value is None:
        return "—"
    return f"{value:.3f} %" if value < 100 else "100 %"


class _TerminalRow(_OnTheLan, Protocol):
    id: int
    poiid: str
    model: str
    label: str
    status: str
    status_since: datetime | None
    last_seen_at: datetime | None
    store_code: str
    store_name: str
    uptime_24h: _Covered | None

    @property
    def ws(self) -> str: ...

    @property
    def store_network_blamed(self) -> bool: ...

    def signature(self) -> str: ...


_BLAMED = (
    ' <span class="note" title="The terminal\'s own checks pass; its store\'s network checks fail">'
    "store network</span>"
)


def terminal_row(t: _TerminalRow, show_store: bool = True, oob: bool = False) -> Markup:
    """A terminal's row in the terminals list and a store's page (and sent again live): 50 to
    200 on a page, Python rather than a macro (a quarter of the CPU)."""
    swap = ' hx-swap-oob="true"' if oob else ""
    code = escape(t.store_code)
    store = (
        f'<td class="c-store"><a href="/stores/{code}" class="mono">{code}</a>'
        f' <span class="muted small-text">{escape(t.store_name)}</span></td>'
        if show_store
        else ""
    )
    blamed = _BLAMED if t.store_network_blamed else ""
    poiid = escape(t.poiid)
    return Markup(
        f'<tr id="t-{t.id}"{swap} data-sig="{escape(t.signature())}" class="row-{escape(t.status)}">\n'
        f'  <td class="mono c-main"><a href="/terminals/{poiid}">{poiid}</a></td>\n'
        f'  <td class="c-model">{escape(t.model)}</td>\n'
        f"  {store}\n"
        f'  <td class="c-label">{escape(t.label)}</td>\n'
        f'  <td class="status-cell">{state(t.status)}{blamed}'
        f' <span class="muted small-text">{since(t.status_since)}</span></td>\n'
        f'  <td class="ws-cell" data-label="Websocket">{ws(t.ws)}</td>\n'
        f'  <td class="c-lan" data-label="LAN">{lan(t)}</td>\n'
        f'  <td data-label="Last seen">{when(t.last_seen_at)}</td>\n'
        f'  <td class="num" data-label="Uptime 24 h">{uptime_in_a_cell(t.uptime_24h)}</td>\n'
        "</tr>"
    )


class _Window(Protocol):
    window_id: int

    @property
    def tooltip(self) -> str: ...


def wrench(m: _Window | None) -> Markup:
    """The wrench on a store in maintenance (windows/_wrench.html exports it)."""
    if not m:
        return Markup("")
    tip = escape(m.tooltip)
    return Markup(
        f'<span class="wrench" data-maintenance="{m.window_id}" title="{tip}">{icon(State.MAINTENANCE)}'
        f'<span class="sr-only">{tip}</span></span>'
    )


class _Reason(Protocol):
    text: str
    code: str
    detail: str


class _StoreRow(Protocol):
    id: int
    code: str
    name: str
    region: str
    agent_state: str | None
    agent_heard_at: datetime | None
    counts: dict[str, int]
    maintenance: _Window | None
    reason: _Reason | None
    strip: Sequence[_Cell]

    @property
    def store_status(self) -> StoreStatus: ...

    @property
    def worst(self) -> State: ...

    @property
    def store_offline(self) -> bool: ...

    @property
    def agent_offline(self) -> bool: ...

    @property
    def silent_since(self) -> datetime | None: ...

    @property
    def since(self) -> datetime | None: ...

    @property
    def other(self) -> int: ...

    @property
    def not_monitored(self) -> int: ...

    def signature(self) -> str: ...


_OFFLINE_TIP = "The store has lost its internet connection or its power"


def store_row(s: _StoreRow, oob: bool = False) -> Markup:
    """A store's row on the overview (and sent again live): Python rather than a macro."""
    status, worst = s.store_status, s.worst
    swap = ' hx-swap-oob="true"' if oob else ""
    offline = s.store_offline
    why = ""
    if offline:
        why = (
            f' <span class="reason" data-reason="store_offline" title="{_OFFLINE_TIP}">'
            f"Store offline: agent and all cloud terminals silent since {clock(s.silent_since)}</span>"
        )
    elif s.reason:
        r = s.reason
        tip = f' title="{escape(r.detail)}"' if r.detail else ""
        why = (
            f' <span class="reason reason-{escape(worst)}" data-reason="{escape(r.code)}"{tip}>'
            f"{escape(r.text)}</span>"
        )
    if s.agent_offline and not offline:
        heard = f"{s.agent_heard_at:%Y-%m-%d %H:%M:%S} UTC" if s.agent_heard_at else "it was enrolled"
        why += (
            f' <span class="note agent-off" data-agent-state="{escape(s.agent_state)}" title="The store agent'
            f" has not been heard since {heard}: this store's network and LAN checks are unknown\">"
            f"{icon('agent-offline')}agent offline</span>"
        )
    code, c = escape(s.code), s.counts
    return Markup(
        f'<tr id="s-{s.id}"{swap} data-sig="{escape(s.signature())}" data-store-status="{escape(status)}"'
        f' class="row-{escape(worst)} status-{escape(status)}">\n'
        f'  <th scope="row" class="c-main"><a href="/stores/{code}"><span class="mono">{code}</span>'
        f" {escape(s.name)}</a>{wrench(s.maintenance)}</th>\n"
        f'  <td class="c-region">{escape(s.region)}</td>\n'
        f'  <td class="status-cell">{store_state(status)}{why}</td>\n'
        f'  <td class="strip-cell">{strip(s.strip)}</td>\n'
        f"  {count_cell(c.get(State.DOWN, 0), hot=True, label='Down')}\n"
        f"  {count_cell(c.get(State.UNKNOWN, 0), label='Unknown')}\n"
        f"  {count_cell(c.get(State.UP, 0), label='Up')}\n"
        f"  {count_cell(s.other, label='Paused')}\n"
        f"  {count_cell(s.not_monitored, label='Not monitored')}\n"
        f'  <td class="c-since" data-label="Since">{since(s.since)}</td>\n'
        "</tr>"
    )


# --- the terminal page's tables (recent checks, state changes, what is checked) -------------
# Rows in Python like terminal_row: 20 + 20 + a few rows a page, each several helper calls.


class _Check(Protocol):
    checked_at: datetime
    manual: bool
    monitor_id: int
    outcome: str
    latency_ms: float | None
    diagnosis: str | None


class _Change(Protocol):
    at: datetime
    monitor_id: int
    from_state: str
    to_state: str
    diagnosis: str | None


class _Checked(Protocol):
    kind: str
    target: str
    state: str
    state_since: datetime | None
    interval_s: int
    last_checked_at: datetime | None
    last_diagnosis: str | None


_NO_FINDING = '<span class="muted">—</span>'


def _finding(code: str | None) -> str:
    return escape(diagnosis_title(code)) if code else _NO_FINDING


def check_rows(checks: Sequence[_Check], names: dict[int, str]) -> Markup:
    """The recent checks' rows (the body of their table)."""
    out = []
    for c in checks:
        manual = ' <span class="note">manual</span>' if c.manual else ""
        latency = f"{c.latency_ms:.0f} ms" if c.latency_ms is not None else "—"
        out.append(
            f"\n      <tr><td>{when(c.checked_at)}{manual}</td>\n"
            f'        <td class="mono small-text">{escape(names.get(c.monitor_id, ""))}</td>\n'
            f"        <td>{state(Outcome(c.outcome).state, small=True)}</td>\n"
            f'        <td class="num">{latency}</td>\n'
            f"        <td>{_finding(c.diagnosis)}</td></tr>\n      "
        )
    return Markup("".join(out))


def change_rows(changes: Sequence[_Change], names: dict[int, str]) -> Markup:
    """The state changes' rows (the body of their table)."""
    out = []
    for c in changes:
        out.append(
            f"\n      <tr><td>{when(c.at)}</td>"
            f'<td class="mono small-text">{escape(names.get(c.monitor_id, ""))}</td>\n'
            f"        <td>{state(c.from_state, small=True)} → {state(c.to_state, small=True)}</td>\n"
            f"        <td>{_finding(c.diagnosis)}</td></tr>\n      "
        )
    return Markup("".join(out))


def monitor_rows(monitors: Sequence[_Checked], scope: str) -> Markup:
    """What is checked: a row per monitor (`scope`: terminal, store network)."""
    out = []
    for m in monitors:
        out.append(
            f'\n    <tr data-scope="{scope}" class="row-{escape(m.state)}"><td>{escape(m.kind)}</td>'
            f'<td class="mono">{escape(m.target)}</td><td>{state(m.state, small=True)}</td>'
            f"<td>{since(m.state_since)}</td>\n"
            f'      <td class="num">{escape(m.interval_s)} s</td><td>{when(m.last_checked_at)}</td>\n'
            f"      <td>{_finding(m.last_diagnosis)}</td></tr>\n    "
        )
    return Markup("".join(out))


class _Segment(Protocol):
    start: datetime
    end: datetime
    state: str

    @property
    def seconds(self) -> float: ...


def timeline(segments: Sequence[_Segment], start: datetime, end: datetime, label: str) -> Markup:
    """A period's states as a bar of segments (the terminal page's 24 hours and 7 days): up to
    hundreds of segments, Python rather than a macro."""
    total = (end - start).total_seconds()
    said = "; ".join(
        f"{escape(state_word(s.state))} from {s.start:%d %b %H:%M} to {s.end:%d %b %H:%M}"
        for s in segments
        if s.state != State.NONE
    )
    rects = "".join(
        f'\n    \n    \n    <rect class="seg seg-{escape(s.state)}"'
        f' x="{(s.start - start).total_seconds() / total * 1000:.2f}" y="0"'
        f' width="{max(s.seconds / total * 1000, 0.8):.2f}" height="24">'
        f"<title>{escape(state_word(s.state))}: {s.start:%d %b %H:%M} \u2013 {s.end:%d %b %H:%M} UTC"
        "</title></rect>\n    "
        for s in segments
    )
    label = escape(label)
    return Markup(
        f'\n<figure class="timeline">\n  <figcaption>{label}</figcaption>\n'
        f'  <svg viewBox="0 0 1000 24" preserveAspectRatio="none" role="img" aria-label="{label}: {said}">\n'
        f"    {rects}\n  </svg>\n"
        f'  <div class="axis"><span>{start:%d %b %H:%M}</span><span>now</span></div>\n</figure>'
    )


def chart_dots(buckets: Sequence[dict]) -> Markup:
    """The latency chart's dots (a path of zero-length segments, drawn when buckets are few)."""
    return Markup("".join(f"M{b['cx']} {b['cy']}h0" for b in buckets))


def chart_rects(buckets: Sequence[dict], h: int) -> Markup:
    """The latency chart's hover areas, one per bucket with its span and mean as title."""
    return Markup(
        "".join(
            f'<rect class="bucket" x="{b["x"]}" y="0" width="{b["w"]}" height="{h}">'
            f"<title>{escape(b['title'])}</title></rect>"
            for b in buckets
        )
    )
