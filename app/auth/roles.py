"""Roles, ranked: each may do what the ones below it may, and more.

* viewer: reads every page and the read API.
* support: + Check connection, acknowledge incidents.
* manager: + history and incident exports.
* admin: + inventory, import, providers, users, store agents, notification channels,
  maintenance windows and trading hours, the audit log.

`operator`, the name support had before, is read as support (migration 0005 renamed the
stored ones; `create-user --role operator` still works).
"""

from __future__ import annotations

ROLES = ("viewer", "support", "manager", "admin")
RANK = {role: rank for rank, role in enumerate(ROLES)}
ALIASES = {"operator": "support"}

WHAT_EACH_MAY_DO = {
    "viewer": "read every page and the read API",
    "support": "+ Check connection, acknowledge incidents",
    "manager": "+ history and incident exports",
    "admin": "+ inventory, import, providers, users, agents, channels, maintenance windows, audit log",
}


def normalize(role: str) -> str:
    """The role a stored or typed name means ('operator' -> 'support'); ValueError if none."""
    role = ALIASES.get(role.strip().lower(), role.strip().lower())
    if role not in RANK:
        raise ValueError(f"unknown role {role!r}: one of {', '.join(ROLES)}")
    return role


def at_least(role: str, minimum: str) -> bool:
    """Whether `role` may do what `minimum` may (an unknown role may do nothing)."""
    return RANK.get(ALIASES.get(role, role), -1) >= RANK[minimum]


def lower_of(a: str, b: str) -> str:
    return a if RANK.get(ALIASES.get(a, a), -1) <= RANK.get(ALIASES.get(b, b), -1) else b
