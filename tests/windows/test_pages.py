"""The Maintenance page, its form (errors by their field), a store's trading hours form, and
the wrench on stores in maintenance (overview rows and the store page). Both databases."""

from __future__ import annotations

from datetime import timedelta

from app.db import utcnow
from tests.history.helpers import monitor, store, terminal
from tests.html import dom, is_fragment, one, select, text, texts
from tests.test_auth import add_user, basic


async def test_page_lists_windows_and_creates_one(db, client):
    await store(db, "S-1", tz="Europe/Amsterdam", region="North")
    page = await client.get("/maintenance")
    assert page.status_code == 200
    doc = dom(page)
    assert "Maintenance" in texts(doc, "nav[aria-label=Main] a")
    assert text(one(doc, "#no-windows")).startswith("No maintenance window")

    made = await client.post(
        "/maintenance",
        data={
            "title": "Refit",
            "scope": "store",
            "store": "S-1",
            "kind": "one_off",
            "starts_at": (utcnow() - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M"),
            "ends_at": (utcnow() + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M"),
        },
    )
    assert made.status_code == 303 and made.headers["location"] == "/maintenance"
    weekly = await client.post(
        "/maintenance",
        data={
            "title": "Sunday nights",
            "scope": "region",
            "region": "North",
            "kind": "weekly",
            "weekdays": ["sun"],
            "start_time": "22:00",
            "duration_minutes": "480",
            "starts_at": "ignored for weekly",
        },
    )
    assert weekly.status_code == 303, weekly.text
    doc = dom(await client.get("/maintenance"))
    rows = select(doc, "#windows-table tbody tr")
    assert text(one(rows[0], "th")).split("\n")[0].strip() == "Refit"
    assert "active" in rows[0].classes and "In maintenance" in text(one(rows[0], ".window-now"))
    assert "Sun 22:00 for 8 h" in text(rows[1]) and "each store's local time" in text(rows[1])

    window_id = rows[0].get("data-window")
    ended = await client.post(f"/maintenance/{window_id}/end", headers={"HX-Request": "true"})
    assert ended.status_code == 204 and ended.headers["HX-Redirect"] == "/maintenance"
    doc = dom(await client.get("/maintenance"))
    assert len(select(doc, "#windows-table tbody tr")) == 1
    assert "Refit" in text(one(doc, "#ended-h").getparent())


async def test_form_shows_errors_by_their_field(db, client):
    await store(db, "S-1")
    answer = await client.post(
        "/maintenance",
        data={
            "title": "",
            "scope": "store",
            "store": "S-404",
            "kind": "one_off",
            "starts_at": "2030-01-02T10:00",
            "ends_at": "2030-01-02T09:00",
        },
        headers={"HX-Request": "true"},
    )
    assert answer.status_code == 422 and is_fragment(answer)
    doc = dom(answer)
    assert one(doc, "#f-title").get("aria-invalid") == "true"
    assert "at least 1 character" in text(one(doc, "#e-title"))
    assert "after the start" in text(one(doc, "#e-ends_at"))

    unknown = dom(
        await client.post(
            "/maintenance",
            data={
                "title": "x",
                "scope": "store",
                "store": "S-404",
                "kind": "one_off",
                "starts_at": "2030-01-02T10:00",
                "ends_at": "2030-01-02T12:00",
            },
        )
    )
    assert text(one(unknown, "#e-store")) == "no store S-404"
    assert one(unknown, "#f-store").get("value") == "S-404"  # what was typed stays

    weekly = dom(
        await client.post(
            "/maintenance",
            data={
                "title": "x",
                "scope": "fleet",
                "kind": "weekly",
                "start_time": "25:00",
                "duration_minutes": "30",
            },
        )
    )
    assert "weekday" in text(one(weekly, "#e-weekdays"))
    weekly = dom(
        await client.post(
            "/maintenance",
            data={
                "title": "x",
                "scope": "fleet",
                "kind": "weekly",
                "weekdays": "mon",
                "start_time": "25:00",
                "duration_minutes": "30",
            },
        )
    )
    assert "HH:MM" in text(one(weekly, "#e-start_time"))
    assert one(weekly, "input[name=weekdays][value=mon]").get("checked") is not None


async def test_viewers_read_but_do_not_write(db, client):
    await store(db, "S-1")
    await add_user(db, "viewer", "viewer")
    client._transport.app.state.user_count_cache = [0.0, 0]
    page = await client.get("/maintenance", headers=basic("viewer"))
    assert page.status_code == 200 and not select(dom(page), "#window-form")
    refused = await client.post("/maintenance", data={"title": "x"}, headers=basic("viewer"))
    assert refused.status_code == 403


async def test_trading_hours_form(db, client):
    await store(db, "S-1", tz="Europe/Amsterdam")
    doc = dom(await client.get("/stores/S-1/trading-hours"))
    assert "always trading" in text(one(doc, "#hours-state"))
    bad = await client.post(
        "/stores/S-1/trading-hours",
        data={
            "mon_opens": "09:00",
            "mon_closes": "",
            "tue_opens": "9am",
            "tue_closes": "17:00",
            "action": "save",
        },
    )
    assert bad.status_code == 422
    doc = dom(bad)
    assert "both the opening and the closing time" in text(one(doc, "#e-mon"))
    assert "HH:MM" in text(one(doc, "#e-tue"))
    assert one(doc, "#f-tue_opens").get("value") == "9am"

    good = await client.post(
        "/stores/S-1/trading-hours",
        data={"mon_opens": "09:00", "mon_closes": "18:00", "fri_opens": "18:00", "fri_closes": "02:00"},
    )
    assert good.status_code == 303
    doc = dom(await client.get("/stores/S-1/trading-hours"))
    assert one(doc, "#f-fri_closes").get("value") == "02:00" and one(doc, "#f-sun_opens").get("value") == ""
    api = (await client.get("/api/v1/stores/S-1/trading-hours")).json()
    assert api["days"]["fri"] == {"opens": "18:00", "closes": "02:00"} and api["days"]["sun"] is None
    cleared = await client.post("/stores/S-1/trading-hours", data={"action": "clear"})
    assert cleared.status_code == 303
    assert (await client.get("/api/v1/stores/S-1/trading-hours")).json()["set"] is False


async def test_wrench_on_stores_in_maintenance(db, client):
    sid = await store(db, "S-1", tz="Europe/Amsterdam")
    await monitor(db, sid, await terminal(db, sid), initial="up")
    other = await store(db, "S-2")
    await monitor(db, other, await terminal(db, other), initial="up")
    now = utcnow()
    made = await client.post(
        "/api/v1/maintenance-windows",
        json={
            "store": "S-1",
            "title": "Router swap",
            "starts_at": now.isoformat(),
            "ends_at": (now + timedelta(hours=2)).isoformat(),
        },
    )
    assert made.status_code == 201
    overview = dom(await client.get("/"))
    wrench = one(overview, f"#s-{sid} .wrench")
    assert wrench.get("title").startswith("In maintenance until ") and wrench.get("title").endswith(
        ": Router swap"
    )
    assert not select(overview, f"#s-{other} .wrench")
    store_page = dom(await client.get("/stores/S-1"))
    assert "Router swap" in one(store_page, "h1 .wrench").get("title")
    assert one(store_page, "a[href='/stores/S-1/trading-hours']") is not None
