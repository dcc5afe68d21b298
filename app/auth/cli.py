"""`termpulse create-user NAME --role viewer|support|manager|admin [--password P]`: the role is
asked for when not given, never admin by default."""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import getpass
import os
import sys
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.engine import make_url

from app.auth import audit
from app.auth.models import User
from app.auth.passwords import hash_password
from app.auth.roles import ROLES, WHAT_EACH_MAY_DO, normalize
from app.config import Settings
from app.db import Database
from app.migrate import migrate

MIN_PASSWORD = 8
_ROLES_HELP = "; ".join(f"{role}: {what}" for role, what in WHAT_EACH_MAY_DO.items())


def create_user_command(
    settings: Settings, args: argparse.Namespace, demo_database: Path | None = None
) -> int:
    role = args.role
    if role is None:
        if not sys.stdin.isatty():
            print(f"give the user's role: --role {'|'.join(ROLES)} ({_ROLES_HELP})", file=sys.stderr)
            return 2
        role = input(f"Role for {args.username} ({', '.join(ROLES)}): ")
    try:
        role = normalize(role)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    password = args.password
    if password is None:
        if not sys.stdin.isatty():
            password = sys.stdin.readline().rstrip("\n")
        else:
            password = getpass.getpass(f"Password for {args.username}: ")
            if password != getpass.getpass("Again: "):
                print("the two passwords differ", file=sys.stderr)
                return 2
    if len(password) < MIN_PASSWORD:
        print(f"password too short: at least {MIN_PASSWORD} characters", file=sys.stderr)
        return 2
    return asyncio.run(_create(settings, args.username.strip(), role, password, demo_database))


async def _create(
    settings: Settings, username: str, role: str, password: str, demo_database: Path | None = None
) -> int:
    database = Database(settings.database_url)
    try:
        await migrate(database.engine)
        async with database.sessionmaker() as session:
            if await session.scalar(select(User.id).where(User.username == username)):
                print(f"user {username} already exists", file=sys.stderr)
                return 2
            session.add(User(username=username, role=role, password_hash=hash_password(password)))
            await audit.record_command(session, "user created", target=username, detail=f"role {role}")
            await session.commit()
    finally:
        await database.dispose()
    print(f"created {role} {username}")
    if demo_database is not None and (note := demo_note(settings.database_url, demo_database)):
        print(note, file=sys.stderr)
    return 0


def _held(lock: Path) -> bool:
    """Whether a running worker (a demo's, a server's) holds this SQLite database's worker lock."""
    try:
        fd = os.open(lock, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def demo_note(database_url: str, demo_database: Path) -> str | None:
    """What a user made here means when a demo is involved: the demo's own database is made
    afresh at each demo start; a user in another database does not open the demo running."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    here, demo = Path(url.database).resolve(), demo_database.resolve()
    demo_running = _held(demo.with_name(demo.name + ".worker.lock"))
    if here == demo:
        return (
            "note: this is the database of `termpulse demo`"
            + (", which is running: it asks for a login from now on (within 5 s)" if demo_running else "")
            + ". The demo makes it afresh at each start: this user is gone after the next one."
        )
    if demo_running:
        return (
            f"note: a demo is running on {demo}, not on this database ({here}): this user cannot log in "
            f"there. For the demo, run: TERMPULSE_DATABASE_URL=sqlite+aiosqlite:///{demo} "
            "termpulse create-user ..."
        )
    return None
