"""The one state vocabulary: every state, outcome and verdict name, with the words people read.

The values are the strings stored in the database and sent by the API; `StrEnum` members
compare equal to them, so `monitor.state == State.DOWN` works on a plain column value.
No other module spells these names out.
"""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    """A monitor's state, and the status derived for terminals and stores."""

    UP = "up"
    DOWN = "down"
    UNKNOWN = "unknown"  # we could not tell (our side failed, or no recent result): never downtime
    PAUSED = "paused"
    MAINTENANCE = "maintenance"
    NONE = "none"  # nothing checked here: no monitor of that kind, or before the monitor existed

    @property
    def word(self) -> str:
        return _STATE_WORDS[self]

    @property
    def severity(self) -> int:
        """Worst first: lists sort by this, `worst()` picks the smallest."""
        return _SEVERITY[self]


# The states a monitor can be in (NONE is only ever derived for display).
MONITOR_STATES: tuple[State, ...] = (State.UP, State.DOWN, State.UNKNOWN, State.PAUSED, State.MAINTENANCE)
# Set by people, not by results: results are recorded, the state stays.
MANUAL_STATES: frozenset[State] = frozenset({State.PAUSED, State.MAINTENANCE})

_STATE_WORDS = {
    State.UP: "Up",
    State.DOWN: "Down",
    State.UNKNOWN: "Unknown",
    State.PAUSED: "Paused",
    State.MAINTENANCE: "Maintenance",
    State.NONE: "Not monitored",
}
_SEVERITY = {
    State.DOWN: 0,
    State.UNKNOWN: 1,
    State.MAINTENANCE: 2,
    State.PAUSED: 3,
    State.UP: 4,
    State.NONE: 5,
}
# Worst first, as filters and summaries list them.
STATES_WORST_FIRST: tuple[State, ...] = tuple(sorted(MONITOR_STATES, key=lambda s: _SEVERITY[s]))


def worst(states: list[str] | tuple[str, ...]) -> State:
    """The most severe of these states; NONE when there are none."""
    if not states:
        return State.NONE
    return min((State(s) for s in states), key=lambda s: _SEVERITY[s])


class StoreStatus(StrEnum):
    """A store's answer to the shop's question, "can we take cards?" (app.monitoring.status)."""

    CANNOT_PAY = "cannot_pay"  # its network is down, or no terminal can pay
    DEGRADED = "degraded"  # some terminals down, others can still pay
    UNKNOWN = "unknown"  # we could not tell
    MAINTENANCE = "maintenance"
    PAUSED = "paused"
    UP = "up"
    NONE = "none"  # nothing observed that says whether it can take cards: not monitored

    @property
    def word(self) -> str:
        return _STORE_WORDS[self]

    @property
    def tip(self) -> str:
        return _STORE_TIPS[self]

    @property
    def severity(self) -> int:
        """Worst first: the overview sorts by this."""
        return list(StoreStatus).index(self)

    @property
    def colour(self) -> State:
        """The terminal state whose icon and colour the badge borrows (degraded has its own)."""
        return _STORE_COLOURS[self]


_STORE_WORDS = {
    StoreStatus.CANNOT_PAY: "Cannot take cards",
    StoreStatus.DEGRADED: "Degraded",
    StoreStatus.UNKNOWN: "Unknown",
    StoreStatus.MAINTENANCE: "Maintenance",
    StoreStatus.PAUSED: "Paused",
    StoreStatus.UP: "Up",
    StoreStatus.NONE: "Not monitored",
}
_STORE_TIPS = {
    StoreStatus.CANNOT_PAY: "The store's network cannot reach the processor, or none of its terminals can",
    StoreStatus.DEGRADED: "Some terminals are down; the others can still take cards",
    StoreStatus.UNKNOWN: "TermPulse could not tell (no recent result, or our side failed)",
    StoreStatus.MAINTENANCE: "In maintenance: not counted as down",
    StoreStatus.PAUSED: "Monitoring paused",
    StoreStatus.UP: "Every monitored terminal and network check is up",
    StoreStatus.NONE: "Nothing is checked that says whether its terminals can pay",
}
_STORE_COLOURS = {
    StoreStatus.CANNOT_PAY: State.DOWN,
    StoreStatus.DEGRADED: State.DOWN,
    StoreStatus.UNKNOWN: State.UNKNOWN,
    StoreStatus.MAINTENANCE: State.MAINTENANCE,
    StoreStatus.PAUSED: State.PAUSED,
    StoreStatus.UP: State.UP,
    StoreStatus.NONE: State.NONE,
}
# Stores that need someone: the overview's "stores affected" tile.
STORES_AFFECTED: tuple[StoreStatus, ...] = (StoreStatus.CANNOT_PAY, StoreStatus.DEGRADED)


