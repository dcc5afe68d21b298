"""`termpulse agent`: refusals (plain http, no token, a busy state directory) and the real
command as a subprocess against the fake server, stopped by SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from app.agent.buffer import Buffer
from app.agent.cli import default_state_dir, server_url
from tests.agent.conftest import monitor, until
from tests.cli import termpulse_async

ROOT = Path(__file__).resolve().parents[2]


async def test_a_plain_http_server_is_refused_without_insecure_http(tmp_path):
    ran = await termpulse_async(
        "agent", "--server", "http://termpulse.example:8000", "--state-dir", str(tmp_path),
        env={"TERMPULSE_AGENT_TOKEN": "tpa_x"},
    )  # fmt: skip
    assert ran.returncode == 2
    assert "refusing plain http://" in ran.stderr and "--insecure-http" in ran.stderr
    assert not list(tmp_path.iterdir()), "nothing started"


async def test_no_token_is_a_usage_error(tmp_path, monkeypatch):
    monkeypatch.delenv("TERMPULSE_AGENT_TOKEN", raising=False)
    ran = await termpulse_async(
        "agent", "--server", "https://termpulse.example", "--state-dir", str(tmp_path)
    )
    assert ran.returncode == 2 and "TERMPULSE_AGENT_TOKEN" in ran.stderr


async def test_a_state_dir_held_by_another_agent_is_refused(tmp_path):
    held = Buffer(tmp_path)
    await held.open()
    try:
        ran = await termpulse_async(
            "agent", "--server", "http://127.0.0.1:9", "--insecure-http", "--state-dir", str(tmp_path),
            env={"TERMPULSE_AGENT_TOKEN": "tpa_x"},
        )  # fmt: skip
    finally:
        await held.close()
    assert ran.returncode == 2 and "another termpulse agent" in ran.stderr


def test_server_urls_and_the_default_state_dir():
    assert server_url("https://tp.example/base/", insecure_http=False) == "https://tp.example/base"
    assert server_url("http://127.0.0.1:8000", insecure_http=True) == "http://127.0.0.1:8000"
    assert default_state_dir().name == "termpulse-agent"


async def test_the_command_runs_as_a_process_and_stops_cleanly_on_sigterm(fake, open_port, tmp_path):
    fake.set_monitors([monitor(101, f"127.0.0.1:{open_port}")])
    env = {**os.environ, "TERMPULSE_AGENT_TOKEN": fake.token, "TERMPULSE_LOG_LEVEL": "DEBUG"}
    env.pop("TERMPULSE_DATABASE_URL", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "app.cli", "agent", "--server", fake.url, "--insecure-http",
        "--state-dir", str(tmp_path / "state"),
        cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        await until(
            lambda: len(fake.written) >= 2 or proc.returncode is not None, what="results from the process"
        )
        assert proc.returncode is None
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    log = err.decode()
    assert proc.returncode == 0, log
    assert "agent stopped" in log
    assert fake.token not in log
    assert fake.seqs() == list(range(1, len(fake.seqs()) + 1))
