"""Admin pages for the inventory: list, create, edit, delete, and the CSV import with preview."""

from __future__ import annotations

import secrets
import tempfile
import time
from pathlib import Path

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import UploadFile

from app.auth.sessions import require_admin
from app.deps import get_session
from app.inventory import queries
from app.inventory.csvimport import ImportFailed, import_fleet
from app.inventory.models import INTEGRATIONS, LOCAL_APIS, PROVIDERS
from app.inventory.profiles import NETWORK_PROFILES
from app.inventory.schemas import StoreIn, TerminalIn, field_errors
from app.inventory.service import Conflict, NotFound, delete_store, delete_terminal, save_store, save_terminal
from app.web.templating import is_htmx, render

router = APIRouter(prefix="/admin", include_in_schema=False, dependencies=[Depends(require_admin)])
PER_PAGE = 50
CHOICES = {
    "integrations": INTEGRATIONS,
    "local_apis": LOCAL_APIS,
    "providers": PROVIDERS,
    "profiles": tuple(NETWORK_PROFILES),
}


def _go(request: Request, url: str) -> Response:
    """After a successful write: htmx follows HX-Redirect, a plain form a 303."""
    if is_htmx(request):
        return Response(status_code=204, headers={"HX-Redirect": url})
    return RedirectResponse(url, status_code=303)


# ---- stores -------------------------------------------------------------------------------


@router.get("/stores")
async def stores_page(
    request: Request,
    q: str = "",
    region: str = "",
    page: int = 1,
    session: AsyncSession = Depends(get_session),
):
    result = await queries.paginate(session, queries.store_query(q=q, region=region), max(page, 1), PER_PAGE)
    context = {"page": result, "q": q, "region": region, "regions": await queries.regions(session)}
    return render(request, "inventory/stores.html", context, block="results")


@router.get("/stores/new")
async def new_store_form(request: Request):
    return render(
        request, "inventory/store_form.html", {"values": {"timezone": "UTC"}, "errors": {}, **CHOICES}
    )


@router.get("/stores/{code}/edit")
async def edit_store_form(request: Request, code: str, session: AsyncSession = Depends(get_session)):
    store = await queries.store_by_code(session, code)
    if store is None:
        return render(request, "inventory/not_found.html", {"what": f"store {code}"}, status_code=404)
    values = {f: getattr(store, f) for f in StoreIn.model_fields}
    return render(
        request, "inventory/store_form.html", {"values": values, "errors": {}, "current": code, **CHOICES}
    )


@router.post("/stores/new")
@router.post("/stores/{code}/edit")
async def submit_store(
    request: Request, code: str | None = None, session: AsyncSession = Depends(get_session)
):
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
    request: Request, session: AsyncSession, model, save, *, current, template, done, defaults=None
):
    """Validate a create/edit form and save it; on error, the form again with each message by its field."""
    values = {**(defaults or {}), **dict(await request.form())}
    try:
        saved = await save(session, model.model_validate(values), current)
    except ValidationError as exc:
        errors = field_errors(exc, values, model)
    except Conflict as exc:
        errors = {exc.field: str(exc)}
    except NotFound as exc:
        return render(request, "inventory/not_found.html", {"what": str(exc)}, status_code=404)
    else:
        return _go(request, done(saved))
    context = {"values": values, "errors": errors, "current": current, **CHOICES}
    return render(request, template, context, block="form", status_code=422)


@router.post("/stores/{code}/delete")
async def remove_store(request: Request, code: str, session: AsyncSession = Depends(get_session)):
    return await _delete(request, delete_store(session, code), "/admin/stores")


async def _delete(request: Request, deleting, done: str):
    """Run a delete; a refusal (still has terminals, already gone) is shown where the button was."""
    try:
        await deleting
    except (Conflict, NotFound) as exc:
        return render(
            request,
            "inventory/message.html",
            {"level": "error", "message": str(exc)},
            block="message",
            status_code=409,
        )
    return _go(request, done)


# ---- terminals ----------------------------------------------------------------------------


