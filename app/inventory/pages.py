"""Admin pages for the inventory: list, create, edit, delete, and the CSV import with preview."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import UploadFile

from app.auth.sessions import Identity, require_admin
from app.config import get_settings
from app.errors import AppError, InvalidInput, NotFound
from app.inventory import queries
from app.inventory.csvimport import ImportFailed, import_fleet
from app.inventory.identity import identity_events, learned_identities, relearn_terminal
from app.inventory.models import INTEGRATIONS, LOCAL_APIS, PROVIDERS
from app.inventory.monitors import DEFAULT_DOWN_AFTER, DEFAULT_UP_AFTER
from app.inventory.previews import PreviewStore
from app.inventory.profile_service import (
    delete_profile,
    get_profile,
    profile_names,
    profiles_with_use,
    save_profile,
)
from app.inventory.profiles import DESTINATION_CHECKS
from app.inventory.schemas import (
    CheckSettingsIn,
    NetworkProfileIn,
    StoreIn,
    TerminalIn,
    field_errors,
    profile_errors,
)
from app.inventory.service import (
    check_scope_problems,
    check_settings_list,
    delete_store,
    delete_terminal,
    save_check_settings,
    save_store,
    save_terminal,
)
from app.poiid import normalise_poiid
from app.web.deps import SessionDep
from app.web.templating import is_htmx, render

router = APIRouter(prefix="/admin", include_in_schema=False, dependencies=[Depends(require_admin)])
PER_PAGE = 50
CHOICES = {
    "integrations": INTEGRATIONS,
    "local_apis": LOCAL_APIS,
    "providers": PROVIDERS,
}


async def _choices(session: AsyncSession) -> dict[str, Any]:
    """The form's choices, with the network profiles as they are now."""
    return CHOICES | {"profiles": await profile_names(session)}


def _go(request: Request, url: str) -> Response:
    """After a successful write: htmx follows HX-Redirect, a plain form a 303."""
    if is_htmx(request):
        return Response(status_code=204, headers={"HX-Redirect": url})
    return RedirectResponse(url, status_code=303)


# ---- stores -------------------------------------------------------------------------------


@router.get("/stores")
async def stores_page(
    request: Request, session: SessionDep, q: str = "", region: str = "", page: int = 1
) -> Response:
    result = await queries.paginate(session, queries.store_query(q=q, region=region), max(page, 1), PER_PAGE)
    context = {"page": result, "q": q, "region": region, "regions": await queries.regions(session)}
    context |= await _check_settings_context(session)
    return render(request, "inventory/stores.html", context, block="results")


async def _check_settings_context(session: AsyncSession, **more: Any) -> dict[str, Any]:
    settings = get_settings()
    defaults = (
        f"every {settings.check_interval_s} s, timeout {settings.check_timeout_s:g} s, "
        f"down after {DEFAULT_DOWN_AFTER}, up after {DEFAULT_UP_AFTER}"
    )
    return {
        "cs_rows": await check_settings_list(session),
        "cs_regions": await queries.regions(session),
        "cs_defaults": defaults,
        "cs_values": {"scope": "region"},
        "cs_errors": {},
        "cs_message": "",
        "profiles": await profile_names(session),
        **more,
    }


@router.post("/check-settings")
async def submit_check_settings(request: Request, session: SessionDep) -> Response:
    """Set a region's or a network profile's check settings: the section again, with the
    result or each error by its field."""
    values: dict[str, Any] = dict(await request.form())
    scope, name = str(values.get("scope", "")), str(values.get("name", ""))
    try:
        changed = await save_check_settings(session, scope, name, CheckSettingsIn.model_validate(values))
    except ValidationError as exc:
        errors = await check_scope_problems(session, scope, name) | field_errors(exc, values, CheckSettingsIn)
    except InvalidInput as exc:
        errors = dict(exc.errors)
    else:
        message = f"Saved for {scope} {name.strip()}: {changed} monitor{'' if changed == 1 else 's'} changed."
        context = await _check_settings_context(session, cs_message=message, cs_values={"scope": scope})
        return render(request, "inventory/_check_settings.html", context)
    await session.rollback()
    context = await _check_settings_context(session, cs_values=values, cs_errors=errors)
    return render(request, "inventory/_check_settings.html", context, status_code=422)


@router.get("/stores/new")
async def new_store_form(request: Request, session: SessionDep) -> Response:
    context = {"values": {"timezone": "UTC"}, "errors": {}, **await _choices(session)}
    return render(request, "inventory/store_form.html", context)


@router.get("/stores/{code}/edit")
async def edit_store_form(request: Request, code: str, session: SessionDep) -> Response:
    store = await queries.store_by_code(session, code)
    if store is None:
        raise NotFound("store", code)
    values = {f: getattr(store, f) for f in StoreIn.model_fields}
    context = {"values": values, "errors": {}, "current": code, **await _choices(session)}
    return render(request, "inventory/store_form.html", context)


