"""check_terminal_now (the dashboard's Check connection) and `termpulse check POIID`."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from app.errors import NotFound
from app.inventory.models import Monitor, Terminal
from app.monitoring.manual import check_terminal_now
from app.monitoring.models import CheckResult
from tests.cli import termpulse_async
from tests.monitoring.helpers import add_monitors, add_store, add_terminals, closed_port


async def terminal_with(db, *targets: str, store_dns: str | None = None) -> tuple[str, list[int]]:
    store = await add_store(db)
    [tid] = await add_terminals(db, store, 1)
    specs = [
        {"store_id": store, "terminal_id": tid, "kind": "tcp", "target": t, "params": {"settle_ms": 0}}
        for t in targets
    ]
    if store_dns:
        specs.append({"store_id": store, "kind": "tcp", "target": store_dns})
    ids = await add_monitors(db, specs)
    async with db.sessionmaker() as s:
        poiid = await s.scalar(select(Terminal.poiid).where(Terminal.id == tid))
    return poiid, ids


async def test_connected_terminal(db, settings, servers, ctx):
    h, p = await servers.listen()
    poiid, [mid] = await terminal_with(db, f"{h}:{p}")
    report = await check_terminal_now(db, settings, poiid.replace("-", "\u2011"), probe_context=ctx)
    assert report.verdict == "connected" and report.headline == "Terminal is connected"
    assert report.diagnosis is None and report.status == "up"
    [check] = report.checks
    assert check.outcome == "ok" and [s["step"] for s in check.steps] == ["connect"]
    assert check.steps[0]["ms"] >= 0 and check.state == "up"
    async with db.sessionmaker() as s:
        [row] = (await s.execute(select(CheckResult.manual, CheckResult.due_at, CheckResult.outcome))).all()
        assert tuple(row) == (True, None, "ok")
        m = (
            await s.execute(
                select(Monitor.state, Monitor.next_due_at, Monitor.lease_owner).where(Monitor.id == mid)
            )
        ).one()
        assert m.state == "up" and m.lease_owner is None  # the schedule is left alone
    json.dumps(report.as_dict())


async def test_disconnected_terminal_names_the_cause_and_the_fix(db, settings, servers, ctx):
    h, p = await servers.listen()
    ch, cp = closed_port()
    poiid, _ = await terminal_with(db, f"{ch}:{cp}", store_dns=f"{h}:{p}")
    report = await check_terminal_now(db, settings, poiid, probe_context=ctx)
    assert report.verdict == "disconnected"
    assert [c.scope for c in report.checks] == ["store network", "terminal"]
    assert report.diagnosis.code == "tcp_refused"
    assert ch in report.diagnosis.cause and str(cp) in report.diagnosis.cause
    assert report.diagnosis.fix
    # Manual results count for the state machine: two refusals make it down (threshold 2).
    report = await check_terminal_now(db, settings, poiid, probe_context=ctx)
    assert report.status == "down"


async def test_our_failure_is_could_not_check(db, settings, ctx):
    from app.checks.guard import TargetGuard
    from app.checks.probes import ProbeContext

    poiid, _ = await terminal_with(db, "127.80.0.1:9")
    guarded = ProbeContext(ctx.resolver, TargetGuard(["127.79.0.0/16"]))
    report = await check_terminal_now(db, settings, poiid, probe_context=guarded)
    assert report.verdict == "could_not_check" and report.diagnosis.code == "target_refused"
    assert report.diagnosis.ours


async def test_unknown_poiid(db, settings, ctx):
    with pytest.raises(NotFound):
        await check_terminal_now(db, settings, "NOPE-1", probe_context=ctx)


async def termpulse_check(url: str, *args: str) -> tuple[int, str, str]:
    """`termpulse check ARGS...`, in process (tests/cli.py)."""
    env = {"TERMPULSE_DATABASE_URL": url, "TERMPULSE_ALLOWED_NETWORKS": "127.0.0.0/8"}
    done = await termpulse_async("check", *args, env=env)
    return done.returncode, done.stdout, done.stderr


async def test_cli_exit_codes_and_output(db, servers):
    h, p = await servers.listen()
    ch, cp = closed_port()
    up, _ = await terminal_with(db, f"{h}:{p}")
    down, _ = await terminal_with(db, f"{ch}:{cp}")

    code, out, _ = await termpulse_check(db.url, up)
    assert code == 0, out
    assert "Verdict: Terminal is connected" in out and "connect" in out and " ms" in out

    code, out, _ = await termpulse_check(db.url, down)
    assert code == 1
    assert "Terminal is disconnected" in out and "Cause:" in out and "Fix:" in out and "refused" in out

    code, out, _ = await termpulse_check(db.url, down, "--json")
    data = json.loads(out)
    assert code == 1 and data["verdict"] == "disconnected"
    assert data["diagnosis"]["code"] == "tcp_refused" and data["checks"][0]["steps"][0]["step"] == "connect"

    code, out, err = await termpulse_check(db.url, "NOPE-404")
    assert code == 2 and "NOPE-404" in err


async def test_cli_database_down_is_exit_2():
    code, _, err = await termpulse_check("postgresql+asyncpg://postgres@127.0.0.1:1/none", "X-1")
    assert code == 2 and "database" in err
