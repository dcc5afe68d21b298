"""Roles that mean something: one rule table (app.auth.rules) for every page, fragment and API
route, enforced before any handler. The route table is walked: a route without a rule fails,
and every route is called as every role (refused with 403 exactly when the role is below the
rule's; an HTML page for pages, JSON under /api). Both databases."""

import re
from types import SimpleNamespace

from fastapi.routing import _IncludedRouter
from starlette.routing import Mount

from app.auth.roles import ROLES, at_least, normalize
from app.auth.rules import PUBLIC, RULES, rule_for
from tests.test_auth import add_user
from tests.test_sessions import COOKIE, login

# Ending the caller's own sessions: tested in tests/test_sessions.py, not swept here.
NOT_SWEPT = {("POST", "/logout"), ("POST", "/account/logout-everywhere")}


def routes(app):
    """(method, path template) of every route the app serves, mounts as their prefix."""
    found = []
    for route in app.routes:
        if isinstance(route, _IncludedRouter):
            contexts = [(c.methods, c.path) for c in route.effective_route_contexts()]
        elif isinstance(route, Mount):
            contexts = [({"GET"}, route.path + "/any/file.css")]
        else:
            contexts = [(route.methods, route.path)]
        for methods, path in contexts:
            found += [(m, path) for m in sorted(methods or ()) if m != "HEAD"]
    return found


def sample(path):
    return re.sub(r"\{[^}]+\}", "x", path)


def test_every_route_has_a_rule(client):
    from app.simulator.inbox import router as demo_inbox  # mounted by `termpulse demo` only

    app = client._transport.app
    every = routes(app) + routes(SimpleNamespace(routes=demo_inbox.routes))
    assert len(every) > 100  # the walk sees the included routers' routes
    missing = [(m, p) for m, p in every if rule_for(m, sample(p)) is None]
    assert not missing, f"routes without a rule in app.auth.rules.RULES: {missing}"
    # No rule is dead weight: each names at least one route.
    used = {rule_for(m, sample(p)) for m, p in every}
    assert not [r for r in RULES if r not in used], "rules that name no route"


def test_operator_is_support():
    assert normalize("operator") == "support" and at_least("operator", "support")
    assert not at_least("operator", "manager") and not at_least("nobody", "viewer")


async def test_every_route_as_every_role(db, client):
    app = client._transport.app
    for role in ROLES:
        await add_user(db, f"u-{role}", role)
    app.state.user_count_cache = [0.0, 0]
    cookies = {role: await login(client, f"u-{role}") for role in ROLES}
    client.cookies.clear()
    problems = []
    for method, path in routes(app):
        # The store agents' protocol checks its own tokens (and limits bad ones per address for
        # the whole process: calling it here would lock the agent tests out).
        if (method, path) in NOT_SWEPT or path.startswith("/api/agent/"):
            continue
        rule, url = rule_for(method, sample(path)), sample(path)
        anonymous = await client.request(method, url)
        if rule.role != PUBLIC and anonymous.status_code not in (303, 401):
            problems.append((method, path, "anonymous", anonymous.status_code))
        for role in ROLES:
            answer = await client.request(method, url, headers={"Cookie": f"{COOKIE}={cookies[role]}"})
            allowed = rule.role == PUBLIC or at_least(role, rule.role)
            if allowed == (answer.status_code == 403):
                problems.append((method, path, role, answer.status_code))
            if answer.status_code == 403:
                kind = answer.headers["content-type"]
                api = url.startswith("/api/")
                if kind.startswith("application/json") != api or kind.startswith("text/html") == api:
                    problems.append((method, path, role, kind))
    assert not problems
