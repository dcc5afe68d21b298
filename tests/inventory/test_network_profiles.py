"""Network profiles as records: the shipped presets, the API and the admin page (create, edit,
delete refused while stores use one, errors by field and line), the stores CSV's profile column
checked against the records, and an edit re-deriving the stores' monitors at once (keys, ids
and history kept; a removed destination's monitors gone)."""

from __future__ import annotations

from sqlalchemy import func, select

from app.inventory.csvimport import ImportFailed, import_fleet
from app.inventory.models import CheckSettings, Monitor, NetworkProfile, Store
from app.inventory.profiles import PRESETS
from tests.html import dom, one, text

SHOP = {
    "name": "torgsoft-shop",
    "description": "A Torgsoft shop's outbound needs",
    "destinations": [
        {"host": "bank.example.com", "port": 443, "checks": ["dns", "tcp", "tls"]},
        {"host": "ws.example.com", "port": 3000, "checks": ["tcp", "websocket", "ping"]},
    ],
}


async def network_monitors(db, code) -> dict[str, int]:
    async with db.sessionmaker() as s:
        sid = await s.scalar(select(Store.id).where(Store.code == code))
        rows = await s.execute(
            select(Monitor.key, Monitor.id).where(Monitor.store_id == sid, Monitor.terminal_id.is_(None))
        )
        return {key.removeprefix(f"s{sid}:"): mid for key, mid in rows}


async def test_the_presets_are_records(client):
    r = await client.get("/api/v1/network-profiles")
    assert r.status_code == 200, r.text
    got = {p["name"]: p for p in r.json()}
    assert set(got) == set(PRESETS)
    assert got["fullsteam-ingenico"]["destinations"] == [
        d.as_json() for d in PRESETS["fullsteam-ingenico"][1]
    ]
    assert got["paynt-local"]["destinations"] == [] and got["mixed"]["stores"] == 0


async def test_create_use_edit_and_delete_through_the_api(client, db):
    r = await client.post("/api/v1/network-profiles", json=SHOP)
    assert r.status_code == 201, r.text
    assert r.json()["destinations"][1]["checks"] == ["tcp", "websocket", "ping"]
    r = await client.post(
        "/api/v1/stores", json={"code": "S-T1", "name": "Shop", "network_profile": "torgsoft-shop"}
    )
    assert r.status_code == 201, r.text
    before = await network_monitors(db, "S-T1")
    assert set(before) == {
        "dns:bank.example.com",
        "tcp:bank.example.com:443",
        "tls:bank.example.com:443",
        "tcp:ws.example.com:3000",
        "websocket:ws.example.com:3000",
        "ping:ws.example.com",
    }

    # Edit: an https check added to the first, the second destination removed, a third added.
    edited = {
        **SHOP,
        "destinations": [
            {"host": "bank.example.com", "port": 443, "checks": ["dns", "tcp", "tls", "https"]},
            {"host": "pos.example.com", "port": 5001, "checks": ["dns", "tcp"]},
        ],
    }
    r = await client.put("/api/v1/network-profiles/torgsoft-shop", json=edited)
    assert r.status_code == 200, r.text
    assert r.json()["stores"] == 1 and r.json()["monitors"] == {"created": 3, "updated": 0, "deleted": 3}
    after = await network_monitors(db, "S-T1")
    kept = {
        k: before[k] for k in ("dns:bank.example.com", "tcp:bank.example.com:443", "tls:bank.example.com:443")
    }
    assert {k: after[k] for k in kept} == kept  # the same rows: their history stays
    assert set(after) - set(kept) == {
        "https:bank.example.com:443",
        "dns:pos.example.com",
        "tcp:pos.example.com:5001",
    }
    async with db.sessionmaker() as s:
        target = await s.scalar(select(Monitor.target).where(Monitor.key.like("%https:bank%")))
    assert target == "https://bank.example.com:443/"

    # Delete: refused while the store uses it, with the reason; fine once it does not.
    r = await client.delete("/api/v1/network-profiles/torgsoft-shop")
    assert r.status_code == 409 and "used by 1 store(s) (S-T1)" in r.json()["detail"]["reason"]
    r = await client.put(
        "/api/v1/stores/S-T1", json={"code": "S-T1", "name": "Shop", "network_profile": "mixed"}
    )
    assert r.status_code == 200, r.text
    assert (await client.delete("/api/v1/network-profiles/torgsoft-shop")).status_code == 204
    assert (await client.get("/api/v1/network-profiles/torgsoft-shop")).status_code == 404


