"""The store agent's footprint: one real `termpulse agent` process, 50 TCP monitors every 10 s.

The agent runs as a subprocess (the installed console script) against the fake agent server
of the tests (tests/agent/fake_server.py), which this process runs on loopback with 50
listening "terminals". Printed: the agent's RSS after 60 s (VmRSS, with its anonymous and
file-backed parts, from /proc/<pid>/status), its CPU over the next 30 s (utime + stime from
/proc/<pid>/stat) while checking and then while idle (the same monitors made hourly, nothing
due), what the server received meanwhile, and what importing the command costs on its own
(app.cli, which imports every command's modules, against app.agent.cli alone).

    .venv/bin/python bench/agent_footprint.py [--monitors 50] [--interval 10] [--settle 60] [--window 30]

Targets (the agent issue): RSS under 60 MB, CPU under 1 % of a core when idle.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import describe  # noqa: E402
from tests.agent.fake_server import FakeServer  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def status(pid: int) -> dict[str, int]:
    """The numeric lines of /proc/<pid>/status (memory in kB)."""
    with open(f"/proc/{pid}/status") as f:
        pairs = (line.split(":", 1) for line in f)
        return {k: int(v.split()[0]) for k, v in pairs if v.split() and v.split()[0].isdigit()}


def cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)


def import_rss_mb(module: str) -> float:
    code = f"import {module}, re; print(re.search(r'VmRSS:\\s+(\\d+)', open('/proc/self/status').read())[1])"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return int(out.stdout) / 1024


async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        await reader.read()
    writer.close()


async def run(args: argparse.Namespace) -> None:
    terminals = [await asyncio.start_server(hold, "127.0.0.1", 0) for _ in range(args.monitors)]
    step_ms = args.interval * 1000 // args.monitors
    monitors = [
        {
            "id": i + 1,
            "kind": "tcp",
            "target": f"127.0.0.1:{server.sockets[0].getsockname()[1]}",
            "params": {},
            "interval_s": args.interval,
            "timeout_s": 5.0,
            "phase_ms": i * step_ms,
        }
        for i, server in enumerate(terminals)
    ]
    fake = await FakeServer(monitors=monitors, heartbeat_s=15).start()
    state = Path(tempfile.mkdtemp(prefix="termpulse-agent-bench-"))
    command = shutil.which("termpulse", path=str(Path(sys.executable).parent)) or "termpulse"
    env = {**os.environ, "TERMPULSE_AGENT_TOKEN": fake.token, "TERMPULSE_LOG_LEVEL": "WARNING"}
    proc = await asyncio.create_subprocess_exec(
        command, "agent", "--server", fake.url, "--insecure-http", "--state-dir", str(state), env=env
    )
    try:
        await asyncio.sleep(args.settle)
        if proc.returncode is not None:
            raise SystemExit(f"the agent exited early ({proc.returncode})")
        rss = status(proc.pid)
        results_before, t0, ticks0 = len(fake.written), time.monotonic(), cpu_ticks(proc.pid)
        await asyncio.sleep(args.window)
        ticks1, t1 = cpu_ticks(proc.pid), time.monotonic()
        results = len(fake.written) - results_before
        cpu = (ticks1 - ticks0) / TICK / (t1 - t0) * 100

        # Idle: the same monitors, hourly, next due in 10 minutes (due times are on the
        # monitor's phase within the hour, and the hour starts on the hour). The agent takes
        # the new config at its next heartbeat; then nothing is due during the window.
        phase = (int(time.time() * 1000) + 600_000) % 3_600_000
        configs = len(fake.configs)
        fake.set_monitors([{**m, "interval_s": 3600, "phase_ms": phase} for m in monitors])
        while len(fake.configs) == configs:  # noqa: ASYNC110 (polling what the fake server recorded)
            await asyncio.sleep(0.2)
        await asyncio.sleep(2)
        idle_from, idle_t0 = cpu_ticks(proc.pid), time.monotonic()
        await asyncio.sleep(args.window)
        idle_cpu = (cpu_ticks(proc.pid) - idle_from) / TICK / (time.monotonic() - idle_t0) * 100
        idle_rss = status(proc.pid)["VmRSS"]
    finally:
        proc.send_signal(signal.SIGTERM)
        code = await proc.wait()
        await fake.stop()
        for server in terminals:
            server.close()
        shutil.rmtree(state, ignore_errors=True)

    expected = args.monitors * args.window / args.interval
    print(describe())
    print(
        f"agent footprint: `termpulse agent`, {args.monitors} tcp monitors every {args.interval} s, "
        f"state in a temporary directory"
    )
    print(
        f"  RSS after {args.settle} s: {rss['VmRSS'] / 1024:.1f} MB "
        f"(anonymous {rss.get('RssAnon', 0) / 1024:.1f} MB, files/shared libraries "
        f"{rss.get('RssFile', 0) / 1024:.1f} MB), peak {rss['VmHWM'] / 1024:.1f} MB, "
        f"{rss['Threads']} threads"
    )
    print(
        f"  CPU over {t1 - t0:.0f} s: {cpu:.2f} % of one core (checks included), "
        f"{results} results received by the server (~{expected:.0f} expected)"
    )
    print(
        f"  CPU idle between checks (nothing due for {args.window:.0f} s: heartbeats and the long "
        f"poll only): {idle_cpu:.2f} % of one core; RSS then {idle_rss / 1024:.1f} MB"
    )
    print(f"  exit code on SIGTERM: {code}")
    print(
        f"  import cost alone: app.cli (every command) {import_rss_mb('app.cli'):.1f} MB, "
        f"app.agent.cli {import_rss_mb('app.agent.cli'):.1f} MB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--monitors", type=int, default=50)
    parser.add_argument("--interval", type=int, default=10)
    parser.add_argument("--settle", type=float, default=60.0, help="s before RSS is read")
    parser.add_argument("--window", type=float, default=30.0, help="s of CPU measured")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
