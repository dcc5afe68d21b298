"""JSON API: check one terminal now, as the Check connection button does; a whole store, as
Check store does."""

from __future__ import annotations

from fastapi import APIRouter, Request

from app.monitoring.manual import StoreCheckReport, TerminalCheckReport, check_store_now, check_terminal_now

router = APIRouter(tags=["checks"])


@router.post("/terminals/{poiid}/check", summary="Check a terminal now", response_model=TerminalCheckReport)
async def check_terminal(poiid: str, request: Request) -> TerminalCheckReport:
    """Runs every check of the terminal and of its store's network now (and asks its provider),
    stores the results, and answers the verdict (connected, disconnected, could_not_check),
    each check's steps with their timings, and the diagnosis with its cause and fix. An
    unknown POIID is a 404."""
    state = request.app.state
    return await check_terminal_now(state.db, state.settings, poiid, broker=state.agent_broker)


@router.post("/stores/{code}/check", summary="Check a whole store now", response_model=StoreCheckReport)
async def check_store(code: str, request: Request) -> StoreCheckReport:
    """Runs every network and terminal check of the store now, at once (bounded), stores the
    results as manual checks, and answers one report: the store's network (verdict, checks,
    diagnosis) first, then each terminal's verdict, diagnosis and its own checks (a terminal's
    verdict counts its store's network, as a terminal check does). An unknown store is a 404."""
    state = request.app.state
    return await check_store_now(state.db, state.settings, code, broker=state.agent_broker)
