"""Writing provider accounts. The API key is encrypted before it reaches the session."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import utcnow
from app.errors import InvalidInput, NameTaken, NotFound
from app.providers.crypto import decrypt_api_key, encrypt_api_key, key_hint
from app.providers.hosts import ProviderHosts
from app.providers.models import ProviderAccount
from app.providers.schemas import AccountFields, AccountIn, AccountUpdate

_FIELDS = tuple(AccountFields.model_fields)


async def list_accounts(session: AsyncSession) -> list[ProviderAccount]:
    return list((await session.execute(select(ProviderAccount).order_by(ProviderAccount.name))).scalars())


async def get_account(session: AsyncSession, account_id: int) -> ProviderAccount:
    account = await session.get(ProviderAccount, account_id)
    if account is None:
        raise NotFound("provider account", account_id)
    return account


async def _name_taken(session: AsyncSession, name: str, exclude_id: int | None) -> bool:
    query = (
        select(func.count())
        .select_from(ProviderAccount)
        .where(func.lower(ProviderAccount.name) == name.lower())
    )
    if exclude_id is not None:
        query = query.where(ProviderAccount.id != exclude_id)
    return bool(await session.scalar(query))


def _set_key(account: ProviderAccount, secret_key: str, api_key: str) -> None:
    account.api_key_encrypted = encrypt_api_key(secret_key, api_key)
    account.api_key_hint = key_hint(api_key)
    account.last_error = None


def _check_hosts(data: AccountIn | AccountUpdate, hosts: ProviderHosts) -> None:
    """The account's URLs must be provider API hosts: its key goes nowhere else."""
    errors = {
        name: refused
        for name in ("api_base_url", "management_base_url")
        if (url := getattr(data, name)) and (refused := hosts.refusal(url)) is not None
    }
    if errors:
        raise InvalidInput(errors)


async def create_account(
    session: AsyncSession, secret_key: str, data: AccountIn, *, hosts: ProviderHosts
) -> ProviderAccount:
    if await _name_taken(session, data.name, None):
        raise NameTaken(f"an account named {data.name!r} already exists", field="name")
    _check_hosts(data, hosts)
    account = ProviderAccount(**data.model_dump(include=set(_FIELDS)))
    _set_key(account, secret_key, data.api_key)
    session.add(account)
    await session.commit()
    return account


async def update_account(
    session: AsyncSession,
    secret_key: str,
    account: ProviderAccount,
    data: AccountUpdate,
    *,
    hosts: ProviderHosts,
) -> ProviderAccount:
    if await _name_taken(session, data.name, account.id):
        raise NameTaken(f"an account named {data.name!r} already exists", field="name")
    _check_hosts(data, hosts)
    if not data.api_key and _where_key_goes(account) != _where_key_goes(data):
        # Else an admin (or a stolen admin session) could send the stored key to any host:
        # point the account elsewhere, press Test, read the Authorization header there.
        raise InvalidInput(
            {"api_key": "enter the API key again: the account now calls another provider address"}
        )
    for name in _FIELDS:
        setattr(account, name, getattr(data, name))
    if data.api_key:
        _set_key(account, secret_key, data.api_key)
    account.updated_at = utcnow()
    await session.commit()
    return account


def _where_key_goes(account: ProviderAccount | AccountUpdate) -> tuple[object, ...]:
    """What decides the hosts the key is sent to: the base URLs set, or the kind's official
    hosts (the environment and region choose among those only)."""
    return (
        account.kind,
        account.environment,
        account.region,
        account.api_base_url,
        account.management_base_url,
    )


async def rotate_keys(session: AsyncSession, old_secret: str, new_secret: str) -> int:
    """Every stored key re-encrypted under the new secret, in the caller's transaction (all or
    nothing: a key the old secret cannot open raises KeyUnavailable and nothing changes)."""
    accounts = (
        (await session.execute(select(ProviderAccount).where(ProviderAccount.api_key_encrypted.is_not(None))))
        .scalars()
        .all()
    )
    for account in accounts:
        account.api_key_encrypted = encrypt_api_key(
            new_secret, decrypt_api_key(old_secret, account.api_key_encrypted)
        )
    return len(accounts)


async def replace_key(session: AsyncSession, secret_key: str, account: ProviderAccount, api_key: str) -> None:
    """A new key alone: nothing else about the account is re-entered."""
    _set_key(account, secret_key, api_key)
    account.updated_at = utcnow()
    await session.commit()


async def delete_account(session: AsyncSession, account: ProviderAccount) -> None:
    await session.delete(account)
    await session.commit()


def account_out(account: ProviderAccount) -> dict:
    data = {name: getattr(account, name) for name in (*_FIELDS, "id", "api_key_hint", "last_error")}
    data["has_api_key"] = bool(account.api_key_encrypted)
    return data
