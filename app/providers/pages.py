"""Admin pages for provider accounts and the inventory sync (preview, then apply)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.sessions import require_admin
from app.deps import get_session
from app.inventory.models import Terminal, TerminalEvent
from app.inventory.schemas import field_errors
from app.providers import service
from app.providers.check import try_account
from app.providers.crypto import KeyUnavailable
from app.providers.http import ProviderError
from app.providers.models import ENVIRONMENTS, PROVIDER_KINDS
from app.providers.schemas import AccountIn, AccountUpdate, KeyIn
from app.providers.sync import apply_preview, build_preview, fetch_remote, recall, remember
from app.web.templating import is_htmx, render

router = APIRouter(prefix="/admin/providers", include_in_schema=False, dependencies=[Depends(require_admin)])
CHOICES = {"kinds": PROVIDER_KINDS, "environments": ENVIRONMENTS}
_DEFAULTS = {"kind": "adyen", "environment": "test", "requests_per_second": 10, "poll_interval_s": 60}


def _go(request: Request, url: str) -> Response:
    if is_htmx(request):
        return Response(status_code=204, headers={"HX-Redirect": url})
    return RedirectResponse(url, status_code=303)


def _secret(request: Request) -> str:
    return request.app.state.settings.secret_key


def _form_values(form) -> dict:
    values = {k: v for k, v in form.items() if k != "api_key"}  # a key is never rendered back
    values["use_legacy_api"] = "use_legacy_api" in form
    return values


def _errors(exc: ValidationError) -> dict:
    return field_errors(exc)


async def _page(request: Request, session: AsyncSession, **extra) -> Response:
    accounts = await service.list_accounts(session)
    return render(request, "providers/list.html", {"accounts": accounts, **extra})


@router.get("")
async def accounts_page(request: Request, session: AsyncSession = Depends(get_session)):
    return await _page(request, session)


@router.get("/new")
async def new_form(request: Request):
    return render(
        request, "providers/form.html", {"values": dict(_DEFAULTS), "errors": {}, "account": None, **CHOICES}
    )


@router.post("/new")
async def create(request: Request, session: AsyncSession = Depends(get_session)):
    form = await request.form()
    try:
        account = await service.create_account(
            session, _secret(request), AccountIn.model_validate(dict(form))
        )
    except ValidationError as exc:
        errors = _errors(exc)
    except service.NameTaken as exc:
        errors = {"name": str(exc)}
    else:
        return _go(request, f"/admin/providers?created={account.id}")
    context = {"values": _form_values(form), "errors": errors, "account": None, **CHOICES}
    return render(request, "providers/form.html", context, block="form", status_code=422)


@router.get("/{account_id}")
async def edit_form(request: Request, account_id: int, session: AsyncSession = Depends(get_session)):
    account = await service.get_account(session, account_id)
    if account is None:
        return render(request, "providers/missing.html", {"account_id": account_id}, status_code=404)
    values = service.account_out(account)
    return render(
        request, "providers/form.html", {"values": values, "errors": {}, "account": account, **CHOICES}
    )


@router.post("/{account_id}")
async def update(request: Request, account_id: int, session: AsyncSession = Depends(get_session)):
    account = await service.get_account(session, account_id)
    if account is None:
        return render(request, "providers/missing.html", {"account_id": account_id}, status_code=404)
    form = await request.form()
    try:
        await service.update_account(
            session, _secret(request), account, AccountUpdate.model_validate(dict(form))
        )
    except ValidationError as exc:
        errors = _errors(exc)
    except service.NameTaken as exc:
        errors = {"name": str(exc)}
    else:
        return _go(request, "/admin/providers")
    context = {"values": _form_values(form), "errors": errors, "account": account, **CHOICES}
    return render(request, "providers/form.html", context, block="form", status_code=422)


@router.post("/{account_id}/key")
async def new_key(request: Request, account_id: int, session: AsyncSession = Depends(get_session)):
    account = await service.get_account(session, account_id)
    if account is None:
        return render(request, "providers/missing.html", {"account_id": account_id}, status_code=404)
    try:
        data = KeyIn.model_validate({"api_key": (await request.form()).get("api_key", "")})
    except ValidationError:
        return await _page(
            request,
            session,
            message=(False, f"{account.name}: the new key looks too short; nothing was changed."),
        )
    await service.replace_key(session, _secret(request), account, data.api_key)
    return await _page(
        request,
        session,
        message=(True, f"{account.name}: the API key was replaced (now {account.api_key_hint})."),
    )


@router.post("/{account_id}/delete")
async def delete(request: Request, account_id: int, session: AsyncSession = Depends(get_session)):
    account = await service.get_account(session, account_id)
    if account is not None:
        await service.delete_account(session, account)
    return _go(request, "/admin/providers")


@router.post("/{account_id}/test")
async def test(request: Request, account_id: int, session: AsyncSession = Depends(get_session)):
    account = await service.get_account(session, account_id)
    if account is None:
        return render(request, "providers/missing.html", {"account_id": account_id}, status_code=404)
    ok, text = await try_account(_secret(request), account)
    return await _page(request, session, message=(ok, f"{account.name}: {text}"))


@router.get("/{account_id}/sync")
async def sync_preview(request: Request, account_id: int, session: AsyncSession = Depends(get_session)):
    account = await service.get_account(session, account_id)
    if account is None:
        return render(request, "providers/missing.html", {"account_id": account_id}, status_code=404)
    try:
        remote = await fetch_remote(session, _secret(request), account)
    except (ProviderError, KeyUnavailable) as exc:
        return render(
            request,
            "providers/sync.html",
            {"account": account, "preview": None, "error": str(exc)},
            status_code=502,
        )
    preview = await build_preview(session, account, remote)
    remember(preview)
    return render(request, "providers/sync.html", {"account": account, "preview": preview, "error": None})


@router.post("/{account_id}/sync")
async def sync_apply(request: Request, account_id: int, session: AsyncSession = Depends(get_session)):
    account = await service.get_account(session, account_id)
    if account is None:
        return render(request, "providers/missing.html", {"account_id": account_id}, status_code=404)
    preview = recall(str((await request.form()).get("token", "")), account.id)
    if preview is None:
        return render(
            request,
            "providers/sync.html",
            {
                "account": account,
                "preview": None,
                "error": "This preview has expired or was already applied: preview again.",
            },
            status_code=409,
        )
    summary = await apply_preview(session, account, preview)
    changed = [r.poiid for r in preview.rows if r.address_changed]
    events = []
    if changed:
        events = (
            await session.execute(
                select(Terminal.poiid, TerminalEvent.at, TerminalEvent.detail)
                .join(Terminal, Terminal.id == TerminalEvent.terminal_id)
                .where(Terminal.poiid.in_(changed), TerminalEvent.kind == "address_changed")
                .order_by(TerminalEvent.at.desc())
                .limit(200)
            )
        ).all()
    return render(
        request,
        "providers/sync.html",
        {"account": account, "preview": preview, "applied": summary, "events": events, "error": None},
    )
