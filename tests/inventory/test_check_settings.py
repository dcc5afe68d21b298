"""Interval, timeout and down/up thresholds per store, region and network profile (most specific
wins: the store's, its region's, its profile's for its network monitors, then the defaults),
applied to the monitors as they are: keys, ids and history kept. API and store form, both
databases."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select

from app.db import utcnow
from app.inventory.models import Monitor, Store
from app.monitoring.models import CheckResult
from tests.html import dom, one

PROFILE = "fullsteam-ingenico"


async def add_store(client, code, region="", **extra):
    body = {"code": code, "name": f"Shop {code}", "region": region, "network_profile": PROFILE, **extra}
    r = await client.post("/api/v1/stores", json=body)
    assert r.status_code == 201, r.text
    n = int(code.rsplit("-", 1)[-1])
    body = {
        "store_code": code,
        "poiid": f"TH-{code}",
        "integration": "local",
        "lan_host": f"192.168.7.{n}",
        "lan_port": 2000,
    }
    assert (await client.post("/api/v1/terminals", json=body)).status_code == 201


async def values(db, code) -> dict[str, set[tuple]]:
    """{"network": {(interval, timeout, down, up)}, "terminal": {...}} of the store's monitors."""
    async with db.sessionmaker() as s:
        sid = await s.scalar(select(Store.id).where(Store.code == code))
        rows = await s.execute(
            select(
                Monitor.terminal_id,
                Monitor.interval_s,
                Monitor.timeout_s,
                Monitor.fail_threshold,
                Monitor.success_threshold,
            ).where(Monitor.store_id == sid)
        )
        out: dict[str, set[tuple]] = {"network": set(), "terminal": set()}
        for tid, *v in rows:
            out["network" if tid is None else "terminal"].add(tuple(v))
        return out


async def keys(db) -> dict[int, str]:
    async with db.sessionmaker() as s:
        return dict((await s.execute(select(Monitor.id, Monitor.key))).all())


async def test_a_stores_own_settings_are_honoured_by_its_monitors(client, db, settings):
    await add_store(client, "TH-1", check_interval_s=30, check_timeout_s=2.5, down_after=3, up_after=2)
    v = await values(db, "TH-1")
    assert v == {"network": {(30, 2.5, 3, 2)}, "terminal": {(30, 2.5, 3, 2)}}
    await add_store(client, "TH-2")  # nothing set: the defaults
    default = (settings.check_interval_s, settings.check_timeout_s, 2, 1)
    assert await values(db, "TH-2") == {"network": {default}, "terminal": {default}}
    r = await client.get("/api/v1/stores/TH-1")
    assert r.json()["check_interval_s"] == 30 and r.json()["down_after"] == 3


async def test_region_then_profile_unless_the_store_overrides(client, db, settings):
    await add_store(client, "TH-11", region="North")
    await add_store(client, "TH-12", region="North", check_interval_s=30)
    await add_store(client, "TH-13", region="South")
    r = await client.put(
        "/api/v1/check-settings/region/North",
        json={"check_interval_s": 120, "check_timeout_s": 4, "up_after": 2},
    )
    assert r.status_code == 200, r.text
    assert r.json()["monitors_changed"] > 0
    r = await client.put(f"/api/v1/check-settings/profile/{PROFILE}", json={"down_after": 5, "up_after": 3})
    assert r.status_code == 200, r.text

    # The profile counts for the network monitors only, below the region (up_after 2 wins).
    assert await values(db, "TH-11") == {"network": {(120, 4.0, 5, 2)}, "terminal": {(120, 4.0, 2, 2)}}
    assert await values(db, "TH-12") == {"network": {(30, 4.0, 5, 2)}, "terminal": {(30, 4.0, 2, 2)}}
    i, t = settings.check_interval_s, settings.check_timeout_s
    assert await values(db, "TH-13") == {"network": {(i, t, 5, 3)}, "terminal": {(i, t, 2, 1)}}

    listed = (await client.get("/api/v1/check-settings")).json()
    assert [(c["scope"], c["name"]) for c in listed] == [("profile", PROFILE), ("region", "North")]

    # A store moving into the region takes its values; all null removes the region's entry.
    assert (
        await client.put(
            "/api/v1/stores/TH-13",
            json={"code": "TH-13", "name": "x", "region": "North", "network_profile": PROFILE},
        )
    ).status_code == 200
    assert (await values(db, "TH-13"))["terminal"] == {(120, 4.0, 2, 2)}
    r = await client.put("/api/v1/check-settings/region/North", json={})
    assert r.status_code == 200
    assert [c["scope"] for c in (await client.get("/api/v1/check-settings")).json()] == ["profile"]
    assert (await values(db, "TH-11"))["terminal"] == {(i, t, 2, 1)}


