"""Notifications page (channels masked, Send test with its result, rules with errors by their
field), Incidents page and incident timeline, acknowledge, /api/v1/incidents, the export, and
incidents on the store page."""

from __future__ import annotations

import csv
import io

from openpyxl import load_workbook
from sqlalchemy import select

from app.alerts.models import AlertChannel, Incident
from app.alerts.runner import AlertRunner
from tests.alerts.conftest import add_channel, add_rule, alert_settings, failing_store, run_until
from tests.html import dom, one, text, texts


async def test_channels_are_masked_and_errors_sit_by_their_field(db, client, settings, webhook):
    page = await client.get("/admin/notifications")
    assert page.status_code == 200 and "No channel yet" in page.text
    bad = await client.post("/admin/notifications/channels", data={"name": "", "url": "nonsense://x"})
    assert bad.status_code == 422
    doc = dom(bad)
    assert "enter a name" in text(one(doc, "#e-name"))
    assert "Apprise does not understand this URL" in text(one(doc, "#e-url"))
    secret_url = f"json://ops:s3cr3t-token@127.0.0.1:{webhook.port}/hook"
    ok = await client.post("/admin/notifications/channels", data={"name": "Ops", "url": secret_url})
    assert ok.status_code == 303
    page = await client.get("/admin/notifications")
    assert "s3cr3t-token" not in page.text and "ops:" not in page.text  # masked: host only
    assert texts(dom(page), "#channels td.mono") == ["json://127.0.0.1/••••"]
    async with db.sessionmaker() as s:
        stored = (await s.execute(select(AlertChannel))).scalar_one()
    assert b"s3cr3t" not in stored.url_encrypted  # encrypted at rest
    again = await client.post("/admin/notifications/channels", data={"name": "Ops", "url": secret_url})
    assert again.status_code == 422 and "exists already" in text(one(dom(again), "#e-name"))


async def test_send_test_shows_the_delivery_result(db, client, settings, webhook, webhook2):
    webhook2.fail_first = 100
    good = await add_channel(db, settings, "Good", webhook.url())
    broken = await add_channel(db, settings, "Broken", webhook2.url())
    page = await client.post(f"/admin/notifications/channels/{good}/test")
    result = text(one(dom(page), f"#channel-{good} .test-result"))
    assert result.startswith("Delivered") and webhook.delivered[0]["title"] == "[TermPulse] Test notification"
    page = await client.post(f"/admin/notifications/channels/{broken}/test")
    result = text(one(dom(page), f"#channel-{broken} .test-result"))
    assert result.startswith("Not delivered") and "500" in result


async def test_rules_form(db, client, settings, webhook):
    channel = await add_channel(db, settings, "Ops", webhook.url())
    bad = await client.post(
        "/admin/notifications/rules",
        data={
            "name": "North",
            "match": "region",
            "value": "",
            "channel_id": str(channel),
            "min_duration_s": "x",
        },
    )
    assert bad.status_code == 422
    doc = dom(bad)
    assert "enter the region" in text(one(doc, "#e-value"))
    assert "whole number" in text(one(doc, "#e-min_duration_s"))
    ok = await client.post(
        "/admin/notifications/rules",
        data={
            "name": "North",
            "match": "region",
            "value": "North",
            "channel_id": str(channel),
            "min_duration_s": "60",
            "remind_every_s": "900",
        },
    )
    assert ok.status_code == 303
    row = texts(dom(await client.get("/admin/notifications")), "#rules tbody td")
    assert row[:5] == ["North", "region North", "Ops", "60 s", "900 s"]


async def _incident(db, webhook) -> tuple[int, AlertRunner]:
    settings = alert_settings(db)
    channel = await add_channel(db, settings, "Ops webhook", webhook.url())
    await add_rule(db, "everything", channel)
    await failing_store(db, "S-0100", terminals=4, down=2, region="North")
    runner = AlertRunner(settings, db)
    await run_until(runner, lambda: webhook.delivered)
    async with db.sessionmaker() as s:
        return (await s.execute(select(Incident.id))).scalar_one(), runner