class CloudState(StrEnum):
    """A terminal's cloud connection (the Websocket column)."""

    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    NOT_ENABLED = "not_enabled"
    UNKNOWN = "unknown"

    @property
    def word(self) -> str:
        return _CLOUD_WORDS[self]

    @property
    def tip(self) -> str:
        return _CLOUD_TIPS[self]


_CLOUD_WORDS = {
    CloudState.CONNECTED: "Connected",
    CloudState.DISCONNECTED: "Disconnected",
    CloudState.NOT_ENABLED: "Not enabled",
    CloudState.UNKNOWN: "Unknown",
}
_CLOUD_TIPS = {
    CloudState.CONNECTED: "Cloud connection (WebSocket) is live",
    CloudState.DISCONNECTED: "Cloud connection (WebSocket) is down",
    CloudState.NOT_ENABLED: "Cloud connection (WebSocket) is not enabled for this terminal",
    CloudState.UNKNOWN: "Cloud connection state is unknown: the provider could not be asked",
}


class Outcome(StrEnum):
    """What one run of a check found."""

    OK = "ok"
    FAIL = "fail"  # the target's fault: counts towards down
    ERROR = "error"  # ours (guard, internal error, provider API trouble): the state is unknown

    @property
    def word(self) -> str:
        return _OUTCOME_WORDS[self]

    @property
    def state(self) -> State:
        """The state one such run stands for (a manual check's row, a report line)."""
        return {Outcome.OK: State.UP, Outcome.FAIL: State.DOWN}.get(self, State.UNKNOWN)


_OUTCOME_WORDS = {Outcome.OK: "OK", Outcome.FAIL: "FAILED", Outcome.ERROR: "NOT CHECKED"}


class Verdict(StrEnum):
    """Check connection's answer for a terminal."""

    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    COULD_NOT_CHECK = "could_not_check"
    NOT_MONITORED = "not_monitored"  # nothing of the terminal's own to check (only its store's network)

    @property
    def headline(self) -> str:
        return _HEADLINES[self]

    @property
    def state(self) -> State:
        return {
            Verdict.CONNECTED: State.UP,
            Verdict.DISCONNECTED: State.DOWN,
            Verdict.NOT_MONITORED: State.NONE,
        }.get(self, State.UNKNOWN)

    @classmethod
    def of(cls, outcomes: list[Outcome]) -> Verdict:
        """Any failure -> disconnected; else anything we could not check (or nothing at all)
        -> could not check; else connected."""
        if Outcome.FAIL in outcomes:
            return cls.DISCONNECTED
        if not outcomes or Outcome.ERROR in outcomes:
            return cls.COULD_NOT_CHECK
        return cls.CONNECTED


_HEADLINES = {
    Verdict.CONNECTED: "Terminal is connected",
    Verdict.DISCONNECTED: "Terminal is disconnected",
    Verdict.COULD_NOT_CHECK: "Could not check the terminal",
    Verdict.NOT_MONITORED: "Nothing about this terminal can be checked",
}


class MonitorKind(StrEnum):
    DNS = "dns"
    PING = "ping"
    TCP = "tcp"
    TLS = "tls"
    HTTPS = "https"
    WEBSOCKET = "websocket"
    PAYNT_EPOS = "paynt_epos"
    CLOUD = "cloud"

    @property
    def word(self) -> str:
        return _KIND_WORDS[self]

    @property
    def order(self) -> int:
        """The order steps are shown in: DNS -> TCP -> TLS -> HTTP -> provider API."""
        return list(MonitorKind).index(self)


_KIND_WORDS = {
    MonitorKind.DNS: "DNS",
    MonitorKind.PING: "Ping",
    MonitorKind.TCP: "TCP",
    MonitorKind.TLS: "TLS",
    MonitorKind.HTTPS: "HTTPS",
    MonitorKind.WEBSOCKET: "WebSocket",
    MonitorKind.PAYNT_EPOS: "EPOS API",
    MonitorKind.CLOUD: "Cloud",
}


class AgentState(StrEnum):
    """A store agent's health: heard within 3 heartbeats, or not."""

    ONLINE = "online"
    OFFLINE = "offline"  # silent for 3 heartbeats: its monitors are unknown (agent_offline)
    NEVER_SEEN = "never_seen"  # enrolled, not connected yet
    REVOKED = "revoked"

    @property
    def word(self) -> str:
        return _AGENT_WORDS[self]

    @property
    def severity(self) -> int:
        """Worst first, as the Agents page lists them."""
        return list(_AGENT_WORDS).index(self)


_AGENT_WORDS = {
    AgentState.OFFLINE: "Offline",
    AgentState.NEVER_SEEN: "Never seen",
    AgentState.ONLINE: "Online",
    AgentState.REVOKED: "Revoked",
}
