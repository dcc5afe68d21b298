"""The `termpulse` command as a user runs it, against both databases."""

import os
import subprocess
import sys

from app.cli import SAMPLE_FLEET

STORES, TERMINALS = str(SAMPLE_FLEET / "stores.csv"), str(SAMPLE_FLEET / "terminals.csv")


def termpulse(db, *args, stdin=None):
    env = {**os.environ, "TERMPULSE_DATABASE_URL": db.url}
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        input=stdin,
        timeout=120,
    )


async def test_import_twice_then_bad_file(db, tmp_path):
    first = termpulse(db, "import", STORES, TERMINALS)
    assert first.returncode == 0, first.stderr
    assert "stores imported: 60 created" in first.stdout and "terminals imported: 246 created" in first.stdout
    again = termpulse(db, "import", STORES, TERMINALS)
    assert "0 created, 0 updated, 60 unchanged" in again.stdout
    assert "0 created, 0 updated, 246 unchanged" in again.stdout

    bad = tmp_path / "terminals.csv"
    bad.write_text(
        "store_code,poiid,integration,lan_port\nS-0001,NEW-1,cloud,\nS-0001,NEW-2,rocket,\nS-0404,NEW-3,local,99999\n"
    )
    failed = termpulse(db, "import", str(bad))
    assert failed.returncode == 2
    lines = failed.stderr.strip().splitlines()
    assert any(":3: integration:" in line for line in lines)
    assert any(":4: lan_port:" in line for line in lines)
    assert "nothing was written" in lines[-1]
    listed = termpulse(db, "import", "--dry-run", str(bad).replace("terminals", "missing"))
    assert listed.returncode == 2 and "cannot read" in listed.stderr


async def test_dry_run_and_create_user(db):
    dry = termpulse(db, "import", "--dry-run", STORES, TERMINALS)
    assert dry.returncode == 0 and "dry run, nothing written" in dry.stdout
    assert "60 created" in termpulse(db, "import", STORES).stdout  # nothing was written by the dry run

    short = termpulse(db, "create-user", "alice", stdin="short\n")
    assert short.returncode == 2 and "too short" in short.stderr
    made = termpulse(db, "create-user", "alice", "--role", "operator", stdin="long enough password\n")
    assert made.returncode == 0 and "created operator alice" in made.stdout
    assert termpulse(db, "create-user", "alice", stdin="long enough password\n").returncode == 2