@router.post("/stores/new")
@router.post("/stores/{code}/edit")
async def submit_store(request: Request, session: SessionDep, code: str | None = None) -> Response:
    return await _submit(
        request,
        session,
        StoreIn,
        save_store,
        current=code,
        template="inventory/store_form.html",
        done=lambda store: f"/admin/stores?q={store.code}",
    )


async def _submit(
    request: Request,
    session: AsyncSession,
    model: type[StoreIn] | type[TerminalIn],
    save: Callable[[AsyncSession, Any, str | None], Awaitable[Any]],
    *,
    current: str | None,
    template: str,
    done: Callable[[Any], str],
    defaults: dict[str, str] | None = None,
) -> Response:
    """Validate a create/edit form and save it; on error, the form again with each message by
    its field. Refusals of no one field (the row is gone) are the error page's."""
    values: dict[str, Any] = {**(defaults or {}), **dict(await request.form())}
    try:
        saved = await save(session, model.model_validate(values), current)
    except ValidationError as exc:
        errors = field_errors(exc, values, model)
    except AppError as exc:
        if exc.field is None:
            raise
        errors = {exc.field: exc.message}
    else:
        return _go(request, done(saved))
    await session.rollback()
    context = {"values": values, "errors": errors, "current": current, **await _choices(session)}
    return render(request, template, context, block="form", status_code=422)


@router.post("/stores/{code}/delete")
async def remove_store(request: Request, code: str, session: SessionDep) -> Response:
    """A refusal (still has terminals, already gone) is shown where the button was."""
    await delete_store(session, code)
    return _go(request, "/admin/stores")


# ---- terminals ----------------------------------------------------------------------------


@router.get("/terminals")
async def terminals_page(
    request: Request, session: SessionDep, q: str = "", store: str = "", page: int = 1
) -> Response:
    query = queries.terminal_query(q=q, store=store)
    result = await queries.paginate(session, query, max(page, 1), PER_PAGE)
    return render(
        request, "inventory/terminals.html", {"page": result, "q": q, "store": store}, block="results"
    )


@router.get("/terminals/new")
async def new_terminal_form(request: Request, store: str = "") -> Response:
    values = {"store_code": store, "integration": "cloud", "provider": "adyen"}
    return render(request, "inventory/terminal_form.html", {"values": values, "errors": {}, **CHOICES})


@router.get("/terminals/{poiid}/edit")
async def edit_terminal_form(request: Request, poiid: str, session: SessionDep) -> Response:
    found = await queries.terminal_with_store_code(session, poiid)
    if found is None:
        raise NotFound("terminal", poiid)
    terminal, store_code = found
    values = {f: getattr(terminal, f) for f in TerminalIn.model_fields if f != "store_code"}
    values["store_code"] = store_code
    identities = await learned_identities(session, terminal.id)
    events = await identity_events(session, terminal.id)
    context = {
        "values": values,
        "errors": {},
        "current": terminal.poiid,
        "identities": identities,
        "identity_events": events,
        **CHOICES,
    }
    return render(request, "inventory/terminal_form.html", context)


@router.post("/terminals/new")
@router.post("/terminals/{poiid}/edit")
async def submit_terminal(request: Request, session: SessionDep, poiid: str | None = None) -> Response:
    return await _submit(
        request,
        session,
        TerminalIn,
        save_terminal,
        current=poiid,
        template="inventory/terminal_form.html",
        done=lambda t: f"/admin/terminals?q={t.poiid}",
        defaults={"cloud_enabled": "no"},
    )  # an unticked checkbox is absent from the form


@router.post("/terminals/{poiid}/relearn-identity")
async def relearn_identity(
    request: Request, poiid: str, session: SessionDep, admin: Annotated[Identity, Depends(require_admin)]
) -> Response:
    """After replacing the terminal at this address: its next healthy check learns the new device."""
    await relearn_terminal(session, poiid, admin.username)
    return _go(request, f"/admin/terminals/{quote(normalise_poiid(poiid), safe='')}/edit?relearn=1")


@router.post("/terminals/{poiid}/delete")
async def remove_terminal(request: Request, poiid: str, session: SessionDep) -> Response:
    await delete_terminal(session, poiid)
    return _go(request, "/admin/terminals")


# ---- import ----------------------------------------------------------------------------
# The files wait between the preview and the import (app.inventory.previews), per user.


def _previews(request: Request) -> PreviewStore:
    state = request.app.state
    if not hasattr(state, "import_previews"):
        state.import_previews = PreviewStore()
    store: PreviewStore = state.import_previews
    return store


def _owner(request: Request) -> str:
    identity: Identity | None = getattr(request.state, "identity", None)
    return identity.username if identity else ""


@router.get("/import")
async def import_page(request: Request) -> Response:
    return render(request, "inventory/import.html", {})


