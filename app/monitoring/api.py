"""JSON API: check one terminal now, as the Check connection button does."""

from __future__ import annotations

from fastapi import APIRouter, Request

from app.monitoring.manual import TerminalCheckReport, check_terminal_now

router = APIRouter(tags=["checks"])


@router.post("/terminals/{poiid}/check", summary="Check a terminal now", response_model=TerminalCheckReport)
async def check_terminal(poiid: str, request: Request) -> TerminalCheckReport:
    """Runs every check of the terminal and of its store's network now (and asks its provider),
    stores the results, and answers the verdict (connected, disconnected, could_not_check),
    each check's steps with their timings, and the diagnosis with its cause and fix. An
    unknown POIID is a 404."""
    state = request.app.state
    return await check_terminal_now(state.db, state.settings, poiid, broker=state.agent_broker)
