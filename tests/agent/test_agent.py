"""The store agent in process against the fake server: schedule, upload, offline buffering,
replays, bounds, on-demand work, config changes, refused tokens and rate limits."""

from __future__ import annotations

import itertools
import logging
from datetime import datetime, timedelta

from app import __version__
from app.vocabulary import Outcome
from tests.agent.conftest import monitor, until


def _dt(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    assert value.utcoffset() is not None, f"{text} has no offset"
    return value


def assert_due_chain(results, interval_s: int, phase_ms: int) -> None:
    """Due times sit on the monitor's phase and follow one another by the interval (a skip
    forward on the phase is allowed: a loaded machine may start a run late); a check never
    starts before it is due."""
    dues = [_dt(r["due_at"]) for r in results]
    for r, due in zip(results, dues, strict=True):
        assert _dt(r["checked_at"]) >= due
        assert round(due.timestamp() * 1000) % (interval_s * 1000) == phase_ms
    for a, b in itertools.pairwise(dues):
        assert b > a and (b - a) % timedelta(seconds=interval_s) == timedelta(0)


def assert_exactly_once(fake) -> None:
    seqs = fake.seqs()
    assert seqs == list(range(1, len(seqs) + 1)), f"written seqs not 1..n in order: {seqs}"


async def test_checks_run_at_their_due_times_and_results_arrive_in_seq_order(
    fake, make_agent, open_port, closed_port
):
    fake.set_monitors(
        [monitor(11, f"127.0.0.1:{open_port}"), monitor(12, f"127.0.0.1:{closed_port}", phase_ms=500)]
    )
    agent = await make_agent(fake)

    await until(
        lambda: len(fake.of_monitor(11)) >= 3 and len(fake.of_monitor(12)) >= 3, what="3 results each"
    )
    assert fake.configs[0] == 200
    assert {r["monitor_id"] for r in fake.written} == {11, 12}
    assert_exactly_once(fake)
    assert_due_chain(fake.of_monitor(11), 1, 0)
    assert_due_chain(fake.of_monitor(12), 1, 500)
    assert {r["outcome"] for r in fake.of_monitor(11)} == {Outcome.OK}
    assert {r["outcome"] for r in fake.of_monitor(12)} == {Outcome.FAIL}
    assert {r["diagnosis"] for r in fake.of_monitor(12)} == {"port_closed"} or all(
        r["diagnosis"] for r in fake.of_monitor(12)
    )
    first = fake.written[0]
    assert set(first) == {
        "seq",
        "monitor_id",
        "due_at",
        "checked_at",
        "outcome",
        "latency_ms",
        "steps",
        "diagnosis",
        "detail",
    }
    assert first["steps"] and first["steps"][0]["step"]

    await until(lambda: len(fake.heartbeats) >= 2, what="two heartbeats")
    beat = fake.heartbeats[-1]
    assert beat["version"] == __version__
    assert beat["instance"] == agent.buffer.instance
    assert beat["dropped"] == 0 and isinstance(beat["queue"], int)
    _dt(beat["clock"])
    assert fake.configs == [200], "the config is fetched again only when its ETag changes"


async def test_server_down_results_buffered_then_replayed_once_in_order_with_their_times(
    fake, make_agent, open_port
):
    fake.set_monitors(
        [monitor(21, f"127.0.0.1:{open_port}"), monitor(22, f"127.0.0.1:{open_port}", phase_ms=500)]
    )
    agent = await make_agent(fake)
    await until(lambda: len(fake.written) >= 2, what="results before the outage")

    await fake.stop()
    down_from = datetime.now().astimezone()
    await until(lambda: agent.buffer.pending >= 4, what="results queued while the server is down")
    down_until = datetime.now().astimezone()
    queued_during = agent.buffer.next_seq - 1
    await fake.start()

    await until(lambda: fake.seqs() and fake.seqs()[-1] >= queued_during, what="the backlog replayed")
    assert_exactly_once(fake)
    assert_due_chain(fake.of_monitor(21), 1, 0)
    assert_due_chain(fake.of_monitor(22), 1, 500)
    made_offline = [r for r in fake.written if down_from <= _dt(r["checked_at"]) <= down_until]
    assert len(made_offline) >= 3, "results keep the times they were made, not the replay's"
    await until(lambda: agent.buffer.pending == 0 or fake.seqs()[-1] >= agent.buffer.next_seq - 2)


async def test_a_batch_whose_answer_was_lost_is_sent_again_and_deduped_by_seq(fake, make_agent, open_port):
    fake.set_monitors([monitor(31, f"127.0.0.1:{open_port}")])
    # No heartbeat after the first (before any result): its last_seq would ack the written batch
    # too, and the agent would rightly not resend it.
    fake.heartbeat_s = 60
    fake.lose_next_results_answer = True
    await make_agent(fake)

    await until(lambda: fake.duplicates >= 1 and len(fake.written) >= 3, what="a replayed batch")
    first, replay = fake.posts[0], fake.posts[1]
    assert set(first) <= set(replay), "the unacknowledged batch is sent again, from its oldest"
    assert_exactly_once(fake)


async def test_restarted_while_the_server_is_down_it_checks_with_the_saved_config(
    fake, make_agent, open_port, tmp_path
):
    fake.set_monitors([monitor(41, f"127.0.0.1:{open_port}")])
    state = tmp_path / "restart"
    first = await make_agent(fake, state_dir=state)
    await until(lambda: len(fake.written) >= 1, what="a first result")
    instance = first.buffer.instance
    await fake.stop()
    await first.stop()

    again = await make_agent(fake, state_dir=state)
    assert again.buffer.instance == instance
    await until(lambda: again.buffer.pending >= 2, what="checks with the saved config while offline")
    await fake.start()
    await until(lambda: again.buffer.pending == 0 and len(fake.written) >= 3, what="the backlog sent")
    assert_exactly_once(fake)
    assert fake.configs[0] == 200 and set(fake.configs[1:]) <= {304}


async def test_a_full_buffer_drops_the_oldest_and_says_so_in_heartbeats(fake, make_agent, open_port):
    fake.set_monitors(
        [monitor(51, f"127.0.0.1:{open_port}"), monitor(52, f"127.0.0.1:{open_port}", phase_ms=500)]
    )
    agent = await make_agent(fake, max_count=3)
    await until(lambda: len(fake.written) >= 1, what="a first result")
    await fake.stop()
    await until(lambda: agent.buffer.dropped >= 2, what="drops while offline")
    assert agent.buffer.pending <= 3
    await fake.start()

    await until(lambda: fake.heartbeats and fake.heartbeats[-1]["dropped"] >= 2, what="dropped reported")
    await until(lambda: agent.buffer.pending == 0, what="what was kept is sent")
    seqs = fake.seqs()
    assert seqs == sorted(set(seqs)), "no seq twice, in order"
    assert any(b - a > 1 for a, b in itertools.pairwise(seqs)), "the oldest were dropped"


async def test_on_demand_work_runs_at_once_and_answers_without_seq(fake, make_agent, open_port, closed_port):
    fake.set_monitors(
        [
            monitor(61, f"127.0.0.1:{open_port}", interval_s=3600),
            monitor(62, f"127.0.0.1:{closed_port}", interval_s=3600),
        ]
    )
    agent = await make_agent(fake)
    await agent.wait_configured()
    await fake.work.put({"id": "w-1", "monitor_ids": [61, 62, 99]})

    results = await until(lambda: fake.work_results.get("w-1"), what="the on-demand answer")
    by_id = {r["monitor_id"]: r for r in results}
    assert set(by_id) == {61, 62, 99}
    assert by_id[61]["outcome"] == Outcome.OK
    assert by_id[62]["outcome"] == Outcome.FAIL
    assert by_id[99]["outcome"] == Outcome.ERROR, "a monitor not ours: our side, never down"
    assert all("seq" not in r and "due_at" not in r for r in results)
    assert by_id[62]["context"]["target"] == f"127.0.0.1:{closed_port}", "the diagnosis words come along"
    assert all(isinstance(v, str) for r in results for v in r["context"].values())
    _dt(by_id[61]["checked_at"])
    assert agent.buffer.pending == 0 and not fake.written, "manual checks are not queued"


async def test_config_changes_apply_without_a_restart(fake, make_agent, open_port, closed_port):
    fake.set_monitors([monitor(71, f"127.0.0.1:{open_port}"), monitor(72, f"127.0.0.1:{closed_port}")])
    agent = await make_agent(fake)
    await until(lambda: fake.of_monitor(71) and fake.of_monitor(72), what="results of both")

    # 71 removed, 72 now points at the open port, 73 is new (on another interval and phase).
    fake.set_monitors(
        [
            monitor(72, f"127.0.0.1:{open_port}"),
            monitor(73, f"127.0.0.1:{open_port}", interval_s=2, phase_ms=250),
        ]
    )
    await until(lambda: agent.monitor_ids == {72, 73}, what="the new config applied")
    applied_at_seq = agent.buffer.next_seq - 1
    await until(
        lambda: len([r for r in fake.written if r["seq"] > applied_at_seq and r["monitor_id"] == 73]) >= 2,
        what="results of the new monitor",
    )
    after = [r for r in fake.written if r["seq"] > applied_at_seq]
    assert 71 not in {r["monitor_id"] for r in after}, "a removed monitor stops"
    assert {r["outcome"] for r in after if r["monitor_id"] == 72} == {Outcome.OK}, "new parameters used"
    assert_due_chain([r for r in after if r["monitor_id"] == 73], 2, 250)
    assert fake.configs.count(200) == 2
    assert_exactly_once(fake)


async def test_a_revoked_token_is_logged_once_and_retried_slowly_while_checks_go_on(
    fake, make_agent, open_port, caplog
):
    fake.set_monitors([monitor(81, f"127.0.0.1:{open_port}")])
    agent = await make_agent(fake)
    await until(lambda: fake.written, what="a first result")
    fake.revoked = True
    refused = lambda: [r for r in fake.requests if r.status == 401]  # noqa: E731
    await until(lambda: refused(), what="a refused call")
    queued = agent.buffer.pending
    await until(lambda: agent.buffer.pending >= queued + 2, what="checks go on")
    # One refused call per loop at most (control, upload, work) before the gate closes them all.
    assert len(refused()) <= 3, [(r.method, r.path) for r in refused()]
    errors = [
        r for r in caplog.records if r.levelno >= logging.ERROR and "refused the agent token" in r.message
    ]
    assert len(errors) == 1
    assert "/api/agent/v1/" in errors[0].message and "401" in errors[0].message


async def test_a_rate_limit_holds_every_call_until_retry_after(fake, make_agent, open_port):
    fake.set_monitors([monitor(91, f"127.0.0.1:{open_port}")])
    agent = await make_agent(fake)
    await until(lambda: fake.written, what="a first result")
    fake.rate_limit_next = 2
    await until(lambda: any(r.status == 429 for r in fake.requests), what="a 429")
    limited = next(r for r in fake.requests if r.status == 429)
    await until(lambda: any(r.at > limited.at + 2 for r in fake.requests), what="calls again after 2 s")
    # Within Retry-After only calls already on their way may arrive: one per other loop at most.
    held = [r for r in fake.requests if limited.at < r.at < limited.at + 1.9]
    assert len(held) <= 2, [(r.method, r.path) for r in held]
    await until(lambda: agent.buffer.pending == 0 or len(fake.written) >= 4)
    assert_exactly_once(fake)
