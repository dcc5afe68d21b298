"""Network profiles as records: listing, writing (which re-derives the monitors of the stores
that use the profile at once) and deleting (refused while stores use it)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import Conflict, InvalidInput, NameTaken, NotFound
from app.inventory.models import CheckSettings, NetworkProfile, Store
from app.inventory.monitors import sync_monitors
from app.inventory.schemas import NetworkProfileIn


@dataclass
class ProfileSaved:
    profile: NetworkProfile
    stores: int  # stores using it
    monitors: dict[str, int]  # created, updated, deleted


async def profile_names(session: AsyncSession) -> list[str]:
    return list(await session.scalars(select(NetworkProfile.name).order_by(NetworkProfile.name)))


async def profiles_with_use(session: AsyncSession) -> list[tuple[NetworkProfile, int]]:
    """Every profile with the number of stores that use it, by name."""
    query = select(Store.network_profile, func.count()).group_by(Store.network_profile)
    used = dict((await session.execute(query)).all())
    profiles = await session.scalars(select(NetworkProfile).order_by(NetworkProfile.name))
    return [(p, used.get(p.name, 0)) for p in profiles]


async def get_profile(session: AsyncSession, name: str) -> NetworkProfile:
    profile = await session.scalar(select(NetworkProfile).where(NetworkProfile.name == name))
    if profile is None:
        raise NotFound("network profile", name)
    return profile


async def stores_using(session: AsyncSession, name: str) -> int:
    return await session.scalar(select(func.count()).where(Store.network_profile == name)) or 0


async def save_profile(
    session: AsyncSession, data: NetworkProfileIn, current: str | None = None
) -> ProfileSaved:
    """Create (current None) or edit a profile, renaming it if asked (its stores and check
    settings follow the name). Its stores' network monitors are re-derived at once: existing
    keys, and so history, stay; a removed destination's monitors go. Commits."""
    taken = await session.scalar(select(NetworkProfile.id).where(NetworkProfile.name == data.name))
    if current is None:
        if taken:
            raise NameTaken(f"network profile {data.name} already exists", field="name")
        profile = NetworkProfile(name=data.name)
        session.add(profile)
    else:
        profile = await get_profile(session, current)
        if data.name != current:
            if taken:
                raise NameTaken(f"network profile {data.name} already exists", field="name")
            await _rename(session, current, data.name)
            profile.name = data.name
    destinations = [d.model_dump() for d in data.destinations]
    same_checks = current is not None and profile.destinations == destinations
    profile.description, profile.destinations = data.description, destinations
    await session.flush()
    query = select(Store.id, Store.network_profile).where(Store.network_profile == data.name)
    stores = (await session.execute(query)).all()
    # Re-derived only when what is checked changed (seconds for thousands of stores).
    counts = {"created": 0, "updated": 0, "deleted": 0}
    if not same_checks:
        counts = await sync_monitors(session, stores=stores)  # new monitors take the stores' values
    await session.commit()
    await session.refresh(profile)
    return ProfileSaved(profile, len(stores), counts)


async def _rename(session: AsyncSession, old: str, new: str) -> None:
    await session.execute(update(Store).where(Store.network_profile == old).values(network_profile=new))
    await session.execute(
        update(CheckSettings)
        .where(CheckSettings.scope == "profile", CheckSettings.name == old)
        .values(name=new)
    )


async def delete_profile(session: AsyncSession, name: str) -> None:
    """Refused while stores use it: their network checks would silently stop."""
    profile = await get_profile(session, name)
    used = await stores_using(session, name)
    if used:
        codes = list(await session.scalars(select(Store.code).where(Store.network_profile == name).limit(5)))
        more = ", ..." if used > len(codes) else ""
        raise Conflict(
            f"network profile {name} is used by {used} store(s) ({', '.join(codes)}{more}): "
            "give them another profile first",
            field="name",
        )
    await session.delete(profile)
    settings = await session.get(CheckSettings, ("profile", name))
    if settings is not None:
        await session.delete(settings)
    await session.commit()


async def check_profile_names(session: AsyncSession, names: set[str | None]) -> None:
    """Refuse store input naming a profile that does not exist."""
    known = set(await profile_names(session))
    unknown = sorted(n for n in names if n is not None and n not in known)
    if unknown:
        raise InvalidInput(
            {"network_profile": f"no network profile {unknown[0]!r} (one of: {', '.join(sorted(known))})"}
        )
