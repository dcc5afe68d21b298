"""The one rule table: which role each page, fragment and API route needs, by method and path.

Checked for every request by the login middleware (app.auth.routes.RequireLogin) before any
handler runs; a role below the rule's gets a 403 (an HTML page for pages, JSON under /api).
tests/test_roles.py walks the app's route table: a route that no rule names fails it, so a
new route cannot ship without saying who may use it. The first matching rule wins.

Patterns: path segments, `*` within a segment matches any characters but `/`, and a final
`/**` matches the path itself and anything below it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from starlette.routing import Match

from app.auth.roles import RANK

PUBLIC = "public"  # no login (health, login, static files, the store agents' own tokens)
READ = frozenset({"GET", "HEAD"})
WRITE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
POST = frozenset({"POST"})
ANY = READ | WRITE


@dataclass(frozen=True)
class Rule:
    methods: frozenset[str]
    pattern: str
    role: str  # a role of app.auth.roles, or PUBLIC


def _rules(*rows: tuple[frozenset[str], str, str]) -> tuple[Rule, ...]:
    return tuple(Rule(*row) for row in rows)


RULES = _rules(
    # Without a login (the middleware lets these through before looking anything up).
    (ANY, "/login", PUBLIC),
    (READ, "/login/sso/**", PUBLIC),  # SSO: to the identity provider and back (app.auth.sso)
    (ANY, "/setup", PUBLIC),  # the first user, with the one-time token from the server log
    (READ, "/healthz", PUBLIC),
    (READ, "/readyz", PUBLIC),
    (READ, "/metrics", PUBLIC),
    (POST, "/demo/inbox", PUBLIC),  # the demo's webhook channel (termpulse demo only)
    (READ, "/static/**", PUBLIC),
    (ANY, "/api/agent/**", PUBLIC),  # each store agent's own token (app.agents)
    # Every user: their own account, logging out, the API's description.
    (POST, "/logout", "viewer"),
    (READ, "/account", "viewer"),
    (POST, "/account/**", "viewer"),
    (READ, "/openapi.json", "viewer"),
    (READ, "/docs", "viewer"),
    # support: Check connection, Check store, acknowledge incidents.
    (POST, "/terminals/*/check", "support"),
    (POST, "/api/v1/terminals/*/check", "support"),
    (POST, "/stores/*/check", "support"),  # Check store
    (POST, "/api/v1/stores/*/check", "support"),
    (POST, "/incidents/*/ack", "support"),
    (POST, "/api/v1/incidents/*/ack", "support"),
    # manager: exports.
    (READ, "/history/export.*", "manager"),
    (READ, "/incidents/export.*", "manager"),
    # admin: inventory, import, providers, users, agents, channels, windows, audit log.
    (ANY, "/admin/**", "admin"),
    (READ, "/status", "admin"),  # the checkers themselves (app.ops)
    (POST, "/maintenance/**", "admin"),
    (POST, "/stores/*/trading-hours", "admin"),
    (WRITE, "/api/v1/stores/**", "admin"),
    (WRITE, "/api/v1/terminals/**", "admin"),
    (ANY, "/api/v1/providers/**", "admin"),
    (ANY, "/api/v1/agents/**", "admin"),
    (WRITE, "/api/v1/maintenance-windows/**", "admin"),
    (WRITE, "/api/v1/check-settings/**", "admin"),
    (WRITE, "/api/v1/network-profiles/**", "admin"),
    # viewer: every page, fragment and read of the API not named above.
    (READ, "/", "viewer"),
    (READ, "/demo/notifications", "viewer"),  # the demo's "Notifications sent" page
    (READ, "/live/**", "viewer"),
    (READ, "/stores/**", "viewer"),
    (READ, "/terminals/**", "viewer"),
    (READ, "/history", "viewer"),
    (READ, "/maintenance", "viewer"),
    (READ, "/incidents/**", "viewer"),
    (READ, "/api/v1/stores/**", "viewer"),
    (READ, "/api/v1/terminals/**", "viewer"),
    (READ, "/api/v1/check-settings", "viewer"),
    (READ, "/api/v1/network-profiles/**", "viewer"),  # what each profile checks
    (READ, "/api/v1/uptime", "viewer"),  # what the History page shows, as JSON
    (READ, "/api/v1/maintenance-windows/**", "viewer"),
    (READ, "/api/v1/incidents/**", "viewer"),
)

_CHECKED_ROLES = set(RANK) | {PUBLIC}
assert all(rule.role in _CHECKED_ROLES for rule in RULES)


def _compile(pattern: str) -> re.Pattern[str]:
    below = pattern.endswith("/**")
    base = pattern[:-3] if below else pattern
    body = "/".join(
        "[^/]+" if part == "*" else "[^/]*".join(map(re.escape, part.split("*"))) for part in base.split("/")
    )
    return re.compile(f"{body}(?:/.*)?" if below else body or "/")


_COMPILED = [(rule, _compile(rule.pattern)) for rule in RULES]


def rule_for(method: str, path: str) -> Rule | None:
    """The first rule naming this method and path (HEAD as GET), None if none does."""
    for rule, regex in _COMPILED:
        if method in rule.methods and regex.fullmatch(path):
            return rule
    return None


def _routed(app: Any, method: str, path: str) -> bool:
    """Whether a route of `app` takes this method and path (else the answer is a 404/405)."""
    if app is None:
        return True
    scope = {"type": "http", "method": method, "path": path, "root_path": "", "headers": []}
    return any(route.matches(scope)[0] is Match.FULL for route in app.router.routes)


def needed_role(method: str, path: str, app: Any = None) -> str | None:
    """The role this request needs, None for no more than a login (or nothing at all).

    A route no rule names (which tests/test_roles.py keeps from shipping) needs an admin;
    a path no route takes needs nothing more, so that it can answer 404 or 405."""
    rule = rule_for(method, path)
    if rule is None:
        return "admin" if _routed(app, method, path) else None
    return None if rule.role in (PUBLIC, "viewer") else rule.role


def refusal_detail(identity: Any, needed: str) -> str:
    if needed == "admin":
        return f"{identity.username} is not an admin"
    return f"{identity.username} is a {identity.role}: this needs {needed} or higher"