async def test_incidents_page_timeline_and_acknowledge(db, client, webhook):
    iid, _ = await _incident(db, webhook)
    page = await client.get("/incidents")
    assert page.status_code == 200
    row = one(dom(page), f"#incident-{iid}")
    assert "S-0100 Shop S-0100: 2 of 4 terminals down" in text(row) and "Open" in text(row)
    assert (await client.get("/incidents?days=9")).status_code == 422
    assert "one of" in text(one(dom(await client.get("/incidents?days=9")), "#e-days"))
    assert one(dom(await client.get("/incidents?q=nomatch")), ".empty") is not None
    detail = await client.get(f"/incidents/{iid}")
    timeline = texts(dom(detail), "#timeline li")
    assert timeline[0].endswith(
        "S-0100 Shop S-0100: 2 of 4 terminals down, 2 checks failing (Connection refused)"
    )
    assert any("Sent to Ops webhook" in t for t in timeline)
    attempts = texts(dom(detail), "#notifications .attempts li")
    assert len(attempts) == 1 and " ok (" in attempts[0]
    ack = await client.post(f"/incidents/{iid}/ack")
    assert ack.status_code == 303
    detail = await client.get(ack.headers["location"])
    assert "Acknowledged by setup" in " ".join(texts(dom(detail), "#timeline li"))
    again = await client.post(f"/incidents/{iid}/ack")
    assert again.headers["location"].endswith("m=already")
    assert (await client.get("/incidents/999999")).status_code == 404


async def test_incidents_api(db, client, webhook):
    iid, _ = await _incident(db, webhook)
    listed = (await client.get("/api/v1/incidents?state=open")).json()
    assert [(i["id"], i["kind"], i["store_code"], i["terminals_down"]) for i in listed] == [
        (iid, "store", "S-0100", 2)
    ]
    bad = await client.get("/api/v1/incidents?state=maybe")
    assert bad.status_code == 422 and bad.json()["detail"][0]["field"] == "state"
    one_ = (await client.get(f"/api/v1/incidents/{iid}")).json()
    assert one_["events"][0]["kind"] == "opened"
    assert one_["notifications"][0]["attempts"][0]["ok"] is True
    acked = await client.post(f"/api/v1/incidents/{iid}/ack")
    assert acked.status_code == 200 and acked.json()["acked_by"] == "setup"
    assert (await client.post(f"/api/v1/incidents/{iid}/ack")).status_code == 409
    assert (await client.post("/api/v1/incidents/424242/ack")).status_code == 404


async def test_incidents_export_csv_and_xlsx(db, client, webhook):
    iid, _ = await _incident(db, webhook)
    response = await client.get("/incidents/export.csv?state=all")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(response.text)))
    assert rows[0][:4] == ["Incident", "Kind", "State", "Store"]
    assert rows[1][:6] == [str(iid), "store", "open", "S-0100", "Shop S-0100", "North"]
    assert rows[1][7] == "Connection refused"
    response = await client.get("/incidents/export.xlsx")
    wb = load_workbook(io.BytesIO(response.content))
    assert wb.sheetnames == ["Incidents", "About"]
    assert wb["Incidents"].cell(2, 4).value == "S-0100"
    assert (await client.get("/incidents/export.csv?kind=bogus")).status_code == 422


async def test_store_page_shows_its_incidents(db, client, webhook):
    iid, _ = await _incident(db, webhook)
    page = await client.get("/stores/S-0100")
    assert page.status_code == 200
    section = one(dom(page), "#store-incidents")
    assert f"#{iid} S-0100 Shop S-0100: 2 of 4 terminals down" in text(section)


async def test_rotate_secret_re_encrypts_channel_urls(db, settings, webhook):
    from app.alerts.channels import decrypt_url
    from tests.cli import termpulse_async

    await add_channel(db, settings, "Ops", webhook.url())
    new_key = "a-new-secret-key-for-rotation-0123456789"
    env = {
        "TERMPULSE_DATABASE_URL": db.url,
        "TERMPULSE_SECRET_KEY": new_key,
        "TERMPULSE_OLD_SECRET_KEY": settings.secret_key,
    }
    done = await termpulse_async("rotate-secret", env=env)
    assert done.returncode == 0, done.stderr
    assert "1 other stored secret(s) (alert channel URLs) re-encrypted" in done.stdout
    async with db.sessionmaker() as s:
        stored = (await s.execute(select(AlertChannel))).scalar_one()
    assert decrypt_url(new_key, stored.url_encrypted) == webhook.url()


async def test_incidents_list_refreshes_itself_as_a_fragment(db, client, webhook):
    from tests.html import is_fragment

    iid, _ = await _incident(db, webhook)
    page = await client.get("/incidents?state=open")
    live = one(dom(page), "#results")
    assert live.get("hx-get") == "/incidents?state=open" and live.get("hx-trigger") == "every 10s"
    fragment = await client.get("/incidents?state=open", headers={"HX-Request": "true"})
    assert is_fragment(fragment) and f"incident-{iid}" in fragment.text
