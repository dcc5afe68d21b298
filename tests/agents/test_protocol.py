"""The store agent protocol on the server, over HTTP (in process) on both databases:
enrolment, configuration, results exactly once, health, and Check connection through an agent."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

from sqlalchemy import delete, select, update

from app.db import in_transaction, utcnow
from app.inventory.csvimport import import_fleet
from app.inventory.models import Agent, Monitor, Store
from app.monitoring.agents import mark_agents_offline
from app.monitoring.maintenance import rollup_pending
from app.monitoring.models import CheckResult, Rollup, RollupRedo, StateChange
from app.monitoring.scheduler import claim_due
from app.vocabulary import MonitorKind, State
from tests.fleet import sample_files
from tests.monitoring.helpers import stored_results

API = "/api/agent/v1"
INSTANCE = "test-instance-1"


async def fleet(db) -> None:
    async with db.sessionmaker() as session:
        await import_fleet(session, sample_files())


async def enrol(client, *stores: str, name: str | None = None) -> tuple[int, dict]:
    r = await client.post(
        "/api/v1/agents", json={"name": name or f"{stores[0]} agent", "stores": list(stores)}
    )
    assert r.status_code == 201, r.text
    body = r.json()
    return body["agent"]["id"], {"Authorization": f"Bearer {body['token']}"}


async def beat(client, auth, *, clock=None, instance=INSTANCE) -> dict:
    r = await client.post(
        f"{API}/heartbeat",
        headers=auth,
        json={
            "version": "test",
            "instance": instance,
            "clock": (clock or utcnow()).isoformat(),
            "queue": 0,
            "dropped": 0,
        },
    )
    assert r.status_code == 200, r.text
    return r.json()


def result(seq, monitor_id, outcome, at, **extra) -> dict:
    return {
        "seq": seq,
        "monitor_id": monitor_id,
        "due_at": at.isoformat(),
        "checked_at": at.isoformat(),
        "outcome": outcome,
        "latency_ms": 1.5,
        "steps": [],
        **extra,
    }


async def test_enrol_then_config_holds_the_stores_network_and_lan_checks(client, db):
    await fleet(db)
    agent_id, auth = await enrol(client, "S-0001")
    r = await client.get(f"{API}/config", headers=auth)
    assert r.status_code == 200
    config = r.json()
    assert config["stores"] == ["S-0001"] and config["agent"]["id"] == agent_id
    kinds = sorted(m["kind"] for m in config["monitors"])
    assert kinds == [
        "dns",
        "dns",
        "tcp",
        "tcp",
        "tcp",
        "tcp",
        "tcp",
        "tcp",
        "tls",
    ]  # 2 destinations x dns+tcp (+ tls on the processor's 443), 4 tills
    unchanged = await client.get(f"{API}/config", headers={**auth, "If-None-Match": r.headers["ETag"]})
    assert unchanged.status_code == 304

    # Central workers never claim them; the other stores' checks stay central.
    async with db.sessionmaker() as s:
        ours = set((await s.scalars(select(Monitor.id).where(Monitor.agent_id == agent_id))).all())
    claimed = await claim_due(db, "central", 10_000, 30, 3600)
    assert claimed and not ours & {c.id for c in claimed}

    # Without a token, with a wrong one: 401.
    assert (await client.get(f"{API}/config")).status_code == 401
    assert (
        await client.get(f"{API}/config", headers={"Authorization": "Bearer tpa_nope"})
    ).status_code == 401


async def test_cloud_monitors_stay_central(client, db):
    await fleet(db)
    agent_id, _ = await enrol(client, "S-0006")
    async with db.sessionmaker() as s:
        rows = (
            await s.execute(select(Monitor.kind, Monitor.agent_id).join(Store).where(Store.code == "S-0006"))
        ).all()
    assert {k for k, a in rows if a is None} == {MonitorKind.CLOUD}
    assert {a for k, a in rows if k != MonitorKind.CLOUD} == {agent_id}


async def test_results_are_written_once_on_the_servers_clock(client, db):
    await fleet(db)
    _, auth = await enrol(client, "S-0001")
    skew = timedelta(seconds=90)  # the agent's clock runs 90 s fast
    answer = await beat(client, auth, clock=utcnow() + skew)
    assert 89_000 < answer["skew_ms"] < 91_000 and answer["last_seq"] == 0
    monitor = (await client.get(f"{API}/config", headers=auth)).json()["monitors"][0]["id"]
    at = utcnow() + skew
    batch = {
        "instance": INSTANCE,
        "results": [
            result(1, monitor, "fail", at - timedelta(seconds=10), diagnosis="tcp_timeout"),
            result(2, monitor, "fail", at, diagnosis="tcp_timeout"),
        ],
    }
    first = await client.post(f"{API}/results", headers=auth, json=batch)
    assert first.json() == {"accepted": 2, "duplicates": 0, "last_seq": 2}
    again = await client.post(f"{API}/results", headers=auth, json=batch)  # the answer was lost: sent again
    assert again.json() == {"accepted": 0, "duplicates": 2, "last_seq": 2}
    rows = await stored_results(db, [monitor])
    async with db.sessionmaker() as s:
        m = await s.get(Monitor, monitor)
    assert len(rows) == 2
    assert all(abs((at - utcnow()).total_seconds()) < 30 for _m, at, _o in rows)  # moved onto our clock
    assert m.state == State.DOWN  # two failures: the same state machine as central checks
    assert (await beat(client, auth))["last_seq"] == 2


async def test_a_token_cannot_touch_another_stores_monitors(client, db):
    await fleet(db)
    _, auth = await enrol(client, "S-0001")
    _, other = await enrol(client, "S-0002")
    theirs = (await client.get(f"{API}/config", headers=other)).json()["monitors"][0]["id"]
    mine = (await client.get(f"{API}/config", headers=auth)).json()["monitors"][0]["id"]
    now = utcnow()
    r = await client.post(
        f"{API}/results",
        headers=auth,
        json={"instance": INSTANCE, "results": [result(1, mine, "ok", now), result(2, theirs, "ok", now)]},
    )
    assert r.status_code == 403 and str(theirs) in r.json()["detail"]
    async with db.sessionmaker() as s:
        assert (await s.scalars(select(CheckResult.id))).all() == []  # nothing written, not even its own


async def test_revoke_and_rotate(client, db):
    await fleet(db)
    agent_id, auth = await enrol(client, "S-0001")
    rotated = await client.post(f"/api/v1/agents/{agent_id}/rotate")
    assert rotated.status_code == 200
    assert (await client.get(f"{API}/config", headers=auth)).status_code == 401  # the old token
    new = {"Authorization": f"Bearer {rotated.json()['token']}"}
    assert (await client.get(f"{API}/config", headers=new)).status_code == 200
    assert (await client.post(f"/api/v1/agents/{agent_id}/revoke")).status_code == 204
    assert (await client.get(f"{API}/config", headers=new)).status_code == 401
    async with db.sessionmaker() as s:  # the store's checks are central again, history kept
        assert (await s.scalars(select(Monitor.id).where(Monitor.agent_id.is_not(None)))).all() == []
    listed = (await client.get("/api/v1/agents")).json()
    assert listed[0]["state"] == "revoked" and listed[0]["stores"] == []


async def test_bad_input_is_a_4xx_with_a_reason(client, db):
    await fleet(db)
    _, auth = await enrol(client, "S-0001")
    bad = await client.post(
        f"{API}/results", headers=auth, json={"instance": INSTANCE, "results": [{"seq": 0}]}
    )
    assert bad.status_code == 422 and "results" in str(bad.json()["detail"])
    big = await client.post(f"{API}/results", headers=auth, content=b"x" * (1024 * 1024 + 1))
    assert big.status_code == 413
    unknown_store = await client.post("/api/v1/agents", json={"name": "x", "stores": ["S-9999"]})
    assert unknown_store.status_code == 422 and "S-9999" in unknown_store.text


async def test_a_silent_agent_makes_its_monitors_unknown_never_down_and_its_buffer_replaces_that(client, db):
    await fleet(db)
    agent_id, auth = await enrol(
        client, "S-0006"
    )  # Adyen store: cloud terminals, and LAN checks on the agent
    await beat(client, auth)
    config = (await client.get(f"{API}/config", headers=auth)).json()
    lan = config["monitors"][0]["id"]
    start = utcnow() - timedelta(minutes=5)
    ok = await client.post(
        f"{API}/results", headers=auth, json={"instance": INSTANCE, "results": [result(1, lan, "ok", start)]}
    )
    assert ok.status_code == 200
    async with db.sessionmaker() as s:
        await s.execute(update(Agent).where(Agent.id == agent_id).values(last_heard_at=start))
        store_id = await s.scalar(select(Store.id).where(Store.code == "S-0006"))
        await s.execute(
            update(Monitor)
            .where(Monitor.store_id == store_id, Monitor.kind == MonitorKind.CLOUD)
            .values(state=State.DOWN)
        )
        await s.commit()

    offline_at = utcnow()
    assert await in_transaction(db, lambda s: mark_agents_offline(s, offline_at)) == 1
    async with db.sessionmaker() as s:
        m = await s.get(Monitor, lan)
        store = await s.get(Store, store_id)
        change = (
            (
                await s.execute(
                    select(StateChange).where(StateChange.monitor_id == lan).order_by(StateChange.at.desc())
                )
            )
            .scalars()
            .first()
        )
    assert m.state == State.UNKNOWN and m.last_diagnosis == "agent_offline"
    assert change.to_state == State.UNKNOWN and change.diagnosis == "agent_offline"
    assert store.status_reason == "store_offline"  # agent silent and every cloud terminal disconnected

    # A stale mark made at the same moment (the jobs race on SQLite) is assumed too.
    async with db.sessionmaker() as s:
        s.add(
            StateChange(
                monitor_id=lan,
                store_id=store_id,
                terminal_id=m.terminal_id,
                at=offline_at + timedelta(milliseconds=2),
                from_state=State.UP,
                to_state=State.UNKNOWN,
                diagnosis="result_stale",
            )
        )
        await s.commit()

    # It comes back and replays what it saw meanwhile: the unknown spell is replaced by it.
    await beat(client, auth)
    replay = [result(i + 2, lan, "ok", start + timedelta(minutes=1, seconds=30 * i)) for i in range(6)]
    r = await client.post(f"{API}/results", headers=auth, json={"instance": INSTANCE, "results": replay})
    assert r.json()["accepted"] == 6
    async with db.sessionmaker() as s:
        m = await s.get(Monitor, lan)
        spells = (await s.scalars(select(StateChange.diagnosis).where(StateChange.monitor_id == lan))).all()
        store = await s.get(Store, store_id)
    assert m.state == State.UP and "agent_offline" not in spells and "result_stale" not in spells
    assert store.status_reason is None  # heard again


async def test_a_buffer_reaching_into_rolled_up_hours_has_them_rolled_up_again(client, db):
    await fleet(db)
    _, auth = await enrol(client, "S-0001")
    await beat(client, auth)
    monitor = (await client.get(f"{API}/config", headers=auth)).json()["monitors"][0]["id"]
    now = utcnow()
    old = now.replace(minute=30, second=0, microsecond=0) - timedelta(hours=2)
    first = await client.post(
        f"{API}/results",
        headers=auth,
        json={"instance": INSTANCE, "results": [result(1, monitor, "ok", old - timedelta(hours=1))]},
    )
    assert first.status_code == 200
    async with db.sessionmaker() as s:
        await s.execute(delete(RollupRedo))
        await s.commit()
    # The hours up to the current one are rolled up, from the start of the first result's day
    # (it is folded into that day).
    first_day = (old - timedelta(hours=1)).replace(hour=0, minute=0)
    assert await rollup_pending(db, now, max_hours=48) == (
        now.replace(minute=0, second=0, microsecond=0) - first_day
    ) // timedelta(hours=1)
    # Then a result from a rolled-up hour arrives (the agent was offline meanwhile).
    r = await client.post(
        f"{API}/results",
        headers=auth,
        json={"instance": INSTANCE, "results": [result(2, monitor, "ok", old)]},
    )
    assert r.status_code == 200
    async with db.sessionmaker() as s:
        redo = sorted((await s.scalars(select(RollupRedo.bucket_start))).all())
    # From the hour its silence began (an hour without results is unknown from one interval
    # after the last one) up to the current hour.
    hour = old.replace(minute=0)
    assert redo == [hour - timedelta(hours=1), hour, hour + timedelta(hours=1)]
    await rollup_pending(db, now)
    async with db.sessionmaker() as s:
        assert (await s.scalars(select(RollupRedo.bucket_start))).all() == []
        rolled = await s.scalar(
            select(Rollup.count).where(
                Rollup.monitor_id == monitor,
                Rollup.period == "hour",
                Rollup.bucket_start == old.replace(minute=0),
            )
        )
    assert rolled == 1


async def test_check_connection_through_the_agent(client, db):
    await fleet(db)
    agent_id, auth = await enrol(client, "S-0001")
    await beat(client, auth)
    poiid = "Move5000-203097992"

    async def agent_side() -> None:
        work = await client.get(f"{API}/work", params={"wait": 10}, headers=auth)
        assert work.status_code == 200, work.text
        item = work.json()
        now = utcnow().isoformat()
        answers = [
            {
                "monitor_id": mid,
                "checked_at": now,
                "outcome": "fail",
                "latency_ms": 5000.0,
                "steps": [{"step": "connect", "ok": False, "ms": 5000.0, "detail": "no answer"}],
                "diagnosis": "tcp_timeout",
                "detail": "filtered",
                "context": {"host": "h", "port": "7003"},
            }
            for mid in item["monitor_ids"]
        ]
        done = await client.post(f"{API}/work/{item['id']}", headers=auth, json={"results": answers})
        assert done.status_code == 204

    agent = asyncio.create_task(agent_side())
    r = await client.post(f"/api/v1/terminals/{poiid}/check")
    await agent
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["verdict"] == "disconnected"
    assert {c["steps"][0]["step"] for c in report["checks"]} == {"connect"}
    assert report["diagnosis"]["code"] == "tcp_timeout"

    # Offline: said at once, with when it was last heard, never down.
    async with db.sessionmaker() as s:
        await s.execute(update(Agent).where(Agent.id == agent_id).values(state="offline"))
        await s.commit()
    r = await client.post(f"/api/v1/terminals/{poiid}/check")
    report = r.json()
    assert report["verdict"] == "could_not_check" and report["diagnosis"]["code"] == "agent_offline"
    assert "last heard" in report["checks"][0]["detail"]


async def test_an_agent_never_heard_from_leaves_its_monitors_unknown_not_as_they_were(client, db):
    await fleet(db)
    agent_id, _ = await enrol(client, "S-0001")
    async with db.sessionmaker() as s:
        await s.execute(update(Monitor).where(Monitor.agent_id == agent_id).values(state=State.UP))
        await s.execute(
            update(Agent).where(Agent.id == agent_id).values(created_at=utcnow() - timedelta(hours=1))
        )
        await s.commit()
    assert await in_transaction(db, lambda s: mark_agents_offline(s, utcnow())) == 0  # none *went* offline
    async with db.sessionmaker() as s:
        states = set((await s.scalars(select(Monitor.state).where(Monitor.agent_id == agent_id))).all())
        agent = await s.get(Agent, agent_id)
    assert states == {State.UNKNOWN} and agent.state == "never_seen"


async def test_a_stopping_server_ends_the_long_polls_at_once(client, db):
    """When the server begins to stop, every agent's long poll answers 'no work' at once,
    instead of holding the stop until the graceful timeout and being cancelled."""
    await fleet(db)
    _, auth = await enrol(client, "S-0001")
    await beat(client, auth)
    waiting = asyncio.create_task(client.get(f"{API}/work", params={"wait": 30}, headers=auth))
    await asyncio.sleep(0.2)
    assert not waiting.done()  # it waits for work
    client._transport.app.state.agent_broker.stop()
    answer = await asyncio.wait_for(waiting, 20)  # well before its 30 s wait
    assert answer.status_code == 204
    # A long poll arriving while the server stops answers at once too.
    again = await asyncio.wait_for(client.get(f"{API}/work", params={"wait": 30}, headers=auth), 20)
    assert again.status_code == 204


async def test_two_agents_calls_are_written_at_once_but_one_agents_in_order(client, db, monkeypatch):
    """On PostgreSQL two transactions run at once (one on SQLite), never two of one agent: an
    agent's calls apply in the order they came, so its seq fence loses none of them."""
    import app.monitoring.agents as agents_module

    await fleet(db)
    enrolled = [await enrol(client, code) for code in ("S-0001", "S-0002")]
    ours, auths = {agent for agent, _auth in enrolled}, [auth for _agent, auth in enrolled]
    monitors = []
    for auth in auths:
        await beat(client, auth)
        monitors.append((await client.get(f"{API}/config", headers=auth)).json()["monitors"][0]["id"])
    real = agents_module.apply_agent_calls
    flying: list[set[int]] = []
    peak, first = 0, True
    second = asyncio.Event()

    async def slow_apply(session, calls):
        nonlocal peak, first
        mine = {c.agent_id for c in calls}
        if not mine <= ours:  # another server's agents in this process (a live server's)
            return await real(session, calls)
        assert all(not (mine & other) for other in flying), "one agent in two transactions at once"
        flying.append(mine)
        peak = max(peak, len(flying))
        if len(flying) == 2:
            second.set()
        try:
            if first:  # the first transaction holds on until a second one runs beside it (or 2 s)
                first = False
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(2):
                        await second.wait()
            return await real(session, calls)
        finally:
            flying.remove(mine)

    monkeypatch.setattr(agents_module, "apply_agent_calls", slow_apply)
    at = utcnow() - timedelta(seconds=30)

    def post(auth, monitor, seq):
        # Failures: each stored as it was (a plain success is only counted in its monitor's day).
        batch = [result(seq, monitor, "fail", at + timedelta(seconds=seq), diagnosis="tcp_timeout")]
        return client.post(f"{API}/results", headers=auth, json={"instance": INSTANCE, "results": batch})

    (a, b), (ma, mb) = auths, monitors
    opening = asyncio.create_task(post(a, ma, 1))
    while not flying:  # noqa: ASYNC110 (the writer has no event to await)
        await asyncio.sleep(0.01)
    rest = await asyncio.gather(post(b, mb, 1), post(a, ma, 2), post(b, mb, 2), post(a, ma, 3))
    answers = [await opening, *rest]
    assert [r.json()["accepted"] for r in answers] == [1] * 5
    assert peak == (2 if db.dialect == "postgresql" else 1)
    assert len(await stored_results(db, list(monitors))) == 5
