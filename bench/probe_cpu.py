"""CPU per tcp check of the probe alone (run_probe, no database, no scheduler, no writer).

    .venv/bin/python bench/probe_cpu.py [--checks 20000] [--concurrency 1000] [--root DIR]

The targets: ten loopback listeners on 127.88.0.1-10:2000 in a separate process (its CPU is
not counted) that accept and hold connections, as a healthy terminal does. --root runs the
probes of another checkout (e.g. a `git archive` of an older commit) to compare. Issue 16
item 4 (one timeout per check, no extra task): CPU ms per check, printed with the load; then the
same checks done bare (a socket, connect, the settle, close: no steps, no result), the floor.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

SERVER = r"""
import asyncio, uvloop
async def held(reader, writer):
    await reader.read()
    writer.close()
async def main():
    for i in range(1, 11):
        await asyncio.start_server(held, f"127.88.0.{i}", 2000, backlog=4096)
    print("ready", flush=True)
    await asyncio.Event().wait()
uvloop.run(main())
"""


async def measure(checks: int, concurrency: int) -> None:
    from app.checks.context import ProbeContext
    from app.checks.guard import TargetGuard
    from app.checks.probes import run_probe
    from app.checks.resolver import Resolver

    ctx = ProbeContext(Resolver(), TargetGuard(["127.0.0.0/8"]))
    slots = asyncio.Semaphore(concurrency)

    async def one(i: int) -> bool:
        async with slots:
            result = await run_probe("tcp", f"127.88.0.{i % 10 + 1}:2000", {}, 5.0, ctx)
            return result.ok

    async def bare(i: int) -> bool:
        """The floor: what any asyncio checker does for a TCP check (connect, settle, close)."""
        async with slots:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, (f"127.88.0.{i % 10 + 1}", 2000))
            await asyncio.sleep(0.05)
            sock.close()
            return True

    for name, check in (("run_probe", one), ("bare connect, 50 ms settle, close", bare)):
        await asyncio.gather(*(check(i) for i in range(500)))  # warm up
        cpu, wall = time.process_time(), time.perf_counter()
        ok = sum(await asyncio.gather(*(check(i) for i in range(checks))))
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        print(
            f"{name}: {checks} tcp checks ({ok} ok), {concurrency} at a time:"
            f" CPU {cpu * 1000 / checks:.3f} ms per check, {checks / wall:.0f} checks/s;"
            f" load average {os.getloadavg()[0]:.1f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checks", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=1000)
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent)
    args = parser.parse_args()
    sys.path.insert(0, str(args.root))
    import uvloop

    server = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        server.stdout.readline()
        print(f"probes of {args.root}")
        uvloop.run(measure(args.checks, args.concurrency))
    finally:
        server.kill()
        server.wait()


if __name__ == "__main__":
    main()
