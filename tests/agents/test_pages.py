"""The Agents admin page, and the store agent on the store page and the stores overview, over
HTTP (in process) on both databases: worst first, a token shown once, errors by their field,
rotate, revoke, change stores; the agent panel; store_offline and "agent offline" markers."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update

from app.dashboard import queries
from app.db import in_transaction, utcnow
from app.inventory.models import Agent, Monitor, Store
from app.monitoring.agents import mark_agents_offline
from app.vocabulary import AgentState, MonitorKind, State
from tests.agents.test_protocol import API, beat, enrol, fleet
from tests.html import dom, is_full, one, text, texts

PAGE = "/admin/agents"
HX = {"HX-Request": "true"}


@pytest.fixture(autouse=True)
def _fresh_caches(monkeypatch):
    monkeypatch.setattr(queries, "LIVE_CACHE_TTL_S", 0.0)  # the overview right after each change
    queries.clear_caches()
    yield
    queries.clear_caches()


def rows(page) -> list[tuple[str, str]]:
    """(agent name, state) of every row of the Agents table, in order."""
    return [
        (tr.get("data-agent"), one(tr, "[data-agent-state]").get("data-agent-state"))
        for tr in page.cssselect("#agents-table tbody tr")
    ]


async def config_status(client, token: str) -> int:
    return (await client.get(f"{API}/config", headers={"Authorization": f"Bearer {token}"})).status_code


async def test_the_page_lists_agents_worst_first(client, db):
    await fleet(db)
    online, auth = await enrol(client, "S-0001", name="Online one")
    await beat(client, auth, clock=utcnow() + timedelta(seconds=3))  # its clock runs 3 s fast
    await enrol(client, "S-0002", name="Never seen one")
    offline, auth = await enrol(client, "S-0003", name="Offline one")
    await beat(client, auth)
    revoked, _ = await enrol(client, "S-0004", name="A revoked one")
    assert (await client.post(f"/api/v1/agents/{revoked}/revoke")).status_code == 204
    async with db.sessionmaker() as s:
        await s.execute(
            update(Agent).where(Agent.id == offline).values(last_heard_at=utcnow() - timedelta(hours=1))
        )
        await s.commit()
    await in_transaction(db, lambda s: mark_agents_offline(s, utcnow()))

    r = await client.get(PAGE)
    assert r.status_code == 200
    page = dom(r)
    assert rows(page) == [
        ("Offline one", AgentState.OFFLINE),
        ("Never seen one", AgentState.NEVER_SEEN),
        ("Online one", AgentState.ONLINE),
        ("A revoked one", AgentState.REVOKED),
    ]
    row = one(page, f"#agent-{online}")
    assert [a.text for a in row.cssselect(".stores-cell a")] == ["S-0001"]
    assert one(row, ".stores-cell a").get("href") == "/stores/S-0001"
    assert "test" in text(row)  # the version its heartbeat gave
    warn = text(one(row, ".skew.warn"))  # more than 2 s off: flagged
    assert warn.startswith("+3.") and warn.endswith(" s")
    assert row.cssselect("time[title$='UTC']")  # last heard: "x ago", the exact time as tooltip
    assert row.cssselect("svg use")  # the badge is an inline SVG icon and a word
    assert "Online" in text(one(row, "[data-agent-state]"))
    # A revoked agent has no actions left; the others have all three.
    assert not page.cssselect(f"#agent-{revoked} form")
    actions = texts(row, "td.actions button, td.actions summary")
    assert actions == ["Change stores", "Save stores", "Rotate token", "Revoke"]
    assert all(f.get("hx-confirm") for f in row.cssselect("td.actions form"))
    # The nav links to it.
    assert page.cssselect("nav a[href='/admin/agents'][aria-current='page']")


async def test_enrol_shows_the_token_once_with_the_command_line(client, db):
    await fleet(db)
    r = await client.post(PAGE, data={"name": "S-0001 back office", "stores": "S-0001,  S-0002"})
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    page = dom(r)
    box = one(page, "#token-box")
    assert "will not be shown again" in text(box)
    token = text(one(page, "#token-value"))
    assert token.startswith("tpa_") and await config_status(client, token) == 200
    command = text(one(page, "#token-command"))
    # Reached over plain http (the test client): the agent needs --insecure-http for that, and says why.
    assert command == f"termpulse agent --server http://testserver --insecure-http --token {token}"
    assert "--insecure-http" in text(box) and "HTTPS" in text(box)
    env = text(one(page, "#token-env")).split()
    assert env == ["TERMPULSE_SERVER=http://testserver", f"TERMPULSE_AGENT_TOKEN={token}"]
    assert page.cssselect("button[data-copy='#token-value']") and page.cssselect(
        "button[data-copy='#token-command']"
    )
    listed = [(n, s) for n, s in rows(page)]
    assert listed == [("S-0001 back office", AgentState.NEVER_SEEN)]
    assert texts(page, "#agents-table .stores-cell a") == ["S-0001", "S-0002"]

    again = await client.get(PAGE)
    assert token not in again.text and not dom(again).cssselect("#token-box")
    assert token[:10] in again.text  # the hint tells tokens apart

    # htmx: the page's body only, the token box in it.
    fragment = await client.post(PAGE, data={"name": "Second", "stores": "S-0003"}, headers=HX)
    assert fragment.status_code == 200 and not is_full(fragment)
    assert text(one(dom(fragment), "#token-box #token-value")).startswith("tpa_")


async def test_a_bad_store_code_or_a_taken_name_is_shown_next_to_its_field(client, db):
    await fleet(db)
    r = await client.post(PAGE, data={"name": "Back office", "stores": "S-0001 S-9999"}, headers=HX)
    assert r.status_code == 422
    page = dom(r)
    assert "S-9999" in text(one(page, "#e-stores"))
    field = one(page, "#f-stores")
    assert field.get("aria-invalid") == "true" and field.get("value") == "S-0001 S-9999"
    assert one(page, "#f-name").get("value") == "Back office"
    assert not page.cssselect("#token-box")
    assert (await client.get("/api/v1/agents")).json() == []  # nothing half-made

    await enrol(client, "S-0001", name="Back office")
    taken = dom(await client.post(PAGE, data={"name": "Back office", "stores": "S-0002"}))
    assert "exists already" in text(one(taken, "#e-name"))
    empty = dom(await client.post(PAGE, data={"name": "Till room", "stores": " , "}))
    assert empty.cssselect("#e-stores")


async def test_rotate_and_revoke(client, db):
    await fleet(db)
    agent_id, auth = await enrol(client, "S-0001")
    old = auth["Authorization"].removeprefix("Bearer ")

    r = await client.post(f"{PAGE}/{agent_id}/rotate", headers=HX)
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    page = dom(r)
    new = text(one(page, "#token-value"))
    assert new != old and "old token stopped working" in text(one(page, "#token-box"))
    assert await config_status(client, old) == 401 and await config_status(client, new) == 200

    r = await client.post(f"{PAGE}/{agent_id}/revoke", headers=HX)
    assert r.status_code == 200
    page = dom(r)
    assert "S-0001 is checked centrally again" in text(one(page, ".banner.ok"))
    assert rows(page) == [("S-0001 agent", AgentState.REVOKED)]
    assert await config_status(client, new) == 401
    async with db.sessionmaker() as s:
        assert (await s.scalars(select(Monitor.id).where(Monitor.agent_id.is_not(None)))).all() == []

    # Sent again (a reload), or a revoked agent's token rotated: said, nothing changes.
    again = await client.post(f"{PAGE}/{agent_id}/revoke")
    assert "already revoked" in text(one(dom(again), ".banner"))
    refused = await client.post(f"{PAGE}/{agent_id}/rotate")
    assert refused.status_code == 422 and "revoked" in text(one(dom(refused), ".banner.error"))
    gone = await client.post(f"{PAGE}/999/revoke", headers=HX)
    assert gone.status_code == 404 and "no longer exists" in gone.text


async def test_change_stores(client, db):
    await fleet(db)
    agent_id, _ = await enrol(client, "S-0001")
    r = await client.post(f"{PAGE}/{agent_id}/stores", data={"stores": "S-0002; S-0003"}, headers=HX)
    assert r.status_code == 200
    page = dom(r)
    assert "now checks S-0002, S-0003" in text(one(page, ".banner.ok"))
    assert [a.text for a in page.cssselect(f"#agent-{agent_id} .stores-cell a")] == ["S-0002", "S-0003"]

    bad = await client.post(f"{PAGE}/{agent_id}/stores", data={"stores": "S-0002 S-7777"}, headers=HX)
    assert bad.status_code == 422
    page = dom(bad)
    assert page.cssselect(f"#agent-{agent_id} details.change-stores[open]")
    assert "S-7777" in text(one(page, f"#e-stores-{agent_id}"))
    assert one(page, f"#stores-{agent_id}").get("value") == "S-0002 S-7777"
    api = (await client.get(f"/api/v1/agents/{agent_id}")).json()
    assert api["stores"] == ["S-0002", "S-0003"]  # unchanged


async def test_the_store_page_shows_its_agent_or_says_checked_centrally(client, db):
    await fleet(db)
    agent_id, auth = await enrol(client, "S-0001", name="S-0001 back office")
    await beat(client, auth, clock=utcnow() - timedelta(milliseconds=400))

    page = dom(await client.get("/stores/S-0001"))
    panel = one(page, "#store-agent")
    assert "S-0001 back office" in text(panel) and "test" in text(panel)  # name, version
    assert one(panel, "[data-agent-state]").get("data-agent-state") == AgentState.ONLINE
    assert panel.cssselect("time[title$='UTC']")  # last heard
    skew = text(one(panel, ".skew"))
    assert skew.startswith("\u2212") and not panel.cssselect(".skew.warn")  # -0.4 s: behind, not flagged
    assert panel.cssselect(f"a[href='/admin/agents#agent-{agent_id}']")
    assert not page.cssselect(".checked-centrally")

    central = dom(await client.get("/stores/S-0002"))
    assert not central.cssselect("#store-agent")
    assert text(one(central, ".checked-centrally")) == "Checked centrally"


async def test_the_overview_shows_store_offline_and_agent_offline(client, db):
    await fleet(db)
    # S-0006 (Adyen, cloud terminals): its agent and every cloud terminal go silent: store_offline.
    # S-0001 (no cloud terminals): only its agent goes silent.
    silent, auth = await enrol(client, "S-0006")
    await beat(client, auth)
    alone, auth = await enrol(client, "S-0001")
    await beat(client, auth)
    heard = utcnow() - timedelta(minutes=10)
    async with db.sessionmaker() as s:
        await s.execute(update(Agent).where(Agent.id.in_([silent, alone])).values(last_heard_at=heard))
        ids = dict((await s.execute(select(Store.code, Store.id))).all())
        await s.execute(
            update(Monitor)
            .where(Monitor.store_id == ids["S-0006"], Monitor.kind == MonitorKind.CLOUD)
            .values(state=State.DOWN)
        )
        await s.commit()
    assert await in_transaction(db, lambda s: mark_agents_offline(s, utcnow())) == 2

    page = dom(await client.get("/"))
    offline = one(page, f"#s-{ids['S-0006']} [data-reason='store_offline']")  # in the store's row
    assert text(offline).startswith(
        f"Store offline: agent and all cloud terminals silent since {heard:%H:%M} UTC"
    )
    assert not page.cssselect(f"#s-{ids['S-0006']} .agent-off")  # said once, by the reason
    marker = one(page, f"#s-{ids['S-0001']} .agent-off")
    assert text(marker) == "agent offline" and marker.cssselect("svg")
    central = one(page, f"#s-{ids['S-0002']}")
    assert not central.cssselect(".agent-off")  # a centrally checked store: no agent to be offline
    reasons = {e.get("data-reason") for e in central.cssselect("[data-reason]")}
    assert not reasons & {"store_offline", "agent_offline"}, reasons

    # The store page says it too, with what to do.
    store = dom(await client.get("/stores/S-0006"))
    banner = text(one(store, ".store-offline"))
    assert "Store offline" in banner and "power" in banner
