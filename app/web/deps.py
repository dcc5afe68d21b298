"""FastAPI dependencies shared by every domain's routes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One session per request, closed once the response is sent (a streamed export reads
    through it to the end)."""
    async with request.app.state.db.sessionmaker() as session:
        yield session


# The one way a route gets a database session.
SessionDep = Annotated[AsyncSession, Depends(get_session)]
