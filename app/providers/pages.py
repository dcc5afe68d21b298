"""Admin pages for provider accounts and the inventory sync (preview, then apply)."""

from __future__ import annotations

from contextlib import suppress
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import FormData

from app.auth.sessions import require_admin
from app.errors import InvalidInput, NameTaken, NotFound
from app.inventory.models import Terminal, TerminalEvent
from app.inventory.schemas import field_errors
from app.providers import service
from app.providers.check import try_account
from app.providers.hosts import ProviderHosts
from app.providers.models import ENVIRONMENTS, PROVIDER_KINDS, ProviderAccount
from app.providers.schemas import AccountIn, AccountUpdate, KeyIn
from app.providers.sync import apply_preview, build_preview, fetch_remote, preview_again
from app.web.deps import SessionDep
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


def _hosts(request: Request) -> ProviderHosts:
    return ProviderHosts.from_settings(request.app.state.settings)


def _form_values(form: FormData) -> dict[str, Any]:
    values: dict[str, Any] = {k: v for k, v in form.items() if k != "api_key"}  # a key is never rendered back
    values["use_legacy_api"] = "use_legacy_api" in form
    return values


def _form_again(
    request: Request, form: FormData, errors: dict[str, str], account: ProviderAccount | None
) -> Response:
    context = {"values": _form_values(form), "errors": errors, "account": account, **CHOICES}
    return render(request, "providers/form.html", context, block="form", status_code=422)


async def _page(request: Request, session: AsyncSession, **extra: Any) -> Response:
    accounts = await service.list_accounts(session)
    return render(request, "providers/list.html", {"accounts": accounts, **extra})


@router.get("")
async def accounts_page(request: Request, session: SessionDep) -> Response:
    return await _page(request, session)


@router.get("/new")
async def new_form(request: Request) -> Response:
    return render(
        request, "providers/form.html", {"values": dict(_DEFAULTS), "errors": {}, "account": None, **CHOICES}
    )


@router.post("/new")
async def create(request: Request, session: SessionDep) -> Response:
    form = await request.form()
    try:
        account = await service.create_account(
            session, _secret(request), AccountIn.model_validate(dict(form)), hosts=_hosts(request)
        )
    except ValidationError as exc:
        return _form_again(request, form, field_errors(exc), None)
    except NameTaken as exc:
        return _form_again(request, form, {"name": exc.message}, None)
    except InvalidInput as exc:
        return _form_again(request, form, exc.errors, None)
    return _go(request, f"/admin/providers?created={account.id}")


@router.get("/{account_id}")
async def edit_form(request: Request, account_id: int, session: SessionDep) -> Response:
    account = await service.get_account(session, account_id)
    values = service.account_out(account)
    return render(
        request, "providers/form.html", {"values": values, "errors": {}, "account": account, **CHOICES}
    )


@router.post("/{account_id}")
async def update(request: Request, account_id: int, session: SessionDep) -> Response:
    account = await service.get_account(session, account_id)
    form = await request.form()
    try:
        await service.update_account(
            session,
            _secret(request),
            account,
            AccountUpdate.model_validate(dict(form)),
            hosts=_hosts(request),
        )
    except ValidationError as exc:
        return _form_again(request, form, field_errors(exc), account)
    except NameTaken as exc:
        return _form_again(request, form, {"name": exc.message}, account)
    except InvalidInput as exc:
        return _form_again(request, form, exc.errors, account)
    return _go(request, "/admin/providers")


@router.post("/{account_id}/key")
async def new_key(request: Request, account_id: int, session: SessionDep) -> Response:
    account = await service.get_account(session, account_id)
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
async def delete(request: Request, account_id: int, session: SessionDep) -> Response:
    with suppress(NotFound):  # already gone: the list is where this ends either way
        await service.delete_account(session, await service.get_account(session, account_id))
    return _go(request, "/admin/providers")


@router.post("/{account_id}/test")
async def test(request: Request, account_id: int, session: SessionDep) -> Response:
    account = await service.get_account(session, account_id)
    ok, text = await try_account(_secret(request), account, hosts=_hosts(request))
    return await _page(request, session, message=(ok, f"{account.name}: {text}"))


@router.get("/{account_id}/sync")
async def sync_preview(request: Request, account_id: int, session: SessionDep) -> Response:
    account = await service.get_account(session, account_id)
    preview = await build_preview(
        session, account, await fetch_remote(session, _secret(request), account, hosts=_hosts(request))
    )
    return render(request, "providers/sync.html", {"account": account, "preview": preview})


@router.post("/{account_id}/sync")
async def sync_apply(request: Request, account_id: int, session: SessionDep) -> Response:
    account = await service.get_account(session, account_id)
    token = str((await request.form()).get("token", ""))
    preview = await preview_again(session, _secret(request), account, token, hosts=_hosts(request))
    summary = await apply_preview(session, account, preview)
    changed = [r.poiid for r in preview.rows if r.address_changed]
    events = []
    if changed:
        events = list(
            (
                await session.execute(
                    select(Terminal.poiid, TerminalEvent.at, TerminalEvent.detail)
                    .join(Terminal, Terminal.id == TerminalEvent.terminal_id)
                    .where(Terminal.poiid.in_(changed), TerminalEvent.kind == "address_changed")
                    .order_by(TerminalEvent.at.desc())
                    .limit(200)
                )
            ).all()
        )
    return render(
        request,
        "providers/sync.html",
        {"account": account, "preview": preview, "applied": summary, "events": events},
    )
