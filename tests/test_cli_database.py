"""Every command says which database it uses (never its password); create-user says when a
demo is involved (its database is made afresh at each start; a running demo uses its own)."""

from __future__ import annotations

import fcntl
import os

from tests.cli import termpulse, termpulse_async


def test_commands_name_their_database_without_the_password(tmp_path):
    url = "postgresql+asyncpg://report:s3cret-pass@127.0.0.1:1/fleet"
    done = termpulse(
        "export", "--format", "xlsx", env={"TERMPULSE_DATABASE_URL": url}
    )  # bad input: no database call
    assert done.returncode == 2
    first = done.stderr.splitlines()[0]
    assert first == "termpulse export: database postgresql+asyncpg://report:***@127.0.0.1:1/fleet"
    assert "s3cret" not in done.stderr + done.stdout
    db = tmp_path / "here.db"
    done = termpulse(
        "import",
        "--dry-run",
        str(tmp_path / "missing.csv"),
        env={"TERMPULSE_DATABASE_URL": f"sqlite+aiosqlite:///{db}"},
    )
    assert done.stderr.splitlines()[0].endswith(f"({db})")
    agent = termpulse("agent", "--help")
    assert "database" not in agent.stderr  # the store agent has none


async def test_create_user_against_the_demo_database_says_so(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the demo's database lives in the working directory
    demo = tmp_path / "termpulse-demo.db"
    made = await termpulse_async(
        "create-user",
        "ann",
        "--role",
        "admin",
        env={"TERMPULSE_DATABASE_URL": "sqlite+aiosqlite:///termpulse-demo.db"},
        stdin="long enough password\n",
    )
    assert made.returncode == 0 and "created admin ann" in made.stdout
    assert f"database sqlite+aiosqlite:///termpulse-demo.db ({demo})" in made.stderr
    assert "database of `termpulse demo`" in made.stderr and "gone after the next" in made.stderr
    assert "which is running" not in made.stderr

    # A demo running (its worker holds the lock) while the user goes into another database.
    fd = os.open(tmp_path / "termpulse-demo.db.worker.lock", os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        other = await termpulse_async(
            "create-user",
            "bob",
            "--role",
            "admin",
            env={"TERMPULSE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'termpulse.db'}"},
            stdin="long enough password\n",
        )
        assert other.returncode == 0
        assert f"a demo is running on {demo}" in other.stderr and "cannot log in there" in other.stderr
        again = await termpulse_async(
            "create-user",
            "cy",
            "--role",
            "admin",
            env={"TERMPULSE_DATABASE_URL": "sqlite+aiosqlite:///termpulse-demo.db"},
            stdin="long enough password\n",
        )
        assert "which is running: it asks for a login" in again.stderr
    finally:
        os.close(fd)
    plain = await termpulse_async(
        "create-user",
        "dee",
        "--role",
        "admin",
        env={"TERMPULSE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'termpulse.db'}"},
        stdin="long enough password\n",
    )
    assert "note:" not in plain.stderr  # no demo involved: nothing to say