async def test_re_deriving_keeps_keys_ids_and_history(client, db):
    await add_store(client, "TH-21", region="East")
    before = await keys(db)
    async with db.sessionmaker() as s:
        mid = next(iter(before))
        s.add(CheckResult(monitor_id=mid, checked_at=utcnow(), outcome="ok", latency_ms=1.0, manual=True))
        await s.commit()
    await client.put("/api/v1/check-settings/region/East", json={"check_interval_s": 300})
    body = {"code": "TH-21", "name": "x", "region": "East", "network_profile": PROFILE, "down_after": 4}
    assert (await client.put("/api/v1/stores/TH-21", json=body)).status_code == 200
    assert await keys(db) == before
    async with db.sessionmaker() as s:
        assert (
            await s.scalar(select(func.count()).select_from(CheckResult).where(CheckResult.monitor_id == mid))
            == 1
        )
        rows = (
            await s.execute(select(Monitor.interval_s, Monitor.fail_threshold, Monitor.next_due_at))
        ).all()
    now = utcnow()
    assert {(r.interval_s, r.fail_threshold) for r in rows} == {(300, 4)}
    assert all(r.next_due_at <= now + timedelta(seconds=300) for r in rows)  # on the new interval


async def test_bad_values_are_422_with_the_field(client):
    await add_store(client, "TH-31")
    r = await client.put("/api/v1/check-settings/region/North", json={"check_interval_s": 5})
    assert r.status_code == 422 and "check_interval_s" in r.text
    r = await client.put("/api/v1/check-settings/profile/nope", json={"down_after": 2})
    assert r.status_code == 422 and "unknown network profile" in r.text
    assert (await client.put("/api/v1/check-settings/planet/x", json={})).status_code == 422
    body = {"code": "TH-31", "name": "x", "check_interval_s": 10, "check_timeout_s": 10}
    r = await client.put("/api/v1/stores/TH-31", json=body)
    assert r.status_code == 422 and "shorter than the check interval" in r.text


async def test_store_form_sets_and_shows_them(client, db):
    await add_store(client, "TH-41")
    page = dom(await client.get("/admin/stores/TH-41/edit"))
    assert one(page, "#f-check_interval_s").get("value") == ""
    form = {"code": "TH-41", "name": "Shop", "timezone": "UTC", "network_profile": PROFILE}
    r = await client.post(
        "/admin/stores/TH-41/edit", data={**form, "check_interval_s": "45", "down_after": "3"}
    )
    assert r.status_code in (200, 303), r.text
    assert await values(db, "TH-41") == {"network": {(45, 5.0, 3, 1)}, "terminal": {(45, 5.0, 3, 1)}}
    page = dom(await client.get("/admin/stores/TH-41/edit"))
    assert one(page, "#f-check_interval_s").get("value") == "45"
    r = await client.post(
        "/admin/stores/TH-41/edit", data={**form, "check_interval_s": "45", "check_timeout_s": "60"}
    )
    assert (
        one(dom(r), "#e-check_timeout_s").text_content().strip() == "must be shorter than the check interval"
    )


async def test_region_settings_section_on_the_stores_admin_page(client, db, settings):
    await add_store(client, "TH-51", region="West")
    page = dom(await client.get("/admin/stores"))
    section = one(page, "section#check-settings")
    assert one(section, "form").get("hx-post") == "/admin/check-settings"
    assert "West" in [o.get("value") for o in section.cssselect("#cs-names option")]

    form = {"scope": "region", "name": "West", "check_interval_s": "90", "up_after": "2"}
    r = await client.post("/admin/check-settings", data=form, headers={"HX-Request": "true"})
    assert r.status_code == 200, r.text
    section = one(dom(r), "section#check-settings")
    assert "monitors changed" in one(section, ".banner.ok").text_content()
    row = one(section, 'tr[data-scope="region"][data-name="West"]')
    assert [td.text_content() for td in row.cssselect("td.num")] == ["90", "—", "—", "2"]
    t = settings.check_timeout_s
    assert await values(db, "TH-51") == {"network": {(90, t, 2, 2)}, "terminal": {(90, t, 2, 2)}}

    bad = await client.post(
        "/admin/check-settings",
        data={"scope": "profile", "name": "nope", "down_after": "0"},
        headers={"HX-Request": "true"},
    )
    assert bad.status_code == 422
    d = dom(bad)
    assert "unknown network profile" in one(d, "#e-name").text_content()
    assert one(d, "#e-down_after").text_content()


async def test_down_after_is_what_the_state_machine_counts(client, db, settings):
    import socket

    from app.monitoring.manual import check_terminal_now

    with socket.socket() as sock:  # a loopback port where nothing listens: refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert (
        await client.post("/api/v1/stores", json={"code": "TH-61", "name": "x", "down_after": 3})
    ).status_code == 201
    body = {
        "store_code": "TH-61",
        "poiid": "TH-61-T",
        "integration": "local",
        "lan_host": "127.0.0.1",
        "lan_port": port,
    }
    assert (await client.post("/api/v1/terminals", json=body)).status_code == 201
    states = [(await check_terminal_now(db, settings, "TH-61-T")).status for _ in range(3)]
    assert states == ["unknown", "unknown", "down"]  # three refusals in a row, not the default two
