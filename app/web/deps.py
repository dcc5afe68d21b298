"""FastAPI dependencies shared by every domain's routes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Path, Request
from sqlalchemy.ext.asyncio import AsyncSession


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One session per request, closed once the response is sent (a streamed export reads
    through it to the end)."""
    async with request.app.state.db.sessionmaker() as session:
        yield session


# The one way a route gets a database session.
SessionDep = Annotated[AsyncSession, Depends(get_session)]

# A row's id in a path: positive and within its column's range (INTEGER; incidents are
# BIGINT), so an id no row can have is a 422 naming the bound, never a query the database
# (or its driver) refuses.
RowId = Annotated[int, Path(ge=1, le=2**31 - 1)]
BigRowId = Annotated[int, Path(ge=1, le=2**63 - 1)]
