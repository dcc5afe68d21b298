"""The demo's notification receiver: a JSON webhook (what Apprise's json:// posts) that keeps
what it is sent in memory, and the "Notifications sent" page listing it, so a newcomer sees
the alerts of the demo story arrive without configuring a channel. Demo only: `termpulse
demo` mounts the router and puts a DemoInbox in app.state.demo_inbox."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from app.db import utcnow
from app.web.templating import render

INBOX_PATH = "/demo/inbox"
router = APIRouter(include_in_schema=False)


@dataclass(frozen=True)
class Received:
    at: datetime
    type: str  # Apprise's notify type: info, success, warning, failure
    title: str
    message: str


class DemoInbox:
    def __init__(self, keep: int = 500) -> None:
        self.items: deque[Received] = deque(maxlen=keep)

    def add(self, body: dict[str, Any]) -> None:
        self.items.appendleft(
            Received(
                at=utcnow(),
                type=str(body.get("type") or "info"),
                title=str(body.get("title") or "")[:500],
                message=str(body.get("message") or "")[:20_000],
            )
        )


def _inbox(request: Request) -> DemoInbox:
    inbox: DemoInbox = request.app.state.demo_inbox
    return inbox


@router.post(INBOX_PATH)
async def receive(request: Request) -> Response:
    try:
        body = await request.json()
    except ValueError:
        return Response("expected a JSON body", status_code=400)
    if not isinstance(body, dict):
        return Response("expected a JSON object", status_code=400)
    _inbox(request).add(body)
    return Response(status_code=204)


@router.get("/demo/notifications")
async def notifications_sent(request: Request) -> Response:
    return render(request, "demo/notifications.html", {"items": list(_inbox(request).items)}, block="inbox")
