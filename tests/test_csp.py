"""Content-Security-Policy without inline script: every page and fragment the app serves (its
route table walked, as tests/test_roles.py does, as an admin over the sample fleet) carries the
policy and no inline script, on* handler, hx-on, eval-needing trigger filter, <style> or style
attribute. Both databases. What a browser makes of it: tests/browser/test_csp.py."""

import json
import re

from sqlalchemy import select

from app.inventory.models import Store, Terminal
from app.web.security import CONTENT_SECURITY_POLICY, DOCS_CONTENT_SECURITY_POLICY, DOCS_PATH
from tests.dashboard.fleet import import_sample
from tests.html import dom
from tests.test_auth import add_user
from tests.test_roles import routes
from tests.test_sessions import COOKIE, login


def directives(policy: str) -> dict[str, str]:
    return dict((part.strip() + " ").split(" ", 1) for part in policy.split(";"))


def test_the_policy_allows_only_this_servers_scripts_and_styles():
    main = directives(CONTENT_SECURITY_POLICY)
    assert main["script-src"].strip() == "'self'" and main["style-src"].strip() == "'self'"
    assert main["default-src"].strip() == "'self'" and main["frame-ancestors"].strip() == "'none'"
    docs = directives(DOCS_CONTENT_SECURITY_POLICY)  # Swagger UI's page: data: images only
    assert docs == main | {"img-src": "'self' data: "}


def inline_code(body: str) -> list[str]:
    """What a strict policy would block in this HTML: inline scripts, handlers, eval, styles."""
    found = []
    doc = dom(body)
    if doc is None:
        return found
    configs = doc.cssselect('meta[name="htmx-config"]')  # htmx reads the first
    if (
        configs
        and not {"allowEval": False, "includeIndicatorStyles": False}.items()
        <= json.loads(configs[0].get("content")).items()
    ):
        found.append(f"htmx-config with eval or indicator styles: {configs[0].get('content')}")
    if doc.cssselect('script[src*="/htmx-"]') and not configs:
        found.append("htmx without an htmx-config")
    for el in doc.iter():
        if not isinstance(el.tag, str):
            continue
        if el.tag == "script" and (not el.get("src") or (el.text or "").strip()):
            found.append(f"<script> without src: {(el.text or '')[:60]!r}")
        if el.tag == "style":
            found.append("<style> element")
        for name, value in el.attrib.items():
            if name.startswith("on") or name.startswith("hx-on") or name.startswith("data-hx-on"):
                found.append(f"<{el.tag} {name}>")
            elif name == "style":
                found.append(f'<{el.tag} style="{value}">')
            elif name == "hx-trigger" and "[" in value:
                found.append(f'<{el.tag} hx-trigger="{value}"> (a filter is eval)')
            elif name in ("hx-vals", "hx-vars") and value.lstrip().startswith(("js:", "javascript:")):
                found.append(f"<{el.tag} {name}> (eval)")
            elif name in ("href", "src", "action") and value.strip().lower().startswith("javascript:"):
                found.append(f"<{el.tag} {name}=javascript:>")
    return found


async def sample_values(db) -> dict[str, str]:
    async with db.sessionmaker() as session:
        store = await session.scalar(select(Store).order_by(Store.code).limit(1))
        terminal = await session.scalar(select(Terminal).order_by(Terminal.poiid).limit(1))
    return {"code": store.code, "store_code": store.code, "poiid": terminal.poiid}


async def test_no_page_carries_inline_script_or_style(db, client):
    await import_sample(db)
    await add_user(db, "admin", "admin")
    cookie = await login(client, "admin")
    client.cookies.clear()
    values = await sample_values(db)
    app = client._transport.app
    problems, pages = [], 0
    for method, path in routes(app):
        if method != "GET":
            continue
        url = re.sub(r"\{([^}:]+)(:[^}]*)?\}", lambda m: values.get(m.group(1), "1"), path)
        for htmx in (False, True):
            headers = {"Cookie": f"{COOKIE}={cookie}"} | ({"HX-Request": "true"} if htmx else {})
            answer = await client.get(url, headers=headers)
            expected = DOCS_CONTENT_SECURITY_POLICY if url == DOCS_PATH else CONTENT_SECURITY_POLICY
            if answer.headers.get("content-security-policy") != expected:
                problems.append((url, "policy", answer.headers.get("content-security-policy")))
            if answer.headers.get("content-type", "").startswith("text/html"):
                pages += 1
                problems += [(url, htmx, what) for what in inline_code(answer.text)]
    assert pages > 60  # the walk reaches the pages, not only refusals
    assert not problems


def test_the_checker_sees_what_it_looks_for():
    page = (
        '<!doctype html><html><head><title>t</title><style>a{}</style></head><body onload="x()">'
        '<script>alert(1)</script><a hx-on:click="x()" style="color:red" href="javascript:x()">a</a>'
        '<div hx-trigger="every 2s [!document.hidden]"></div><script src="/a.js"></script></body></html>'
    )
    assert len(inline_code(page)) == 7
