"""JSON API for provider accounts (admin only). Keys go in, never out: only the masked hint."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.sessions import require_admin
from app.deps import get_session
from app.providers import service
from app.providers.check import try_account
from app.providers.crypto import KeyUnavailable
from app.providers.http import ProviderError
from app.providers.schemas import AccountIn, AccountOut, AccountUpdate, KeyIn
from app.providers.sync import apply_preview, build_preview, fetch_remote, recall, remember

router = APIRouter(prefix="/providers", tags=["providers"], dependencies=[Depends(require_admin)])


class TestOut(BaseModel):
    ok: bool
    message: str


class SyncRowOut(BaseModel):
    action: str
    poiid: str
    store_code: str | None
    changes: dict[str, list]
    address_changed: bool
    reason: str


class SyncOut(BaseModel):
    token: str | None
    applied: bool
    counts: dict[str, int]
    rows: list[SyncRowOut]


async def _account(session: AsyncSession, account_id: int):
    account = await service.get_account(session, account_id)
    if account is None:
        raise HTTPException(404, f"no provider account {account_id}")
    return account


def _secret(request: Request) -> str:
    return request.app.state.settings.secret_key


@router.get("", response_model=list[AccountOut], summary="Provider accounts (keys masked)")
async def list_accounts(session: AsyncSession = Depends(get_session)):
    return [service.account_out(a) for a in await service.list_accounts(session)]


@router.post("", response_model=AccountOut, status_code=201, summary="Add a provider account")
async def create(data: AccountIn, request: Request, session: AsyncSession = Depends(get_session)):
    try:
        account = await service.create_account(session, _secret(request), data)
    except service.NameTaken as exc:
        raise HTTPException(409, str(exc))
    return service.account_out(account)


@router.get("/{account_id}", response_model=AccountOut)
async def get(account_id: int, session: AsyncSession = Depends(get_session)):
    return service.account_out(await _account(session, account_id))


@router.put(
    "/{account_id}",
    response_model=AccountOut,
    summary="Replace an account's settings (omit api_key to keep the stored key)",
)
async def replace(
    account_id: int, data: AccountUpdate, request: Request, session: AsyncSession = Depends(get_session)
):
    account = await _account(session, account_id)
    try:
        await service.update_account(session, _secret(request), account, data)
    except service.NameTaken as exc:
        raise HTTPException(409, str(exc))
    return service.account_out(account)


@router.put("/{account_id}/key", status_code=204, summary="Replace the API key alone")
async def replace_key(
    account_id: int, data: KeyIn, request: Request, session: AsyncSession = Depends(get_session)
):
    await service.replace_key(session, _secret(request), await _account(session, account_id), data.api_key)
    return Response(status_code=204)


@router.delete("/{account_id}", status_code=204)
async def delete(account_id: int, session: AsyncSession = Depends(get_session)):
    await service.delete_account(session, await _account(session, account_id))
    return Response(status_code=204)


@router.post("/{account_id}/test", response_model=TestOut, summary="One call with the stored key")
async def test(account_id: int, request: Request, session: AsyncSession = Depends(get_session)):
    ok, message = await try_account(_secret(request), await _account(session, account_id))
    return {"ok": ok, "message": message}


def _sync_out(preview, applied: bool) -> dict:
    return {
        "token": None if applied else preview.token,
        "applied": applied,
        "counts": preview.counts,
        "rows": [
            {
                "action": r.action,
                "poiid": r.poiid,
                "store_code": r.store_code,
                "changes": {
                    k: [str(a) if a is not None else None, str(b) if b is not None else None]
                    for k, (a, b) in r.changes.items()
                },
                "address_changed": r.address_changed,
                "reason": r.reason,
            }
            for r in preview.rows
        ],
    }


@router.post(
    "/{account_id}/sync",
    response_model=SyncOut,
    summary="Sync terminals from the provider: preview (default), or apply a preview's token",
)
async def sync(
    account_id: int,
    request: Request,
    apply: bool = False,
    token: str | None = None,
    session: AsyncSession = Depends(get_session),
):
    account = await _account(session, account_id)
    preview = recall(token, account.id) if token else None
    if token and preview is None:
        raise HTTPException(409, "this preview has expired: preview again")
    if preview is None:
        try:
            remote = await fetch_remote(session, _secret(request), account)
        except (ProviderError, KeyUnavailable) as exc:
            raise HTTPException(502, f"the provider's inventory could not be read: {exc}")
        preview = await build_preview(session, account, remote)
        remember(preview)
    if not apply:
        return _sync_out(preview, applied=False)
    await apply_preview(session, account, preview)
    return _sync_out(preview, applied=True)
