"""API keys at rest: Fernet tokens under a key derived from TERMPULSE_SECRET_KEY.

The clear key exists only in memory, for the duration of a provider call. It is never
rendered, logged or returned by the API: people see `api_key_hint` ("••••abcd") only.
"""

from __future__ import annotations

import base64

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_INFO = b"termpulse provider api keys v1"


class KeyUnavailable(Exception):
    """The stored key cannot be decrypted (TERMPULSE_SECRET_KEY changed) or is missing."""


def _fernet(secret_key: str) -> Fernet:
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(secret_key.encode())
    return Fernet(base64.urlsafe_b64encode(derived))


def encrypt_api_key(secret_key: str, api_key: str) -> bytes:
    return _fernet(secret_key).encrypt(api_key.encode())


def decrypt_api_key(secret_key: str, token: bytes | None) -> str:
    if not token:
        raise KeyUnavailable("no API key is stored for this account")
    try:
        return _fernet(secret_key).decrypt(bytes(token)).decode()
    except InvalidToken:
        raise KeyUnavailable(
            "the stored API key cannot be decrypted (TERMPULSE_SECRET_KEY changed?): enter the key again"
        ) from None


def key_hint(api_key: str) -> str:
    """What people may see of a key: its last four characters."""
    tail = api_key[-4:] if len(api_key) >= 12 else ""
    return f"••••{tail}"
