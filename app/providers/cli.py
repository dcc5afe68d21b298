"""`termpulse rotate-secret`: re-encrypt the stored provider keys under a new secret key."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable, Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.audit import record_command
from app.config import Settings, weak_secret_key
from app.db import Database, in_transaction
from app.migrate import migrate
from app.providers.crypto import KeyUnavailable
from app.providers.service import rotate_keys

OLD_SECRET_ENV = "TERMPULSE_OLD_SECRET_KEY"


# Other secrets encrypted with the key (the alert channels' URLs), re-encrypted in the same
# transaction: given by the command line, which knows the layers above.
Rotator = Callable[[AsyncSession, str, str], Awaitable[int]]


def rotate_secret_command(settings: Settings, also: Sequence[Rotator] = ()) -> int:
    """The old key from TERMPULSE_OLD_SECRET_KEY, the new one from TERMPULSE_SECRET_KEY (as the
    server will read it next). All keys or none: one the old secret cannot open stops it."""
    old = os.environ.get(OLD_SECRET_ENV, "")
    if not old:
        print(f"termpulse rotate-secret: set {OLD_SECRET_ENV} to the key in use until now", file=sys.stderr)
        return 2
    if reason := weak_secret_key(settings):
        print(f"termpulse rotate-secret: the new key is weak: {reason}", file=sys.stderr)
        return 2
    if old == settings.secret_key:
        print("termpulse rotate-secret: the old and new keys are the same", file=sys.stderr)
        return 2
    try:
        count, others = asyncio.run(_rotate(settings, old, also))
    except KeyUnavailable:
        print(
            f"termpulse rotate-secret: a stored key does not open with {OLD_SECRET_ENV}: nothing changed",
            file=sys.stderr,
        )
        return 1
    if others:
        print(f"{others} other stored secret(s) (alert channel URLs) re-encrypted.")
    print(f"{count} provider key(s) re-encrypted. Restart every server and worker with the new key;")
    print("sessions signed with the old key end (everyone logs in again).")
    return 0


async def _rotate(settings: Settings, old: str, also: Sequence[Rotator] = ()) -> tuple[int, int]:
    database = Database(settings.database_url)

    async def work(session: AsyncSession) -> tuple[int, int]:
        keys = await rotate_keys(session, old, settings.secret_key)
        others = sum([await rotate(session, old, settings.secret_key) for rotate in also])
        detail = f"{keys} provider key(s) and {others} other secret(s) re-encrypted under the new key"
        await record_command(session, "secret rotated", detail=detail)
        return keys, others

    try:
        await migrate(database.engine)
        return await in_transaction(database, work)
    finally:
        await database.dispose()