@router.get("/terminals")
async def terminals_page(
    request: Request,
    q: str = "",
    store: str = "",
    page: int = 1,
    session: AsyncSession = Depends(get_session),
):
    query = queries.terminal_query(q=q, store=store)
    result = await queries.paginate(session, query, max(page, 1), PER_PAGE)
    return render(
        request, "inventory/terminals.html", {"page": result, "q": q, "store": store}, block="results"
    )


@router.get("/terminals/new")
async def new_terminal_form(request: Request, store: str = ""):
    values = {"store_code": store, "integration": "cloud", "provider": "adyen"}
    return render(request, "inventory/terminal_form.html", {"values": values, "errors": {}, **CHOICES})


@router.get("/terminals/{poiid}/edit")
async def edit_terminal_form(request: Request, poiid: str, session: AsyncSession = Depends(get_session)):
    found = await queries.terminal_with_store_code(session, poiid)
    if found is None:
        return render(request, "inventory/not_found.html", {"what": f"terminal {poiid}"}, status_code=404)
    terminal, store_code = found
    values = {f: getattr(terminal, f) for f in TerminalIn.model_fields if f != "store_code"}
    values["store_code"] = store_code
    context = {"values": values, "errors": {}, "current": terminal.poiid, **CHOICES}
    return render(request, "inventory/terminal_form.html", context)


@router.post("/terminals/new")
@router.post("/terminals/{poiid}/edit")
async def submit_terminal(
    request: Request, poiid: str | None = None, session: AsyncSession = Depends(get_session)
):
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


@router.post("/terminals/{poiid}/delete")
async def remove_terminal(request: Request, poiid: str, session: AsyncSession = Depends(get_session)):
    return await _delete(request, delete_terminal(session, poiid), "/admin/terminals")


# ---- import -------------------------------------------------------------------------------
# Uploaded files wait in a private temporary folder between the preview and the import, so
# what is imported is exactly what was previewed.

UPLOADS = Path(tempfile.gettempdir()) / "termpulse-uploads"
UPLOAD_TTL_S = 3600


def _stash(files: list[tuple[str, bytes]]) -> str:
    UPLOADS.mkdir(mode=0o700, exist_ok=True)
    for old in UPLOADS.iterdir():
        if old.stat().st_mtime < time.time() - UPLOAD_TTL_S:
            for f in old.iterdir():
                f.unlink()
            old.rmdir()
    token = secrets.token_urlsafe(16)
    folder = UPLOADS / token
    folder.mkdir(mode=0o700)
    for index, (name, data) in enumerate(files):
        (folder / f"{index}-{Path(name).name}").write_bytes(data)
    return token


def _unstash(token: str) -> list[tuple[str, bytes]] | None:
    if not token.replace("-", "").replace("_", "").isalnum():
        return None
    folder = UPLOADS / token
    if not folder.is_dir():
        return None
    return [(p.name.split("-", 1)[1], p.read_bytes()) for p in sorted(folder.iterdir())]


@router.get("/import")
async def import_page(request: Request):
    return render(request, "inventory/import.html", {})


@router.post("/import/preview")
async def import_preview(request: Request, session: AsyncSession = Depends(get_session)):
    form = await request.form()
    uploads = [f for f in form.getlist("files") if isinstance(f, UploadFile) and f.filename]
    if not uploads:
        return render(
            request,
            "inventory/import.html",
            {"problem": "Choose one or two CSV files first."},
            block="result",
            status_code=422,
        )
    files = [(f.filename, await f.read()) for f in uploads]
    return await _run_import(request, session, files, dry_run=True)


@router.post("/import/commit")
async def import_commit(request: Request, session: AsyncSession = Depends(get_session)):
    token = str((await request.form()).get("token", ""))
    files = _unstash(token)
    if files is None:
        return render(
            request,
            "inventory/import.html",
            {"problem": "This preview has expired: choose the files again."},
            block="result",
            status_code=422,
        )
    return await _run_import(request, session, files, dry_run=False)


async def _run_import(request: Request, session: AsyncSession, files, *, dry_run: bool):
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
        "token": _stash(files) if dry_run else None,
    }
    return render(request, "inventory/import.html", context, block="result")
