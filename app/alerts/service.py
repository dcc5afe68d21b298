"""Channels and rules: create, change, delete (pages and API both call these)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.alerts.channels import check_url, decrypt_url, encrypt_url, url_hint
from app.alerts.models import MATCH_ALL, MATCH_KINDS, MATCH_REGION, MATCH_TAG, AlertChannel, AlertRule
from app.errors import InvalidInput, NameTaken, NotFound


def _name(value: object, field: str = "name") -> str:
    name = str(value or "").strip()
    if not name:
        raise InvalidInput({field: "enter a name"})
    if len(name) > 100:
        raise InvalidInput({field: "at most 100 characters"})
    return name


async def create_channel(session: AsyncSession, secret_key: str, name: object, url: object) -> AlertChannel:
    errors: dict[str, str] = {}
    clean_name = clean_url = ""
    try:
        clean_name = _name(name)
    except InvalidInput as exc:
        errors.update(exc.errors)
    try:
        clean_url = check_url(str(url or ""))
    except InvalidInput as exc:
        errors.update(exc.errors)
    if errors:
        raise InvalidInput(errors)
    if await session.scalar(select(AlertChannel.id).where(AlertChannel.name == clean_name)):
        raise NameTaken(f"a channel named {clean_name!r} exists already", field="name")
    channel = AlertChannel(
        name=clean_name,
        url_encrypted=encrypt_url(secret_key, clean_url),
        url_hint=url_hint(clean_url),
        enabled=True,
    )
    session.add(channel)
    try:
        await session.flush()
    except IntegrityError:
        raise NameTaken(f"a channel named {clean_name!r} exists already", field="name") from None
    return channel


async def get_channel(session: AsyncSession, channel_id: int) -> AlertChannel:
    channel = await session.get(AlertChannel, channel_id)
    if channel is None:
        raise NotFound("channel", channel_id)
    return channel


async def delete_channel(session: AsyncSession, channel_id: int) -> None:
    await session.delete(await get_channel(session, channel_id))


async def list_channels(session: AsyncSession) -> list[AlertChannel]:
    return list((await session.execute(select(AlertChannel).order_by(AlertChannel.name))).scalars())


def _seconds(value: object, field: str, *, optional: bool) -> int | None:
    text = str(value if value is not None else "").strip()
    if not text:
        if optional:
            return None
        return 0
    try:
        number = int(text)
    except ValueError:
        raise InvalidInput({field: "a whole number of seconds"}) from None
    if number < 0 or number > 30 * 86400:
        raise InvalidInput({field: "between 0 and 2,592,000 seconds (30 days)"})
    return number


@dataclass
class RuleIn:
    name: str
    match: str
    value: str
    channel_id: int
    min_duration_s: int
    remind_every_s: int | None
    escalate_channel_id: int | None
    escalate_after_s: int | None


async def parse_rule(session: AsyncSession, data: dict[str, Any]) -> RuleIn:
    """A rule from form or JSON fields, every problem named by its field."""
    errors: dict[str, str] = {}

    def take(field: str, fn: Any) -> Any:
        try:
            return fn()
        except InvalidInput as exc:
            errors.update(exc.errors)
            return None

    name = take("name", lambda: _name(data.get("name")))
    match = str(data.get("match") or MATCH_ALL)
    if match not in MATCH_KINDS:
        errors["match"] = f"one of {', '.join(MATCH_KINDS)}"
    value = str(data.get("value") or "").strip()
    if match in (MATCH_REGION, MATCH_TAG) and not value:
        errors["value"] = f"enter the {match} this rule matches"
    if len(value) > 100:
        errors["value"] = "at most 100 characters"
    channels = set((await session.execute(select(AlertChannel.id))).scalars())

    def channel(field: str, optional: bool) -> int | None:
        raw = str(data.get(field) or "").strip()
        if not raw:
            if optional:
                return None
            raise InvalidInput({field: "choose a channel"})
        if not raw.isdigit() or int(raw) not in channels:
            raise InvalidInput({field: "no such channel"})
        return int(raw)

    channel_id = take("channel_id", lambda: channel("channel_id", False))
    escalate_channel_id = take("escalate_channel_id", lambda: channel("escalate_channel_id", True))
    min_duration_s = take(
        "min_duration_s", lambda: _seconds(data.get("min_duration_s"), "min_duration_s", optional=False)
    )
    remind = take(
        "remind_every_s", lambda: _seconds(data.get("remind_every_s"), "remind_every_s", optional=True)
    )
    escalate_after = take(
        "escalate_after_s", lambda: _seconds(data.get("escalate_after_s"), "escalate_after_s", optional=True)
    )
    if remind == 0:
        errors["remind_every_s"] = "leave empty for no reminders, or at least 1 second"
    if escalate_channel_id is not None and escalate_after is None:
        errors["escalate_after_s"] = "say after how many seconds to escalate"
    if escalate_after is not None and escalate_channel_id is None:
        errors["escalate_channel_id"] = "choose the channel to escalate to"
    if errors:
        raise InvalidInput(errors)
    return RuleIn(
        name, match, value if match in (MATCH_REGION, MATCH_TAG) else "", channel_id, min_duration_s or 0,
        remind, escalate_channel_id, escalate_after,
    )  # fmt: skip


async def create_rule(session: AsyncSession, data: dict[str, Any]) -> AlertRule:
    rule_in = await parse_rule(session, data)
    if await session.scalar(select(AlertRule.id).where(AlertRule.name == rule_in.name)):
        raise NameTaken(f"a rule named {rule_in.name!r} exists already", field="name")
    rule = AlertRule(**rule_in.__dict__, enabled=True)
    session.add(rule)
    await session.flush()
    return rule


async def delete_rule(session: AsyncSession, rule_id: int) -> None:
    rule = await session.get(AlertRule, rule_id)
    if rule is None:
        raise NotFound("rule", rule_id)
    await session.delete(rule)


async def list_rules(session: AsyncSession) -> list[AlertRule]:
    return list((await session.execute(select(AlertRule).order_by(AlertRule.name))).scalars())


async def channel_count(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.count()).select_from(AlertChannel)) or 0)


async def rotate_channel_urls(session: AsyncSession, old_secret: str, new_secret: str) -> int:
    """Every channel's URL re-encrypted under the new secret key (termpulse rotate-secret), in
    the caller's transaction: one the old key cannot open raises KeyUnavailable."""
    channels = (await session.execute(select(AlertChannel))).scalars().all()
    for channel in channels:
        channel.url_encrypted = encrypt_url(new_secret, decrypt_url(old_secret, channel.url_encrypted))
    return len(channels)
