"""Password hashing with scrypt (standard library), salted, constant-time compare.

scrypt costs ~100 ms of CPU by design: the server runs it in a thread (`check_password`), so
wrong passwords cannot stall the event loop, and runs it for unknown users too, so the answer
takes as long whether or not the account exists."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os

_N, _R, _P = 2**14, 8, 1


def hash_password(password: str) -> str:
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return f"scrypt${_N}${_R}${_P}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        _, n, r, p, salt, digest = stored.split("$")
        computed = hashlib.scrypt(
            password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p), dklen=32
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(computed, base64.b64decode(digest))


_UNKNOWN_USER_HASH: str | None = None


async def check_password(password: str, stored: str | None) -> bool:
    """verify_password in a worker thread; `stored` None (no such user) costs the same and fails."""
    global _UNKNOWN_USER_HASH
    if stored is None:
        if _UNKNOWN_USER_HASH is None:
            _UNKNOWN_USER_HASH = await asyncio.to_thread(hash_password, os.urandom(16).hex())
        await asyncio.to_thread(verify_password, password, _UNKNOWN_USER_HASH)
        return False
    return await asyncio.to_thread(verify_password, password, stored)
