"""`termpulse create-user NAME [--role admin|operator|viewer] [--password P]`."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys

from sqlalchemy import select

from app.auth.models import User
from app.auth.passwords import hash_password
from app.config import Settings
from app.db import Database
from app.migrate import migrate

MIN_PASSWORD = 8


def create_user_command(settings: Settings, args: argparse.Namespace) -> int:
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
    return asyncio.run(_create(settings, args.username.strip(), args.role, password))


async def _create(settings: Settings, username: str, role: str, password: str) -> int:
    database = Database(settings.database_url)
    try:
        await migrate(database.engine)
        async with database.sessionmaker() as session:
            if await session.scalar(select(User.id).where(User.username == username)):
                print(f"user {username} already exists", file=sys.stderr)
                return 2
            session.add(User(username=username, role=role, password_hash=hash_password(password)))
            await session.commit()
    finally:
        await database.dispose()
    print(f"created {role} {username}")
    return 0
