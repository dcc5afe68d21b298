"""One Jinja2 environment with every template helper registered here, once; a normal request gets
the page, an htmx request the named block."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, Response
from jinja2 import Environment, pass_context
from jinja2.runtime import Context
from jinja2_fragments.fastapi import Jinja2Blocks
from markupsafe import Markup

from app.config import get_settings
from app.vocabulary import (
    STATES_WORST_FIRST,
    AgentState,
    CloudState,
    MonitorKind,
    Outcome,
    State,
    StoreStatus,
)
from app.web import ui


def may(request: Request, role: str) -> bool:
    """Whether the caller's role reaches `role` (app.auth.roles), for showing only what it may
    do; no identity (no login middleware) shows nothing role-bound."""
    identity = getattr(request.state, "identity", None)
    return bool(identity is not None and identity.can(role))


@pass_context
def csrf_token(context: Context) -> str:
    """This session's CSRF token ('' without a session: the form is not checked)."""
    request = context.get("request")
    return getattr(request.state, "csrf_token", "") if request is not None else ""


@pass_context
def csrf_field(context: Context) -> Markup:
    """The hidden input every POST form carries (app.web.security: CSRF tokens)."""
    token = csrf_token(context)
    return Markup('<input type="hidden" name="csrf_token" value="{}">').format(token) if token else Markup("")


def _register(env: Environment) -> None:
    env.filters.update(
        ago=ui.ago,
        duration=ui.duration,
        pct=ui.pct,
        diagnosis_title=ui.diagnosis_title,
    )
    env.globals.update(
        ui=ui,  # dashboard/_ui.html exports its helpers under their names
        State=State,
        StoreStatus=StoreStatus,
        CloudState=CloudState,
        AgentState=AgentState,
        Outcome=Outcome,
        MonitorKind=MonitorKind,
        STATES_WORST_FIRST=STATES_WORST_FIRST,
        timedelta=timedelta,
        may=may,
        csrf_token=csrf_token,
        csrf_field=csrf_field,
    )


templates = Jinja2Blocks(directory=str(get_settings().templates_dir))
_register(templates.env)


def is_htmx(request: Request) -> bool:
    return request.headers.get("HX-Request") == "true"


def render(
    request: Request, name: str, context: dict[str, Any], *, block: str | None = None, status_code: int = 200
) -> Response:
    """Render `name` whole, or only `block` for an htmx request (same template, one source)."""
    block_name = block if (block and is_htmx(request)) else None
    response = templates.TemplateResponse(
        request, name, context, block_name=block_name, status_code=status_code
    )
    response.headers["Vary"] = "HX-Request"
    return response


def render_block(request: Request, name: str, block: str, context: dict[str, Any]) -> Markup:
    """One block of `name` rendered alone: what an htmx request for it gets."""
    template = templates.env.get_template(name)
    return Markup("".join(template.blocks[block](template.new_context({**context, "request": request}))))


def render_around(
    request: Request, name: str, context: dict[str, Any], *, block: str, html: Markup
) -> Response:
    """`render` with `block` already rendered (`html`): the page whole around it, or `html` alone
    for an htmx request. `context` needs only what the page shows outside the block."""
    if is_htmx(request):
        response: Response = HTMLResponse(html)
    else:
        template = templates.env.get_template(name)
        page = template.new_context({**context, "request": request})
        page.blocks[block] = [lambda _context: iter((html,))]
        response = HTMLResponse("".join(template.root_render_func(page)))
    response.headers["Vary"] = "HX-Request"
    return response
