"""JSON API for provider accounts (admin only). Keys go in, never out: only the masked hint."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel

from app.auth.sessions import require_admin
from app.providers import service
from app.providers.check import try_account
from app.providers.hosts import ProviderHosts
from app.providers.models import ProviderAccount
from app.providers.schemas import AccountIn, AccountOut, AccountUpdate, KeyIn
from app.providers.sync import SyncPreview, apply_preview, build_preview, fetch_remote, preview_again
from app.web.deps import RowId, SessionDep

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


def _secret(request: Request) -> str:
    return request.app.state.settings.secret_key


def _hosts(request: Request) -> ProviderHosts:
    return ProviderHosts.from_settings(request.app.state.settings)


def _out(account: ProviderAccount) -> AccountOut:
    return AccountOut.model_validate(service.account_out(account))


@router.get("", summary="Provider accounts (keys masked)")
async def list_accounts(session: SessionDep) -> list[AccountOut]:
    return [_out(a) for a in await service.list_accounts(session)]


@router.post("", status_code=201, summary="Add a provider account")
async def create(data: AccountIn, request: Request, session: SessionDep) -> AccountOut:
    return _out(await service.create_account(session, _secret(request), data, hosts=_hosts(request)))


@router.get("/{account_id}")
async def get(account_id: RowId, session: SessionDep) -> AccountOut:
    return _out(await service.get_account(session, account_id))


@router.put("/{account_id}", summary="Replace an account's settings (omit api_key to keep the stored key)")
async def replace(
    account_id: RowId, data: AccountUpdate, request: Request, session: SessionDep
) -> AccountOut:
    account = await service.get_account(session, account_id)
    return _out(await service.update_account(session, _secret(request), account, data, hosts=_hosts(request)))


@router.put("/{account_id}/key", status_code=204, summary="Replace the API key alone")
async def replace_key(account_id: RowId, data: KeyIn, request: Request, session: SessionDep) -> Response:
    account = await service.get_account(session, account_id)
    await service.replace_key(session, _secret(request), account, data.api_key)
    return Response(status_code=204)


@router.delete("/{account_id}", status_code=204)
async def delete(account_id: RowId, session: SessionDep) -> Response:
    await service.delete_account(session, await service.get_account(session, account_id))
    return Response(status_code=204)


@router.post("/{account_id}/test", summary="One call with the stored key")
async def test(account_id: RowId, request: Request, session: SessionDep) -> TestOut:
    account = await service.get_account(session, account_id)
    ok, message = await try_account(_secret(request), account, hosts=_hosts(request))
    return TestOut(ok=ok, message=message)


def _sync_out(preview: SyncPreview, applied: bool) -> SyncOut:
    return SyncOut(
        token=None if applied else preview.token,
        applied=applied,
        counts=preview.counts,
        rows=[
            SyncRowOut(
                action=r.action,
                poiid=r.poiid,
                store_code=r.store_code,
                changes={
                    k: [str(a) if a is not None else None, str(b) if b is not None else None]
                    for k, (a, b) in r.changes.items()
                },
                address_changed=r.address_changed,
                reason=r.reason,
            )
            for r in preview.rows
        ],
    )


@router.post(
    "/{account_id}/sync",
    summary="Sync terminals from the provider: preview (default), or apply a preview's token",
)
async def sync(
    account_id: RowId, request: Request, session: SessionDep, apply: bool = False, token: str | None = None
) -> SyncOut:
    account = await service.get_account(session, account_id)
    if token:
        preview = await preview_again(session, _secret(request), account, token, hosts=_hosts(request))
    else:
        preview = await build_preview(
            session, account, await fetch_remote(session, _secret(request), account, hosts=_hosts(request))
        )
    if not apply:
        return _sync_out(preview, applied=False)
    await apply_preview(session, account, preview)
    return _sync_out(preview, applied=True)
