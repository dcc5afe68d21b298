"""host_unreachable for real, in a private network namespace (`unshare -n`, needs root).

Inside the namespace there is only lo, plus an 'unreachable' route for TEST-NET-1: the
kernel answers EHOSTUNREACH for 192.0.2.1 and ENETUNREACH for 198.51.100.1 (no route at
all) without a packet going anywhere. Skipped where namespaces can't be made.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import asyncio, json
from app.checks.guard import TargetGuard
from app.checks.probes import ProbeContext, run_probe
from app.checks.resolver import Resolver

async def main():
    ctx = ProbeContext(Resolver(["127.0.0.1"], 53), TargetGuard(["192.0.2.0/24", "198.51.100.0/24"]))
    out = {}
    for target in ("192.0.2.1:7003", "198.51.100.1:443"):
        r = await run_probe("tcp", target, {}, 1.0, ctx)
        out[target] = [r.outcome, r.diagnosis, r.steps[-1]["detail"]]
    print(json.dumps(out))

asyncio.run(main())
"""


def _can_unshare() -> bool:
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"):
        return False
    return subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _can_unshare(), reason="needs root and unshare -n")
def test_host_unreachable_in_a_network_namespace():
    shell = (
        f'ip link set lo up && ip route add unreachable 192.0.2.0/24 && exec {sys.executable} -c "$SCRIPT"'
    )
    done = subprocess.run(
        ["unshare", "-n", "sh", "-c", shell],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
        env={**os.environ, "SCRIPT": SCRIPT, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["192.0.2.1:7003"][:2] == ["fail", "host_unreachable"], out
    assert out["198.51.100.1:443"][:2] == ["fail", "host_unreachable"], out