async def test_a_rename_takes_the_stores_and_check_settings_along(client, db):
    await client.post("/api/v1/network-profiles", json=SHOP)
    await client.post(
        "/api/v1/stores", json={"code": "S-T2", "name": "Shop", "network_profile": "torgsoft-shop"}
    )
    r = await client.put("/api/v1/check-settings/profile/torgsoft-shop", json={"check_interval_s": 120})
    assert r.status_code == 200, r.text
    before = await network_monitors(db, "S-T2")
    r = await client.put("/api/v1/network-profiles/torgsoft-shop", json={**SHOP, "name": "torgsoft-2"})
    assert r.status_code == 200, r.text
    assert r.json()["monitors"] == {"created": 0, "updated": 0, "deleted": 0}  # same checks: none touched
    async with db.sessionmaker() as s:
        assert await s.scalar(select(Store.network_profile).where(Store.code == "S-T2")) == "torgsoft-2"
        assert await s.get(CheckSettings, ("profile", "torgsoft-2")) is not None
    assert await network_monitors(db, "S-T2") == before
    r = await client.put("/api/v1/network-profiles/torgsoft-2", json={**SHOP, "name": "mixed"})
    assert r.status_code == 409 and r.json()["detail"]["field"] == "name"


async def test_bad_profiles_are_4xx_with_the_reason(client, db):
    def with_destination(**d):
        return {**SHOP, "destinations": [{"host": "ok.example.com", "port": 443, **d}]}

    cases = [
        (with_destination(port=0), "port"),
        (with_destination(port=70000), "port"),
        (with_destination(host="bad_host!"), "not an IP address or host name"),
        (with_destination(host="-x.example.com"), "not an IP address or host name"),
        (with_destination(checks=["dns", "smtp"]), "unknown check 'smtp'"),
        (with_destination(checks=[]), "at least one check"),
        (with_destination(host="192.0.2.1", checks=["dns"]), "dns needs a host name"),
        ({**SHOP, "name": "has space"}, "letters, digits"),
        ({**SHOP, "destinations": SHOP["destinations"] * 2}, "listed twice"),
        ({**SHOP, "destinations": "nope"}, "list"),
    ]
    for body, reason in cases:
        r = await client.post("/api/v1/network-profiles", json=body)
        assert r.status_code == 422, (body, r.text)
        assert reason in r.text, (reason, r.text)
    assert (
        await client.post(
            "/api/v1/network-profiles", content=b"{", headers={"content-type": "application/json"}
        )
    ).status_code == 422
    assert (await client.put("/api/v1/network-profiles/nothing", json=SHOP)).status_code == 404
    assert (await client.delete("/api/v1/network-profiles/nothing")).status_code == 404
    r = await client.post("/api/v1/network-profiles", json={**SHOP, "name": "mixed"})
    assert r.status_code == 409 and "already exists" in r.text
    async with db.sessionmaker() as s:
        assert await s.scalar(select(func.count()).select_from(NetworkProfile)) == len(PRESETS)


async def test_a_store_must_name_a_profile_record(client):
    r = await client.post("/api/v1/stores", json={"code": "S-X", "name": "X", "network_profile": "nope"})
    assert r.status_code == 422
    assert (
        r.json()["detail"] == [{"field": "network_profile", "message": r.json()["detail"][0]["message"]}]
        and "no network profile 'nope'" in r.text
    )
    await client.post("/api/v1/network-profiles", json=SHOP)
    r = await client.post(
        "/api/v1/stores", json={"code": "S-X", "name": "X", "network_profile": "torgsoft-shop"}
    )
    assert r.status_code == 201, r.text


async def test_the_stores_csv_profile_column_is_checked_by_line(db):
    stores = b"code,name,network_profile\nS-C1,One,mixed\nS-C2,Two,no-such-profile\nS-C3,Three,\n"
    async with db.sessionmaker() as s:
        try:
            await import_fleet(s, [("stores.csv", stores)])
        except ImportFailed as failed:
            errors = [str(e) for e in failed.errors]
        else:
            raise AssertionError("imported a store with an unknown profile")
    assert len(errors) == 1 and errors[0].startswith("stores.csv:3: network_profile: no network profile")
    async with db.sessionmaker() as s:
        assert await s.scalar(select(func.count()).select_from(Store)) == 0  # nothing of that file


