"""Audit entries say which fields a change changed, from what to what, through the API and the
pages alike; secrets (provider keys, passwords, tokens) only as "changed"; the audit page lists
them and its CSV export has them in a column of their own. Both databases."""

import csv
import io

from sqlalchemy import select

from app.auth.audit import split_detail
from app.auth.models import AuditEvent
from tests.html import dom, text
from tests.html import select as css
from tests.test_auth import add_user, basic

ADMIN = basic("root")
KEY = "AQE-secret-provider-key-1234"


async def changes_of(db, action):
    """The changes of each entry of `action`, oldest first."""
    async with db.sessionmaker() as session:
        rows = await session.scalars(
            select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)
        )
        return [(e.target, split_detail(e.detail)[1]) for e in rows]


async def setup(db, client):
    await add_user(db, "root", "admin")
    client._transport.app.state.user_count_cache = [0.0, 0]
    store = {"code": "S-1", "name": "One", "region": "North"}
    assert (await client.post("/api/v1/stores", json=store, headers=ADMIN)).status_code == 201
    terminal = {
        "store_code": "S-1",
        "poiid": "T-1",
        "integration": "local",
        "lan_host": "127.0.0.1",
        "lan_port": 9,
    }
    assert (await client.post("/api/v1/terminals", json=terminal, headers=ADMIN)).status_code == 201
    return store, terminal


async def test_api_and_page_edits_record_the_fields_changed(db, client):
    store, terminal = await setup(db, client)
    edited = {**store, "name": "One renamed", "region": "South"}
    assert (await client.put("/api/v1/stores/S-1", json=edited, headers=ADMIN)).status_code == 200
    form = {"code": "S-1", "name": "One renamed", "region": "West", "timezone": "Europe/Paris"}
    assert (await client.post("/admin/stores/S-1/edit", data=form, headers=ADMIN)).status_code == 303
    moved = {**terminal, "label": "Till 2", "lan_port": 8443, "epos_token": "tok-very-secret"}
    assert (await client.put("/api/v1/terminals/T-1", json=moved, headers=ADMIN)).status_code == 200
    page_form = {k: str(v) for k, v in {**moved, "label": "Till 3"}.items()}
    response = await client.post("/admin/terminals/T-1/edit", data=page_form, headers=ADMIN)
    assert response.status_code == 303, response.text

    got = await changes_of(db, "inventory change")
    assert got[0] == ("/api/v1/stores", [])  # a creation: the entry, no field changes
    assert got[2] == ("/api/v1/stores/S-1", ["name: One → One renamed", "region: North → South"])
    assert got[3] == ("/admin/stores/S-1/edit", ["region: South → West", "timezone: UTC → Europe/Paris"])
    assert got[4] == (
        "/api/v1/terminals/T-1",
        ["label: — → Till 2", "lan_port: 9 → 8443", "epos_token: changed"],
    )
    assert got[5] == ("/admin/terminals/T-1/edit", ["label: Till 2 → Till 3"])
    async with db.sessionmaker() as session:
        details = " ".join(await session.scalars(select(AuditEvent.detail)))
    assert "tok-very-secret" not in details

    # An edit that changes nothing, and one refused, say no changes.
    assert (
        await client.put("/api/v1/stores/S-1", json=edited | {"region": "West"}, headers=ADMIN)
    ).status_code == 200
    bad = await client.put("/api/v1/stores/S-1", json={**edited, "timezone": "Mars/Base"}, headers=ADMIN)
    assert bad.status_code == 422
    assert [c for _, c in (await changes_of(db, "inventory change"))[-2:]] == [[], []]


async def test_a_provider_key_is_only_said_to_have_changed(db, client):
    await add_user(db, "root", "admin")
    client._transport.app.state.user_count_cache = [0.0, 0]
    body = {
        "name": "Adyen EU",
        "kind": "adyen",
        "environment": "test",
        "merchant_account": "ShopPOS",
        "api_base_url": "http://127.0.0.1:9/v1",
        "api_key": KEY,
    }
    account = (await client.post("/api/v1/providers", json=body, headers=ADMIN)).json()
    url = f"/api/v1/providers/{account['id']}"
    new_key = "AQE-another-secret-key-9876"
    assert (await client.put(f"{url}/key", json={"api_key": new_key}, headers=ADMIN)).status_code == 204
    renamed = {**body, "name": "Adyen EU2", "api_key": KEY}
    assert (await client.put(url, json=renamed, headers=ADMIN)).status_code == 200
    form = {k: str(v) for k, v in {**body, "name": "Adyen EU3", "api_key": ""}.items()}
    assert (
        await client.post(f"/admin/providers/{account['id']}", data=form, headers=ADMIN)
    ).status_code == 303

    got = [c for _, c in await changes_of(db, "provider change")]
    assert got[1:] == [
        ["api_key: changed"],
        ["name: Adyen EU → Adyen EU2", "api_key: changed"],
        ["name: Adyen EU2 → Adyen EU3"],
    ]
    page = await client.get("/admin/audit?action=provider+change", headers=ADMIN)
    export = await client.get("/admin/audit/export.csv?action=provider+change", headers=ADMIN)
    for answer in (page, export):
        assert "AQE-" not in answer.text and "9876" not in answer.text
    assert "api_key: changed" in text(css(dom(page), "#audit tbody tr")[1])
    table = list(csv.reader(io.StringIO(export.text)))
    assert table[0][-2:] == ["detail", "changes"]
    assert table[1][-2].startswith("POST /admin/providers/") and table[1][-1] == "name: Adyen EU2 → Adyen EU3"
    assert table[2][-1] == "name: Adyen EU → Adyen EU2; api_key: changed"


async def test_the_audit_page_lists_the_changes(db, client):
    store, _ = await setup(db, client)
    await client.put("/api/v1/stores/S-1", json={**store, "name": "Two"}, headers=ADMIN)
    page = dom(await client.get("/admin/audit", headers=ADMIN))
    newest = css(page, "#audit tbody tr")[0]
    assert [text(li) for li in css(newest, "ul.changes li")] == ["name: One → Two"]
    assert "PUT /api/v1/stores/S-1 -> 200" in text(newest)


async def test_user_changes_record_role_and_enabled(db, client):
    await add_user(db, "root", "admin")
    await add_user(db, "sam", "viewer")
    client._transport.app.state.user_count_cache = [0.0, 0]
    from tests.test_users import user_id

    sam = await user_id(db, "sam")
    assert (
        await client.post(f"/admin/users/{sam}/role", data={"role": "manager"}, headers=ADMIN)
    ).status_code == 303
    assert (
        await client.post(f"/admin/users/{sam}/active", data={"active": "no"}, headers=ADMIN)
    ).status_code == 303
    assert (
        await client.post(f"/admin/users/{sam}/password", data={"password": "a new long one"}, headers=ADMIN)
    ).status_code == 303
    assert await changes_of(db, "user role changed") == [("sam", ["role: viewer → manager"])]
    assert await changes_of(db, "user disabled") == [("sam", ["active: yes → no"])]
    assert await changes_of(db, "password reset") == [("sam", ["password: changed"])]
