"""One Jinja2 environment; a normal request gets the page, an htmx request the named block."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import Request
from jinja2_fragments.fastapi import Jinja2Blocks

from app.config import get_settings

templates = Jinja2Blocks(directory=str(get_settings().templates_dir))


def _ago(value: datetime | None) -> str:
    if value is None:
        return "never"
    seconds = int((datetime.now(UTC) - value).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{max(seconds, 0)} s ago"


templates.env.filters["ago"] = _ago


def is_htmx(request: Request) -> bool:
    return request.headers.get("HX-Request") == "true"


def render(request: Request, name: str, context: dict, *, block: str | None = None, status_code: int = 200):
    """Render `name` whole, or only `block` for an htmx request (same template, one source)."""
    block_name = block if (block and is_htmx(request)) else None
    response = templates.TemplateResponse(
        request, name, context, block_name=block_name, status_code=status_code
    )
    response.headers["Vary"] = "HX-Request"
    return response