async def test_the_admin_page_lists_creates_edits_and_refuses_delete(client, db):
    page = await client.get("/admin/network-profiles")
    assert page.status_code == 200
    row = one(dom(page), "#profile-fullsteam-ingenico")
    assert "prodssl.protectedtransactions.com:443" in text(row) and "dns · tcp · tls" in text(row)

    # A bad line: the form again, the error by the field naming the line; nothing saved.
    form = {
        "name": "page-made",
        "description": "",
        "destinations": "a.example.com 443 dns tcp\nb.example.com 99999 tcp",
    }
    r = await client.post("/admin/network-profiles/new", data=form, headers={"HX-Request": "true"})
    assert r.status_code == 422
    error = one(dom(r), "#e-destinations")
    assert text(error).startswith("line 2: port:")
    form["destinations"] = "a.example.com 443 dns tcp\nb.example.com\n"
    r = await client.post("/admin/network-profiles/new", data=form, headers={"HX-Request": "true"})
    assert "line 2: expected host, port and checks" in text(one(dom(r), "#e-destinations"))
    taken = {**form, "name": "mixed", "destinations": "a.example.com 443"}
    r = await client.post("/admin/network-profiles/new", data=taken, headers={"HX-Request": "true"})
    assert "already exists" in text(one(dom(r), "#e-name"))

    form["destinations"] = "# the bank\na.example.com 443 dns tcp tls\n\nb.example.com 5001\n"
    r = await client.post("/admin/network-profiles/new", data=form, headers={"HX-Request": "true"})
    assert r.status_code == 204 and r.headers["HX-Redirect"] == "/admin/network-profiles"
    edit = await client.get("/admin/network-profiles/page-made/edit")
    assert (
        one(dom(edit), "#f-destinations").text == "a.example.com 443 dns tcp tls\nb.example.com 5001 dns tcp"
    )

    await client.post("/api/v1/stores", json={"code": "S-P1", "name": "P", "network_profile": "page-made"})
    form["destinations"] = "a.example.com 443 dns"
    r = await client.post("/admin/network-profiles/page-made/edit", data=form, headers={"HX-Request": "true"})
    assert r.status_code == 204
    assert set(await network_monitors(db, "S-P1")) == {"dns:a.example.com"}

    r = await client.post("/admin/network-profiles/page-made/delete", headers={"HX-Request": "true"})
    assert r.status_code == 409 and "used by 1 store(s) (S-P1)" in r.text
    store_form = await client.get("/admin/stores/new")
    assert 'value="page-made"' in store_form.text  # the store form offers the records


def test_profile_changes_are_audited_as_inventory_changes():
    from app.auth.audit import action_for

    for method, path in [
        ("POST", "/api/v1/network-profiles"),
        ("PUT", "/api/v1/network-profiles/mixed"),
        ("DELETE", "/api/v1/network-profiles/mixed"),
        ("POST", "/admin/network-profiles/new"),
        ("POST", "/admin/network-profiles/mixed/delete"),
    ]:
        assert action_for(method, path) == "inventory change", (method, path)


async def test_the_terminals_csv_tcp_ports_column_is_checked_by_line(db):
    stores = b"code,name\nS-C9,Nine\n"
    terminals = (
        b"store_code,poiid,integration,lan_host,lan_port,local_api,tcp_ports\n"
        b"S-C9,TRG-1,local,192.168.1.20,3000,torgsoft,2000;2100;5001\n"
        b"S-C9,TRG-2,local,192.168.1.21,3000,torgsoft,2000;70000\n"
    )
    async with db.sessionmaker() as s:
        try:
            await import_fleet(s, [("stores.csv", stores), ("terminals.csv", terminals)])
        except ImportFailed as failed:
            errors = [str(e) for e in failed.errors]
        else:
            raise AssertionError("imported a terminal with port 70000")
    assert errors == [
        "terminals.csv:3: tcp_ports: '70000' is not a port (whole numbers from 1 to 65535, separated by ;)"
    ]
    async with db.sessionmaker() as s:
        assert await s.scalar(select(func.count()).select_from(Store)) == 0