@router.post("/import/preview")
async def import_preview(request: Request, session: SessionDep) -> Response:
    form = await request.form()
    uploads = [f for f in form.getlist("files") if isinstance(f, UploadFile) and f.filename]
    if not uploads:
        raise InvalidInput({"files": "Choose one or two CSV files first."})
    files = [(f.filename or "", await f.read()) for f in uploads]
    return await _run_import(request, session, files, dry_run=True)


@router.post("/import/commit")
async def import_commit(request: Request, session: SessionDep) -> Response:
    token = str((await request.form()).get("token", ""))
    previews = _previews(request)
    files = previews.load(_owner(request), token)
    if files is None:
        raise InvalidInput({"token": previews.expired_message()})
    answer = await _run_import(request, session, files, dry_run=False)
    if answer.status_code == 200:
        previews.discard(_owner(request), token)  # imported: one import per preview
    return answer


async def _run_import(
    request: Request, session: AsyncSession, files: list[tuple[str, bytes]], *, dry_run: bool
) -> Response:
    names = [name for name, _ in files]
    try:
        summary = await import_fleet(session, files, dry_run=dry_run)
    except ImportFailed as failed:
        context = {"errors": failed.errors, "names": names}
        return render(request, "inventory/import.html", context, block="result", status_code=422)
    context = {
        "summary": summary,
        "names": names,
        "dry_run": dry_run,
        "token": _previews(request).keep(_owner(request), files) if dry_run else None,
    }
    return render(request, "inventory/import.html", context, block="result")


# ---- network profiles ---------------------------------------------------------------------
# Destinations are edited as lines of text, "host port checks...": one per line, errors by line.

PROFILE_LINE_HELP = "one per line: host port checks, e.g. api.stripe.com 443 dns tcp tls"


@router.get("/network-profiles")
async def profiles_page(request: Request, session: SessionDep) -> Response:
    context = {"rows": await profiles_with_use(session), "checks": DESTINATION_CHECKS}
    return render(request, "inventory/profiles.html", context)


@router.get("/network-profiles/new")
async def new_profile_form(request: Request) -> Response:
    return _profile_form(request, {"destinations": "api.example.com 443 dns tcp tls"}, {})


@router.get("/network-profiles/{name}/edit")
async def edit_profile_form(request: Request, name: str, session: SessionDep) -> Response:
    profile = await get_profile(session, name)
    values = {
        "name": profile.name,
        "description": profile.description,
        "destinations": "\n".join(
            f"{d['host']} {d['port']} {' '.join(d['checks'])}" for d in profile.destinations
        ),
    }
    return _profile_form(request, values, {}, current=name)


@router.post("/network-profiles/new")
@router.post("/network-profiles/{name}/edit")
async def submit_profile(request: Request, session: SessionDep, name: str | None = None) -> Response:
    """Save a profile: its stores' monitors follow at once; on error the form again, each
    message by its field (a destination's names its line)."""
    values = {k: str(v) for k, v in (await request.form()).items()}
    destinations, lines, errors = _destination_lines(values.get("destinations", ""))
    try:
        data = NetworkProfileIn.model_validate({**values, "destinations": destinations})
    except ValidationError as exc:
        errors = profile_errors(exc, lambda i: f"line {lines[i]}") | errors
    else:
        if not errors:
            try:
                await save_profile(session, data, name)
            except AppError as exc:
                if exc.field is None:
                    raise
                errors = {exc.field: exc.message}
            else:
                return _go(request, "/admin/network-profiles")
    await session.rollback()
    return _profile_form(request, values, errors, current=name, status_code=422)


def _destination_lines(text: str) -> tuple[list[dict[str, Any]], list[int], dict[str, str]]:
    """The destinations the lines give, the line number of each, and the first line that
    is not "host port checks..." (as {"destinations": reason})."""
    destinations, lines = [], []
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if len(words) < 2 or not words[1].isdigit():
            reason = f"line {number}: expected host, port and checks ({PROFILE_LINE_HELP})"
            return [], [], {"destinations": reason}
        destinations.append({"host": words[0], "port": words[1], "checks": words[2:] or ["dns", "tcp"]})
        lines.append(number)
    return destinations, lines, {}


def _profile_form(
    request: Request, values: dict[str, Any], errors: dict[str, str], current: str | None = None, **kw: Any
) -> Response:
    context = {
        "values": values,
        "errors": errors,
        "current": current,
        "checks": DESTINATION_CHECKS,
        "line_help": PROFILE_LINE_HELP,
    }
    block = "form" if errors else None
    return render(request, "inventory/profile_form.html", context, block=block, **kw)


@router.post("/network-profiles/{name}/delete")
async def remove_profile(request: Request, name: str, session: SessionDep) -> Response:
    """Refused, where the button was, while stores use it."""
    await delete_profile(session, name)
    return _go(request, "/admin/network-profiles")
