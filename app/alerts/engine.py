"""The alert evaluator: incidents from the one state machine, and what to notify.

Every few seconds, in one worker at a time (an advisory lock on PostgreSQL), in ONE
transaction so an incident change and its outbox rows commit together:

1. Read the state changes after the cursor (app.monitoring StateChange rows): the stores they
   touch, plus every store with an open incident and every store whose derived status is
   `down` (so a change committed out of id order is never missed: the current states are
   the truth, the state changes say where to look first).
2. Per store: failing (status `down`: a network check or a terminal down) opens an incident
   or adds the checks that joined; all involved checks up again starts the quiet period,
   after which the incident resolves (a flapping terminal keeps one incident open). A store
   that is `unknown` opens nothing: unknown is our side.
3. Fleet grouping: more than `alert_fleet_stores` stores failing within the window, or
   `alert_fleet_cause_stores` of the same cause (diagnosis at the same processor host, or
   the provider's cloud), become ONE fleet incident listing the stores; the store incidents
   inside it do not notify on their own.
4. "TermPulse cannot check": a store agent offline, or checks overdue (a stalled checker).
5. Routing: rules (all, region, tag, fleet) with a minimum duration; reminders until
   acknowledged; escalation to a second channel after a delay; resolution to the same
   channels. Stores quiet (maintenance window, outside trading hours) notify nothing.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.alerts import messages
from app.alerts.messages import StoreFacts
from app.alerts.models import (
    CANNOT_CHECK,
    FLEET,
    MATCH_ALL,
    MATCH_FLEET,
    MATCH_REGION,
    MATCH_TAG,
    NOTIFY_ESCALATION,
    NOTIFY_OPENED,
    NOTIFY_REMINDER,
    NOTIFY_RESOLVED,
    OPEN,
    RESOLVED,
    STORE,
    AlertChannel,
    AlertCursor,
    AlertRule,
    Incident,
    IncidentEvent,
    IncidentMember,
    IncidentNotice,
    Notification,
)
from app.config import Settings
from app.db import dialect_of, select_where_in
from app.errors import Conflict, NotFound
from app.inventory.models import Agent, Monitor, Store, Terminal
from app.monitoring.models import StateChange
from app.vocabulary import AgentState, MonitorKind, State, StoreStatus
from app.windows.service import quiet_stores

CURSOR = "state_changes"
_CHANGES_PER_TICK = 50_000
# A member check counts as back when it is in one of these (unknown: we cannot tell yet).
_BACK = {State.UP, State.PAUSED, State.MAINTENANCE}
# A store with one of these statuses and a check down is failing (app.monitoring.status).
_FAILING = (StoreStatus.CANNOT_PAY, StoreStatus.DEGRADED)


@dataclass(frozen=True)
class AlertConfig:
    base_url: str = "http://127.0.0.1:8000"
    quiet_period_s: float = 120
    group_wait_s: float = 10  # a new store incident waits this long for its fleet before notifying
    fleet_stores: int = 10
    fleet_cause_stores: int = 5
    fleet_window_s: float = 300
    stalled_after_s: float = 180
    # Off for a while after a worker starts: after downtime every check is overdue until the
    # checker has caught up, which is not a stall.
    watch_stalled: bool = True

    @classmethod
    def from_settings(cls, settings: Settings) -> AlertConfig:
        return cls(
            base_url=settings.base_url,
            quiet_period_s=settings.alert_quiet_period_s,
            group_wait_s=settings.alert_group_wait_s,
            fleet_stores=settings.alert_fleet_stores,
            fleet_cause_stores=settings.alert_fleet_cause_stores,
            fleet_window_s=settings.alert_fleet_window_s,
            stalled_after_s=settings.alert_stalled_after_s,
        )


@dataclass
class Report:
    changes: int = 0
    opened: int = 0
    resolved: int = 0
    fleet_opened: int = 0
    queued: int = 0


@dataclass
class _MonitorRow:
    id: int
    store_id: int
    terminal_id: int | None
    kind: str
    target: str
    state: str
    state_since: datetime | None
    diagnosis: str | None
    enabled: bool


@dataclass
class _Store:
    id: int
    code: str
    name: str
    region: str
    tags: list[str]
    timezone: str
    status: str
    status_reason: str | None
    monitors: list[_MonitorRow] = field(default_factory=list)
    terminals_total: int = 0
    terminals_down: int = 0

    @property
    def down(self) -> list[_MonitorRow]:
        return [m for m in self.monitors if m.enabled and m.state == State.DOWN]

    def facts(self, since: datetime | None = None) -> StoreFacts:
        down = self.down
        cause, target = _dominant(down, self.status_reason)
        network = [f"{_kind_word(m.kind)} {m.target}" for m in down if m.terminal_id is None]
        first = min((m.state_since for m in down if m.state_since), default=None)
        return StoreFacts(
            id=self.id,
            code=self.code,
            name=self.name,
            region=self.region,
            timezone=self.timezone,
            terminals_down=self.terminals_down,
            terminals_total=self.terminals_total,
            network_down=network,
            since=since or first,
            cannot_pay=self.status == StoreStatus.CANNOT_PAY,
            diagnosis=cause,
            target=target,
        )


def _dominant(down: list[_MonitorRow], reason: str | None) -> tuple[str | None, str | None]:
    """The diagnosis most of the down checks share (store network checks first), and a target."""
    if reason:
        return reason, None
    if not down:
        return None, None
    counts = Counter(m.diagnosis for m in down if m.diagnosis)
    if not counts:
        return None, None
    network = [m for m in down if m.terminal_id is None and m.diagnosis]
    if network:
        return network[0].diagnosis, network[0].target
    code = counts.most_common(1)[0][0]
    target = next((m.target for m in down if m.diagnosis == code), None)
    return code, target


def _cause_key(down: list[_MonitorRow], reason: str | None) -> str | None:
    """What groups stores into one fleet incident: the same diagnosis at the same processor
    host (a store network check), or the same cloud/terminal diagnosis (a provider's cloud)."""
    if reason:
        return reason
    network = [m for m in down if m.terminal_id is None and m.diagnosis]
    if network:
        host = network[0].target.rsplit(":", 1)[0] if "://" not in network[0].target else network[0].target
        return f"{network[0].diagnosis}@{host}"[:300]
    code, _ = _dominant(down, None)
    return code


class Evaluator:
    """One evaluation pass: `await Evaluator(session, now, config).run()` inside a transaction."""

    def __init__(self, session: AsyncSession, now: datetime, config: AlertConfig):
        self.session = session
        self.now = now
        self.config = config
        self.report = Report()
        self.stores: dict[int, _Store] = {}
        self.events: list[dict[str, Any]] = []
        self.notes: list[dict[str, Any]] = []  # outbox rows
        self.resolved_now: list[Incident] = []
        self.opening: list[tuple[Incident, _Store, list[_MonitorRow], StoreFacts]] = []
        self.member_rows: list[dict[str, Any]] = []  # inserted at the end, in one statement

    # --- the pass ----------------------------------------------------------------------------

    async def run(self) -> Report:
        touched = await self._read_changes()
        open_incidents = await self._open_incidents()
        store_incidents = {
            i.store_id: i for i in open_incidents if i.kind == STORE and i.store_id is not None
        }
        failing = set(
            (await self.session.execute(select(Store.id).where(Store.status.in_(_FAILING)))).scalars()
        )
        # Where to look: stores whose checks changed; failing stores without an incident (a
        # change committed out of id order is found this way); incidents whose store is no
        # longer failing or that are in their quiet period. An open incident of a store still
        # failing and untouched has nothing new: it is not read again (50,000 checks down).
        settling = {
            sid for sid, i in store_incidents.items() if sid not in failing or i.recovering_since is not None
        }
        candidates = touched | (failing - set(store_incidents)) | settling
        await self._load_stores(candidates)
        members = await self._members([i.id for sid, i in store_incidents.items() if sid in candidates])
        new_incidents: list[Incident] = []
        for sid in sorted(candidates):
            store = self.stores.get(sid)
            if store is None:
                continue
            incident = store_incidents.get(sid)
            opened = await self._evaluate_store(
                store, incident, members.get(incident.id, {}) if incident else {}
            )
            if opened is not None:
                new_incidents.append(opened)
                store_incidents[sid] = opened
        self.session.add_all(new_incidents)
        await self.session.flush()  # one INSERT for every incident opened in this pass
        for incident, store, down, facts in self.opening:
            self.report.opened += 1
            d = messages.diagnosis_of(facts.diagnosis, facts.target)
            self._event(
                incident.id,
                "opened",
                f"{facts.label}: {store.terminals_down} of {store.terminals_total} terminals down, "
                f"{len(down)} checks failing" + (f" ({d.title})" if d else ""),
            )
            self._add_members(incident, down, announce=False)
        quiet = await quiet_stores(
            self.session, [sid for sid, i in store_incidents.items() if i.state == OPEN], self.now
        )
        for sid, incident in store_incidents.items():
            self._set_silenced(incident, quiet.get(sid))
        fleets = [i for i in open_incidents if i.kind == FLEET]
        await self._group_fleet(store_incidents, fleets, quiet)
        await self._cannot_check([i for i in open_incidents if i.kind == CANNOT_CHECK])
        await self.session.flush()
        await self._notify(store_incidents)
        await self._write()
        return self.report

    # --- 1. the state changes -------------------------------------------------------------------

    async def _read_changes(self) -> set[int]:
        cursor = await self.session.get(AlertCursor, CURSOR, with_for_update=True)
        if cursor is None:
            # First run: start from the newest change (history before alerting is not alerted;
            # the current states still open incidents for what is down now).
            last = await self.session.scalar(select(func.max(StateChange.id))) or 0
            cursor = AlertCursor(name=CURSOR, last_change_id=last, extra={})
            self.session.add(cursor)
        rows = (
            await self.session.execute(
                select(StateChange.id, StateChange.store_id)
                .where(StateChange.id > cursor.last_change_id)
                .order_by(StateChange.id)
                .limit(_CHANGES_PER_TICK)
            )
        ).all()
        if rows:
            cursor.last_change_id = rows[-1][0]
        cursor.evaluated_at = self.now
        self.report.changes = len(rows)
        return {r[1] for r in rows}

    async def _open_incidents(self) -> list[Incident]:
        query = select(Incident).where(Incident.state == OPEN).order_by(Incident.id)
        if dialect_of(self.session) == "postgresql":
            query = query.with_for_update()  # an acknowledgement waits for this pass, never lost
        return list((await self.session.execute(query)).scalars())

    async def _load_stores(self, store_ids: Iterable[int]) -> None:
        ids = sorted(store_ids)
        if not ids:
            return
        cols = (
            Store.id,
            Store.code,
            Store.name,
            Store.region,
            Store.tags,
            Store.timezone,
            Store.status,
            Store.status_reason,
        )
        for r in await select_where_in(self.session, select(*cols), Store.id, ids):
            self.stores[r.id] = _Store(
                r.id,
                r.code,
                r.name,
                r.region or "",
                [t for t in (r.tags or "").split(";") if t],
                r.timezone or "UTC",
                r.status,
                r.status_reason,
            )
        mcols = (
            Monitor.id,
            Monitor.store_id,
            Monitor.terminal_id,
            Monitor.kind,
            Monitor.target,
            Monitor.state,
            Monitor.state_since,
            Monitor.last_diagnosis,
            Monitor.enabled,
        )
        for m in await select_where_in(self.session, select(*mcols), Monitor.store_id, ids):
            store = self.stores.get(m.store_id)
            if store is not None:
                store.monitors.append(_MonitorRow(*m))
        tq = select(Terminal.store_id, Terminal.status, func.count()).group_by(
            Terminal.store_id, Terminal.status
        )
        for sid, status, n in await select_where_in(self.session, tq, Terminal.store_id, ids):
            store = self.stores.get(sid)
            if store is not None:
                store.terminals_total += n
                if status == State.DOWN:
                    store.terminals_down += n

    async def _members(self, incident_ids: list[int]) -> dict[int, dict[int, IncidentMember]]:
        found: dict[int, dict[int, IncidentMember]] = defaultdict(dict)
        for m in await select_where_in(
            self.session, select(IncidentMember), IncidentMember.incident_id, incident_ids, scalars=True
        ):
            found[m.incident_id][m.monitor_id] = m
        return found

    # --- 2. per store ---------------------------------------------------------------------------

    def _event(self, incident_id: int, kind: str, text: str) -> None:
        self.events.append({"incident_id": incident_id, "at": self.now, "kind": kind, "text": text})

    async def _evaluate_store(
        self, store: _Store, incident: Incident | None, members: dict[int, IncidentMember]
    ) -> Incident | None:
        down = store.down
        failing = store.status in _FAILING and bool(down)
        if failing:
            facts = store.facts()
            if incident is None:
                incident = Incident(
                    kind=STORE,
                    store_id=store.id,
                    state=OPEN,
                    title=messages.store_headline(facts),
                    cause=facts.diagnosis,
                    cause_key=_cause_key(down, store.status_reason),
                    opened_at=min(facts.since or self.now, self.now),
                    created_at=self.now,
                    terminals_down=store.terminals_down,
                    terminals_total=store.terminals_total,
                )
                # Inserted with the others opened in this pass (one flush), then its timeline.
                self.opening.append((incident, store, down, facts))
                return incident
            if incident.recovering_since is not None:
                incident.recovering_since = None
                self._event(
                    incident.id, "down_again", "Failing again within the quiet period: still one incident"
                )
            incident.terminals_down = store.terminals_down
            incident.terminals_total = store.terminals_total
            incident.title = messages.store_headline(facts)
            incident.cause = facts.diagnosis
            self._add_members(incident, [m for m in down if m.id not in members], announce=True)
            for m in down:
                member = members.get(m.id)
                if member is not None and member.up_at is not None:
                    member.up_at = None
                    self._event(incident.id, "joined", f"{_what(m)} down again")
            self._mark_back(incident, store, members)
            return None
        if incident is None:
            return None
        incident.terminals_down = store.terminals_down
        self._mark_back(incident, store, members)
        states = {m.id: m for m in store.monitors}
        everything_back = all(
            (mon := states.get(mid)) is None or not mon.enabled or mon.state in _BACK for mid in members
        )
        if not everything_back:
            return None  # some involved check is unknown: we cannot say it is over
        if incident.recovering_since is None:
            incident.recovering_since = self.now
            self._event(
                incident.id,
                "recovering",
                f"All checks up again; resolves after {self.config.quiet_period_s:g} s without failure",
            )
        if (self.now - incident.recovering_since).total_seconds() >= self.config.quiet_period_s:
            self._resolve(incident, "All terminals and checks up")
        return None

    def _add_members(self, incident: Incident, monitors: list[_MonitorRow], *, announce: bool) -> None:
        for m in monitors:
            self.member_rows.append(
                {
                    "incident_id": incident.id,
                    "monitor_id": m.id,
                    "terminal_id": m.terminal_id,
                    "kind": m.kind,
                    "target": m.target,
                    "diagnosis": m.diagnosis,
                    "down_since": m.state_since or self.now,
                    "up_at": None,
                }
            )
            if announce:
                d = messages.diagnosis_of(m.diagnosis, m.target)
                self._event(incident.id, "joined", f"{_what(m)} down" + (f": {d.title}" if d else ""))

    def _mark_back(self, incident: Incident, store: _Store, members: dict[int, IncidentMember]) -> None:
        states = {m.id: m for m in store.monitors}
        for mid, member in members.items():
            mon = states.get(mid)
            if member.up_at is None and (mon is None or not mon.enabled or mon.state in _BACK):
                member.up_at = self.now
                if mon is not None:
                    self._event(incident.id, "back", f"{_what(mon)} up")

    def _resolve(self, incident: Incident, why: str) -> None:
        incident.state = RESOLVED
        incident.resolved_at = self.now
        incident.recovering_since = incident.recovering_since or self.now
        self.report.resolved += 1
        self._event(incident.id, "resolved", why)
        self.resolved_now.append(incident)

    def _set_silenced(self, incident: Incident, reason: str | None) -> None:
        if incident.state != OPEN or incident.silenced == reason:
            return
        incident.silenced = reason
        self._event(
            incident.id,
            "silenced" if reason else "unsilenced",
            f"Nothing is notified: {reason}" if reason else "Notifications resume (no window now)",
        )

    # --- 3. fleet ---------------------------------------------------------------------------

    async def _group_fleet(
        self, store_incidents: dict[int, Incident], fleets: list[Incident], quiet: dict[int, str]
    ) -> None:
        window = timedelta(seconds=self.config.fleet_window_s)
        loose = [
            i
            for sid, i in store_incidents.items()
            if i.state == OPEN
            and i.parent_id is None
            and sid not in quiet
            and self.now - i.created_at <= window
        ]
        if loose:
            noticed = set(
                await select_where_in(
                    self.session,
                    select(IncidentNotice.incident_id),
                    IncidentNotice.incident_id,
                    [i.id for i in loose],
                    scalars=True,
                )
            )
            loose = [i for i in loose if i.id not in noticed]  # a store already told stays on its own
        open_fleets = [f for f in fleets if f.state == OPEN]
        for incident in list(loose):
            fleet = next(
                (
                    f
                    for f in open_fleets
                    # one cause: the stores of that cause; many stores at once: any, for a while
                    if (f.cause_key is not None and f.cause_key == incident.cause_key)
                    or (f.cause_key is None and self.now - f.created_at <= window)
                ),
                None,
            )
            if fleet is not None:
                self._join(fleet, [incident])
                loose.remove(incident)
        by_cause: dict[str | None, list[Incident]] = defaultdict(list)
        for i in loose:
            by_cause[i.cause_key].append(i)
        groups: list[tuple[str | None, list[Incident]]] = [
            (key, members)
            for key, members in by_cause.items()
            if key is not None and len(members) >= self.config.fleet_cause_stores
        ]
        grouped = {i.id for _, members in groups for i in members}
        rest = [i for i in loose if i.id not in grouped]
        if len(rest) > self.config.fleet_stores:
            groups.append((None, rest))
        for key, members in groups:
            fleet = Incident(
                kind=FLEET,
                store_id=None,
                state=OPEN,
                title="",
                cause=Counter(i.cause for i in members if i.cause).most_common(1)[0][0]
                if any(i.cause for i in members)
                else None,
                cause_key=key,
                opened_at=min(i.opened_at for i in members),
                created_at=self.now,
            )
            self.session.add(fleet)
            await self.session.flush()
            self.report.fleet_opened += 1
            self._event(fleet.id, "opened", f"{len(members)} stores failing at once: one fleet incident")
            self._join(fleet, members, announce=False)
            fleets.append(fleet)
        # Fleet figures, and fleet incidents whose stores are all resolved.
        for fleet in fleets:
            if fleet.state != OPEN:
                continue
            children = [i for i in store_incidents.values() if i.parent_id == fleet.id]
            still = [i for i in children if i.state == OPEN]
            if children or fleet.stores_count:
                open_children = await self._open_children(fleet.id) if not children else still
                if not open_children:
                    self._resolve(fleet, "Every store of the fleet incident has recovered")
                    continue
                fleet.terminals_down = sum(i.terminals_down for i in open_children)
                fleet.terminals_total = sum(i.terminals_total for i in open_children)
            fleet.title = messages.fleet_title(
                "", fleet.stores_count, fleet.terminals_down, fleet.cause
            ).removeprefix(messages.PREFIX + " ")

    async def _open_children(self, fleet_id: int) -> list[Incident]:
        return list(
            (
                await self.session.execute(
                    select(Incident).where(Incident.parent_id == fleet_id, Incident.state == OPEN)
                )
            ).scalars()
        )

    def _join(self, fleet: Incident, incidents: list[Incident], *, announce: bool = True) -> None:
        codes = []
        for i in incidents:
            i.parent_id = fleet.id
            store = self.stores.get(i.store_id or 0)
            code = store.code if store else f"#{i.store_id}"
            codes.append(code)
            self._event(i.id, "grouped", f"Part of fleet incident #{fleet.id}: notified there")
        fleet.stores_count += len(incidents)
        if announce:
            for code in codes:
                self._event(fleet.id, "joined", f"{code} joined")
        else:
            listed = ", ".join(sorted(codes)[:50]) + (
                f" and {len(codes) - 50} more" if len(codes) > 50 else ""
            )
            self._event(fleet.id, "joined", f"Stores: {listed}")

    # --- 4. TermPulse cannot check --------------------------------------------------------------

    async def _cannot_check(self, open_ones: list[Incident]) -> None:
        by_key = {i.cause_key or "": i for i in open_ones}
        wanted: dict[str, tuple[str, str, datetime]] = {}
        agents = (
            await self.session.execute(
                select(Agent.id, Agent.name, Agent.state_since).where(
                    Agent.state == AgentState.OFFLINE, Agent.revoked_at.is_(None)
                )
            )
        ).all()
        for agent_id, name, since in agents:
            codes = list(
                (await self.session.execute(select(Store.code).where(Store.agent_id == agent_id))).scalars()
            )
            where = f" (stores {', '.join(sorted(codes)[:10])})" if codes else ""
            wanted[f"agent:{agent_id}"] = (
                f"TermPulse cannot check: store agent {name} is offline{where}",
                "agent_offline",
                since or self.now,
            )
        cutoff = self.now - timedelta(seconds=self.config.stalled_after_s)
        if not self.config.watch_stalled:
            if "stalled" in by_key:  # neither opened nor resolved while warming up
                kept = by_key["stalled"]
                wanted["stalled"] = (kept.title, kept.cause or "checker_stalled", kept.opened_at)
            overdue = 0
        else:
            overdue = await self._overdue(cutoff)
        if overdue:
            wanted["stalled"] = (
                f"TermPulse cannot check: {overdue} checks are overdue (is a worker running?)",
                "checker_stalled",
                cutoff,
            )
        await self._open_or_resolve(wanted, by_key)

    async def _overdue(self, cutoff: datetime) -> int:
        return int(
            await self.session.scalar(
                select(func.count()).where(
                    Monitor.enabled.is_(True),
                    Monitor.agent_id.is_(None),
                    Monitor.next_due_at < cutoff,
                )
            )
            or 0
        )

    async def _open_or_resolve(
        self, wanted: dict[str, tuple[str, str, datetime]], by_key: dict[str, Incident]
    ) -> None:
        for key, (title, cause, since) in wanted.items():
            if key in by_key:
                by_key[key].title = title
                continue
            incident = Incident(
                kind=CANNOT_CHECK,
                state=OPEN,
                title=title,
                cause=cause,
                cause_key=key,
                opened_at=min(since, self.now),
                created_at=self.now,
            )
            self.session.add(incident)
            await self.session.flush()
            self.report.opened += 1
            self._event(
                incident.id, "opened", title + ". Nothing checked there is counted as down meanwhile."
            )
        for key, incident in by_key.items():
            if key not in wanted:
                self._resolve(incident, "TermPulse can check again")

    # --- 5. routing -----------------------------------------------------------------------------

    async def _notify(self, store_incidents: dict[int, Incident]) -> None:
        rules = list(
            (
                await self.session.execute(
                    select(AlertRule)
                    .join(AlertChannel, AlertChannel.id == AlertRule.channel_id)
                    .where(AlertRule.enabled.is_(True), AlertChannel.enabled.is_(True))
                    .order_by(AlertRule.id)
                )
            ).scalars()
        )
        top = list(
            (
                await self.session.execute(
                    select(Incident).where(Incident.state == OPEN, Incident.parent_id.is_(None))
                )
            ).scalars()
        )
        ids = [i.id for i in top] + [i.id for i in self.resolved_now]
        notices: dict[tuple[int, int], IncidentNotice] = {
            (n.incident_id, n.rule_id): n
            for n in await select_where_in(
                self.session, select(IncidentNotice), IncidentNotice.incident_id, ids, scalars=True
            )
        }
        if not rules and not notices:
            return
        names = dict((await self.session.execute(select(AlertChannel.id, AlertChannel.name))).all())
        unread = {i.store_id for i in top if i.kind == STORE and i.store_id is not None} - set(self.stores)
        await self._load_stores(unread)
        queue: list[tuple[Incident, int, str, AlertRule]] = []
        for incident in top:
            if incident.silenced:
                continue
            store = self.stores.get(incident.store_id or 0)
            if incident.kind == STORE and store is None:
                continue
            for rule in rules:
                if not _matches(rule, incident, store):
                    continue
                notice = notices.get((incident.id, rule.id))
                age = (self.now - incident.opened_at).total_seconds()
                if notice is None:
                    if age < rule.min_duration_s:
                        continue
                    if incident.kind == STORE and (self.now - incident.created_at).total_seconds() < (
                        self.config.group_wait_s
                    ):
                        continue  # wait a moment for the rest of a fleet-wide event
                    notice = IncidentNotice(
                        incident_id=incident.id,
                        rule_id=rule.id,
                        channel_id=rule.channel_id,
                        notified_at=self.now,
                    )
                    self.session.add(notice)
                    notices[(incident.id, rule.id)] = notice
                    queue.append((incident, rule.channel_id, NOTIFY_OPENED, rule))
                    continue
                if incident.acked_at is not None:
                    continue
                if rule.remind_every_s and (
                    self.now - (notice.reminded_at or notice.notified_at)
                ).total_seconds() >= (rule.remind_every_s):
                    notice.reminded_at = self.now
                    queue.append((incident, rule.channel_id, NOTIFY_REMINDER, rule))
                if (
                    rule.escalate_channel_id is not None
                    and rule.escalate_after_s is not None
                    and notice.escalated_at is None
                    and (self.now - notice.notified_at).total_seconds() >= rule.escalate_after_s
                ):
                    notice.escalated_at = self.now
                    notice.escalate_channel_id = rule.escalate_channel_id
                    queue.append((incident, rule.escalate_channel_id, NOTIFY_ESCALATION, rule))
        # The stores of a fleet incident are read only when it has something to send.
        fleet_children = await self._children_facts(sorted({i.id for i, _, _, _ in queue if i.kind == FLEET}))
        for incident, channel_id, kind, rule in queue:
            store = self.stores.get(incident.store_id or 0)
            self._queue(incident, channel_id, kind, store, fleet_children, names, rule)
        for incident in self.resolved_now:
            channels: list[int] = []
            for (iid, _), notice in notices.items():
                if iid != incident.id:
                    continue
                channels.append(notice.channel_id)
                if notice.escalate_channel_id is not None:
                    channels.append(notice.escalate_channel_id)
            for channel_id in dict.fromkeys(channels):
                self.notes.append(
                    {
                        "incident_id": incident.id,
                        "channel_id": channel_id,
                        "kind": NOTIFY_RESOLVED,
                        "title": messages.resolved_title(incident.title),
                        "body": messages.resolved_body(
                            incident.title,
                            incident.opened_at,
                            self.now,
                            self.config.base_url,
                            incident.id,
                            tz=store.timezone
                            if (store := self.stores.get(incident.store_id or 0))
                            else "UTC",
                        ),
                        "state": "pending",
                        "created_at": self.now,
                        "next_attempt_at": self.now,
                        "attempts": 0,
                    }
                )
                self._event(
                    incident.id, "queued", f"Resolution to {names.get(channel_id, channel_id)} queued"
                )
                self.report.queued += 1

    async def _children_facts(self, fleet_ids: list[int]) -> dict[int, list[StoreFacts]]:
        found: dict[int, list[StoreFacts]] = defaultdict(list)
        if not fleet_ids:
            return found
        rows = await select_where_in(
            self.session,
            select(Incident.parent_id, Incident.store_id, Incident.opened_at).where(Incident.state == OPEN),
            Incident.parent_id,
            fleet_ids,
        )
        missing = {sid for _, sid, _ in rows if sid is not None and sid not in self.stores}
        await self._load_stores(missing)
        for parent_id, sid, opened_at in rows:
            store = self.stores.get(sid or 0)
            if parent_id is not None and store is not None:
                found[parent_id].append(store.facts(since=opened_at))
        return found

    def _queue(
        self,
        incident: Incident,
        channel_id: int,
        kind: str,
        store: _Store | None,
        fleet_children: dict[int, list[StoreFacts]],
        names: dict[int, str],
        rule: AlertRule,
    ) -> None:
        base = self.config.base_url
        if incident.kind == STORE and store is not None:
            facts = store.facts(since=incident.opened_at)
            note = "Escalated: not acknowledged in time." if kind == NOTIFY_ESCALATION else ""
            title = messages.store_title(kind, facts)
            body = messages.store_body(facts, base, incident.id, note=note)
        elif incident.kind == FLEET:
            children = fleet_children.get(incident.id, [])
            title = messages.fleet_title(
                kind, len(children), sum(c.terminals_down for c in children), incident.cause
            )
            body = messages.fleet_body(children, base, incident.id, incident.cause, None)
        else:
            title = messages.cannot_check_title(kind, incident.title)
            body = "\n".join(
                [
                    incident.title,
                    f"Since: {messages.local_time(incident.opened_at, 'UTC')}",
                    "What TermPulse cannot check is shown as unknown, never as down.",
                    f"Incident: {messages.incident_link(base, incident.id)}",
                ]
            )
        self.notes.append(
            {
                "incident_id": incident.id,
                "channel_id": channel_id,
                "kind": kind,
                "title": title[:300],
                "body": body,
                "state": "pending",
                "created_at": self.now,
                "next_attempt_at": self.now,
                "attempts": 0,
            }
        )
        word = {NOTIFY_OPENED: "Notification", NOTIFY_REMINDER: "Reminder", NOTIFY_ESCALATION: "Escalation"}[
            kind
        ]
        self._event(
            incident.id, "queued", f"{word} to {names.get(channel_id, channel_id)} queued (rule {rule.name})"
        )
        self.report.queued += 1

    async def _write(self) -> None:
        if self.member_rows:
            await self.session.execute(insert(IncidentMember), self.member_rows)
        if self.notes:
            await self.session.execute(insert(Notification), self.notes)
        if self.events:
            await self.session.execute(insert(IncidentEvent), self.events)


def _what(m: _MonitorRow) -> str:
    return f"{_kind_word(m.kind)} check {m.target}"


def _kind_word(kind: str) -> str:
    try:
        return MonitorKind(kind).word
    except ValueError:
        return kind


def _matches(rule: AlertRule, incident: Incident, store: _Store | None) -> bool:
    if rule.match == MATCH_ALL:
        return True
    if incident.kind != STORE:
        return rule.match == MATCH_FLEET
    if store is None:
        return False
    if rule.match == MATCH_REGION:
        return store.region.casefold() == rule.value.casefold()
    if rule.match == MATCH_TAG:
        return rule.value.casefold() in {t.casefold() for t in store.tags}
    return False


async def evaluate(session: AsyncSession, now: datetime, config: AlertConfig) -> Report:
    return await Evaluator(session, now, config).run()


async def acknowledge(session: AsyncSession, incident_id: int, who: str, now: datetime) -> Incident:
    """Acknowledge an incident (and the store incidents inside a fleet incident): reminders and
    escalation stop; who and when are kept."""
    incident = await session.get(Incident, incident_id, with_for_update=True)
    if incident is None:
        raise NotFound("incident", str(incident_id))
    if incident.acked_at is not None:
        raise Conflict(f"incident #{incident_id} was already acknowledged by {incident.acked_by}")
    incident.acked_at = now
    incident.acked_by = who[:100]
    await session.execute(
        update(Incident)
        .where(Incident.parent_id == incident_id, Incident.acked_at.is_(None))
        .values(acked_at=now, acked_by=who[:100])
    )
    session.add(
        IncidentEvent(incident_id=incident_id, at=now, kind="acknowledged", text=f"Acknowledged by {who}")
    )
    return incident
