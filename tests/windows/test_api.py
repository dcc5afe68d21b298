"""/api/v1/maintenance-windows and /api/v1/stores/{code}/trading-hours: create, list, end,
delete; 4xx with a reason for bad input; writes for admins and operators. Both databases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from app.db import utcnow
from app.windows.service import quiet_stores, stores_in_maintenance
from tests.history.helpers import store
from tests.test_auth import add_user, basic

API = "/api/v1/maintenance-windows"


def iso(d: datetime) -> str:
    return d.isoformat()


async def test_create_list_end_delete(db, client):
    await store(db, "S-1", tz="Europe/Amsterdam", region="Benelux")
    now = utcnow()
    made = await client.post(
        API,
        json={
            "store": "S-1",
            "title": "Refit",
            "reason": "ticket OPS-42",
            "starts_at": iso(now - timedelta(minutes=5)),
            "ends_at": iso(now + timedelta(hours=2)),
        },
    )
    assert made.status_code == 201, made.text
    body = made.json()
    assert body["active"] and body["kind"] == "one_off" and body["store"] == "S-1"
    assert body["created_by"] == "setup" and body["timezone"] == "Europe/Amsterdam"

    later = await client.post(
        API,
        json={
            "scope": "region",
            "region": "Benelux",
            "title": "Nightly",
            "weekdays": ["sun", "Monday"],
            "start_time": "23:00",
            "duration_minutes": 120,
            "starts_at": iso(now + timedelta(days=8)),
        },
    )
    assert later.status_code == 201, later.text
    assert later.json()["weekdays"] == ["mon", "sun"] and not later.json()["active"]
    assert later.json()["next_start"] is not None

    listed = (await client.get(API)).json()["items"]
    assert [w["title"] for w in listed] == ["Refit", "Nightly"]  # active first
    assert [w["title"] for w in (await client.get(API, params={"status": "active"})).json()["items"]] == [
        "Refit"
    ]
    upcoming = (await client.get(API, params={"status": "upcoming", "store": "S-1"})).json()["items"]
    assert [w["title"] for w in upcoming] == ["Nightly"]

    async with db.sessionmaker() as s:
        assert await quiet_stores(s, [1, 2, 3], utcnow())  # S-1 is quiet
        active = await stores_in_maintenance(s, utcnow())
    assert [a.title for a in active.values()] == ["Refit"]

    ended = await client.post(f"{API}/{body['id']}/end")
    assert ended.status_code == 200 and not ended.json()["active"]
    assert (await client.get(API, params={"status": "active"})).json()["items"] == []
    assert [w["title"] for w in (await client.get(API, params={"status": "ended"})).json()["items"]] == [
        "Refit"
    ]
    # Ending one that has not started removes it.
    assert (await client.post(f"{API}/{later.json()['id']}/end")).status_code == 204
    assert (await client.delete(f"{API}/{body['id']}")).status_code == 204
    assert (await client.get(f"{API}/{body['id']}")).status_code == 404
    assert (await client.delete(f"{API}/{body['id']}")).status_code == 404


async def test_bad_input_is_refused_with_a_reason(db, client):
    await store(db, "S-1", region="North")
    now = utcnow()
    one_off = {"store": "S-1", "title": "x", "starts_at": iso(now), "ends_at": iso(now + timedelta(hours=1))}

    async def refused(change: dict, field: str, words: str) -> None:
        answer = await client.post(API, json={**one_off, **change})
        assert answer.status_code == 422, answer.text
        detail = answer.json()["detail"]
        text = str(detail)
        assert field in text and words in text, detail

    await refused({"ends_at": iso(now - timedelta(hours=1))}, "ends_at", "after the start")
    await refused(
        {"starts_at": iso(now - timedelta(hours=3)), "ends_at": iso(now - timedelta(hours=2))},
        "ends_at",
        "past",
    )
    await refused({"store": "S-404"}, "store", "no store S-404")
    await refused({"scope": "region", "region": "Atlantis"}, "region", "no store is in region")
    await refused({"scope": "galaxy"}, "scope", "one of")
    await refused({"ends_at": None}, "ends_at", "when does it end")
    await refused(
        {"weekdays": ["funday"], "start_time": "10:00", "duration_minutes": 30}, "weekdays", "funday"
    )
    await refused({"weekdays": ["mon"], "start_time": "25:00", "duration_minutes": 30}, "start_time", "HH:MM")
    await refused({"weekdays": ["mon"], "start_time": "10:00"}, "duration_minutes", "duration")
    await refused({"weekdays": ["mon"], "start_time": "10:00", "duration_minutes": 0}, "duration_minutes", "")
    await refused({"title": ""}, "title", "")
    await refused({"timezone": "Mars/Olympus"}, "timezone", "unknown time zone")
    bad_status = await client.get(API, params={"status": "someday"})
    assert bad_status.status_code == 422 and "status" in bad_status.text
    assert (await client.get(API, params={"store": "S-404"})).status_code == 422
    # A one-off time without an offset is the store's local time, or the zone given.
    made = await client.post(
        API,
        json={
            **one_off,
            "starts_at": "2030-01-02T10:00",
            "ends_at": "2030-01-02T12:00",
            "timezone": "Asia/Tokyo",
        },
    )
    assert made.status_code == 201 and made.json()["starts_at"] == "2030-01-02T01:00:00Z"


async def test_trading_hours_on_the_store(db, client):
    await store(db, "S-1", tz="America/New_York")
    url = "/api/v1/stores/S-1/trading-hours"
    unset = (await client.get(url)).json()
    assert unset["set"] is False and unset["trading_now"] is True and unset["days"]["mon"] is None

    put = await client.put(
        url,
        json={
            "days": {
                "mon": {"opens": "09:00", "closes": "18:00"},
                "fri": {"opens": "18:00", "closes": "02:00"},
            }
        },
    )
    assert put.status_code == 200, put.text
    hours = put.json()
    assert hours["set"] and hours["timezone"] == "America/New_York"
    assert hours["days"]["mon"] == {"opens": "09:00", "closes": "18:00"} and hours["days"]["sun"] is None

    for bad, words in (
        ({"days": {"mon": {"opens": "9am", "closes": "18:00"}}}, "HH:MM"),
        ({"days": {"funday": None}}, "funday"),
        ({"days": {"mon": {"opens": "09:00"}}}, "closes"),
    ):
        answer = await client.put(url, json=bad)
        assert answer.status_code == 422 and words in answer.text, answer.text
    assert (await client.put("/api/v1/stores/S-404/trading-hours", json={"days": None})).status_code == 404

    cleared = await client.put(url, json={"days": None})
    assert cleared.status_code == 200 and cleared.json()["set"] is False


async def test_quiet_stores_names_the_reason(db, client):
    ams = await store(db, "S-AMS", tz="Europe/Amsterdam")
    nyc = await store(db, "S-NYC", tz="America/New_York")
    open_all = await store(db, "S-24", tz="UTC")
    # Monday 30 November 2026 15:00 UTC: 16:00 in Amsterdam, 10:00 in New York.
    at = datetime(2026, 11, 30, 15, 0, tzinfo=UTC)
    day = {"opens": "09:00", "closes": "12:00"}
    for code in ("S-AMS", "S-NYC"):
        await client.put(f"/api/v1/stores/{code}/trading-hours", json={"days": {"mon": day}})
    async with db.sessionmaker() as s:
        assert await quiet_stores(s, [ams, nyc, open_all], at) == {ams: "outside trading hours"}
    made = await client.post(
        API,
        json={
            "scope": "fleet",
            "title": "Provider upgrade",
            "weekdays": ["mon"],
            "start_time": "10:00",
            "duration_minutes": 30,
        },
    )
    assert made.status_code == 201, made.text
    async with db.sessionmaker() as s:
        quiet = await quiet_stores(s, [ams, nyc, open_all], at)
        everywhere = await stores_in_maintenance(s, at)
    # The fleet's weekly window runs at 10:00 local in each store: New York's now.
    assert quiet == {ams: "outside trading hours", nyc: "maintenance: Provider upgrade"}
    assert set(everywhere) == {nyc}


async def test_writes_need_an_admin(db, client):
    """Maintenance windows and trading hours are an admin's (app.auth.rules); support reads."""
    await store(db, "S-1")
    await add_user(db, "viewer", "viewer")
    await add_user(db, "op", "operator")  # the old name of support
    await add_user(db, "root", "admin")
    client._transport.app.state.user_count_cache = [0.0, 0]
    now = utcnow()
    window = {"store": "S-1", "title": "x", "starts_at": iso(now), "ends_at": iso(now + timedelta(hours=1))}
    assert (await client.post(API, json=window)).status_code == 401
    refused = await client.post(API, json=window, headers=basic("viewer"))
    assert refused.status_code == 403 and refused.json() == {"detail": "viewer is not an admin"}
    assert (await client.post(API, json=window, headers=basic("op"))).status_code == 403
    assert (await client.get(API, headers=basic("viewer"))).status_code == 200
    made = await client.post(API, json=window, headers=basic("root"))
    assert made.status_code == 201 and made.json()["created_by"] == "root"
    assert (await client.delete(f"{API}/{made.json()['id']}", headers=basic("viewer"))).status_code == 403
    hours = {"days": None}
    assert (
        await client.put("/api/v1/stores/S-1/trading-hours", json=hours, headers=basic("viewer"))
    ).status_code == 403
