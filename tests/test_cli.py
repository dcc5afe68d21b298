"""The `termpulse` command as a user runs it, against both databases: in process (tests/cli.py),
and once as a real `python -m app.cli` subprocess (the smoke test at the end)."""

import os
import subprocess
import sys

from app.inventory.csvimport import SAMPLE_FLEET
from tests.cli import termpulse as termpulse_sync
from tests.cli import termpulse_async

STORES, TERMINALS = str(SAMPLE_FLEET / "stores.csv"), str(SAMPLE_FLEET / "terminals.csv")


async def termpulse(db, *args, stdin=""):
    return await termpulse_async(*args, env={"TERMPULSE_DATABASE_URL": db.url}, stdin=stdin)


async def test_import_twice_then_bad_file(db, tmp_path):
    first = await termpulse(db, "import", STORES, TERMINALS)
    assert first.returncode == 0, first.stderr
    assert "stores imported: 60 created" in first.stdout and "terminals imported: 246 created" in first.stdout
    again = await termpulse(db, "import", STORES, TERMINALS)
    assert "0 created, 0 updated, 60 unchanged" in again.stdout
    assert "0 created, 0 updated, 246 unchanged" in again.stdout

    bad = tmp_path / "terminals.csv"
    bad.write_text(
        "store_code,poiid,integration,lan_port\nS-0001,NEW-1,cloud,\nS-0001,NEW-2,rocket,\nS-0404,NEW-3,local,99999\n"
    )
    failed = await termpulse(db, "import", str(bad))
    assert failed.returncode == 2
    lines = failed.stderr.strip().splitlines()
    assert any(":3: integration:" in line for line in lines)
    assert any(":4: lan_port:" in line for line in lines)
    assert "nothing was written" in lines[-1]
    listed = await termpulse(db, "import", "--dry-run", str(bad).replace("terminals", "missing"))
    assert listed.returncode == 2 and "cannot read" in listed.stderr


async def test_dry_run_and_create_user(db):
    dry = await termpulse(db, "import", "--dry-run", STORES, TERMINALS)
    assert dry.returncode == 0 and "dry run, nothing written" in dry.stdout
    assert "60 created" in (await termpulse(db, "import", STORES)).stdout  # the dry run wrote nothing

    short = await termpulse(db, "create-user", "alice", "--role", "viewer", stdin="short\n")
    assert short.returncode == 2 and "too short" in short.stderr
    # No role given: asked for (here, no terminal: refused), never admin by default.
    no_role = await termpulse(db, "create-user", "alice", stdin="long enough password\n")
    assert no_role.returncode == 2
    assert "give the user's role: --role viewer|support|manager|admin" in no_role.stderr
    # operator, the old name, is support.
    made = await termpulse(db, "create-user", "alice", "--role", "operator", stdin="long enough password\n")
    assert made.returncode == 0 and "created support alice" in made.stdout
    again = await termpulse(db, "create-user", "alice", "--role", "admin", stdin="long enough password\n")
    assert again.returncode == 2


def test_a_bad_command_line_exits_2_with_usage():
    done = termpulse_sync("no-such-command")
    assert done.returncode == 2 and "usage: termpulse" in done.stderr and done.stdout == ""


def test_smoke_the_real_command_in_a_subprocess(tmp_path):
    """The one subprocess: `python -m app.cli` starts, migrates a new SQLite file, imports the
    sample fleet, prints its summary and exits 0."""
    env = {**os.environ, "TERMPULSE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'smoke.db'}"}
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "import", STORES, TERMINALS],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    assert "stores imported: 60 created" in done.stdout and "terminals imported: 246 created" in done.stdout


def test_server_and_worker_refuse_a_weak_secret_key(tmp_path):
    """The default key is public: with it anyone can forge an admin session cookie and decrypt
    the stored provider keys from a database copy."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'weak.db'}"
    for command in ("serve", "worker"):
        for key, why in (("change-me-in-production", "not set"), ("short-key", "at least 32")):
            done = termpulse_sync(command, env={"TERMPULSE_DATABASE_URL": url, "TERMPULSE_SECRET_KEY": key})
            assert done.returncode == 2, (command, key, done.stderr)
            assert why in done.stderr and "token_urlsafe" in done.stderr
    assert not (tmp_path / "weak.db").exists()  # refused before touching the database


def test_a_second_demo_in_the_same_folder_leaves_the_running_one_alone(tmp_path, monkeypatch):
    """It used to delete the running demo's database before finding its ports taken."""
    import fcntl

    monkeypatch.chdir(tmp_path)
    (tmp_path / "termpulse-demo.db").write_bytes(b"the running demo's data")
    with (tmp_path / "termpulse-demo.db.worker.lock").open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as the running demo's worker holds it
        done = termpulse_sync("demo", "--port", "1")
    assert done.returncode == 2 and "already running from this folder" in done.stderr
    assert (tmp_path / "termpulse-demo.db").read_bytes() == b"the running demo's data"
