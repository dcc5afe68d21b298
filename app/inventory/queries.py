"""Reading stores and terminals one page at a time (API and admin pages share these)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Select, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.inventory.models import Store, Terminal
from app.poiid import normalise_poiid


@dataclass
class Page:
    items: list
    total: int
    page: int
    per_page: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))


MAX_PAGE = 1_000_000


async def paginate(session: AsyncSession, query: Select, page: int, per_page: int) -> Page:
    page = max(1, min(page, MAX_PAGE))  # past the end is an empty page, never an offset overflow
    total = await session.scalar(select(func.count()).select_from(query.order_by(None).subquery()))
    rows = await session.execute(query.limit(per_page).offset((page - 1) * per_page))
    return Page(
        list(rows.scalars() if len(query.column_descriptions) == 1 else rows), total or 0, page, per_page
    )


def _like(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def store_query(*, q: str | None = None, region: str | None = None) -> Select:
    query = select(Store).order_by(Store.code)
    if region:
        query = query.where(Store.region == region)
    if q:
        query = query.where(
            or_(Store.code.ilike(_like(q), escape="\\"), Store.name.ilike(_like(q), escape="\\"))
        )
    return query


def terminal_query(
    *, q: str | None = None, store: str | None = None, provider: str | None = None, status: str | None = None
) -> Select:
    query = select(Terminal, Store.code).join(Store, Terminal.store_id == Store.id).order_by(Terminal.poiid)
    if store:
        query = query.where(Store.code == store)
    if provider:
        query = query.where(Terminal.provider == provider)
    if status:
        query = query.where(Terminal.status == status)
    if q:
        pattern = _like(q)
        query = query.where(
            or_(
                *(
                    c.ilike(pattern, escape="\\")
                    for c in (Terminal.poiid, Terminal.serial, Terminal.label, Store.code)
                )
            )
        )
    return query


async def store_by_code(session: AsyncSession, code: str) -> Store | None:
    return await session.scalar(select(Store).where(Store.code == code))


async def terminal_with_store_code(session: AsyncSession, poiid: str) -> tuple[Terminal, str] | None:
    row = (await session.execute(terminal_query().where(Terminal.poiid == normalise_poiid(poiid)))).first()
    return (row[0], row[1]) if row else None


async def regions(session: AsyncSession) -> list[str]:
    return list(
        await session.scalars(
            select(Store.region).distinct().where(Store.region != "").order_by(Store.region)
        )
    )
