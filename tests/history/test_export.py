"""`termpulse export` as a user runs it (CSV and XLSX, bad input exit 2), the /history page,
its downloads and /api/v1/uptime, on both databases."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta

import pytest

from tests.cli import termpulse_async
from tests.history.helpers import at, monitor, store, terminal
from tests.html import dom, is_fragment, one, text, texts

POIID = "P400-111222333"


async def termpulse(db, *args):
    """`termpulse export ARGS...`, in process (tests/cli.py)."""
    return await termpulse_async("export", *args, env={"TERMPULSE_DATABASE_URL": db.url})


@pytest.fixture
async def fleet(db):
    """Store S-7001 (Europe/Paris, UTC+1 in March) with two terminals; T1 down 02:00-03:30 UTC
    on 2025-03-04, T2 unknown 10:00-11:00 UTC; store S-7002 (UTC, region South) always up."""
    s1 = await store(db, "S-7001", tz="Europe/Paris", region="North")
    s2 = await store(db, "=S-7002", region="South")  # a name a spreadsheet would run as a formula
    t1 = await terminal(db, s1, POIID)
    t2 = await terminal(db, s1, "P400-111222444")
    t3 = await terminal(db, s2, "P400-999")
    await monitor(db, s1, t1, [(at(-48), "up"), (at(2), "down"), (at(3, 30), "up")])
    await monitor(db, s1, t2, [(at(-48), "up"), (at(10), "unknown"), (at(11), "up")])
    await monitor(db, s2, t3, [(at(-48), "up")])
    return db


def _table(text: str) -> list[dict]:
    """A CSV download: one table, no blank line in it."""
    assert "\r\n\r\n" not in text
    return list(csv.DictReader(io.StringIO(text)))


async def test_cli_csv_to_stdout(fleet):
    args = ("--scope", "store", "--id", "S-7001", "--from", "2025-03-04", "--to", "2025-03-05")
    done = await termpulse(fleet, *args)
    assert done.returncode == 0, done.stderr
    summary = _table(done.stdout)
    by_poiid = {r["POIID"]: r for r in summary}
    assert set(by_poiid) == {POIID, "P400-111222444"}
    r1 = by_poiid[POIID]
    assert (r1["From"], r1["To"], r1["down_s"], r1["Outages"], r1["longest_outage_s"]) == (
        "2025-03-04",
        "2025-03-05",
        "5400.0",
        "1",
        "5400.0",
    )
    # people's columns: h:mm and percentages; machines' columns: seconds
    assert (r1["Down (h:mm)"], r1["Longest outage (h:mm)"], r1["Up (h:mm)"]) == ("1:30", "1:30", "46:30")
    assert (r1["Monitored %"], r1["period_s"]) == ("100.0", "172800.0")
    assert float(r1["up_s"]) == 2 * 86400 - 5400
    assert float(r1["Uptime %"]) == pytest.approx(100 * (1 - 5400 / 172800), abs=1e-3)
    r2 = by_poiid["P400-111222444"]
    assert (r2["unknown_s"], r2["down_s"], r2["Uptime %"]) == ("3600.0", "0.0", "100.000")
    assert r2["Monitored %"] == f"{100 * (1 - 3600 / 172800):.1f}"  # the unknown hour was not monitored
    # the per-day rows: their own download. Paris days: 2025-03-04 starts at 03-03 23:00 UTC
    done = await termpulse(fleet, *args, "--per-day")
    assert done.returncode == 0, done.stderr
    d1 = [d for d in _table(done.stdout) if d["POIID"] == POIID]
    assert [d["Date"] for d in d1] == ["2025-03-04", "2025-03-05"]
    assert [d["down_s"] for d in d1] == ["5400.0", "0.0"]
    assert [d["period_s"] for d in d1] == ["86400.0", "86400.0"]


async def test_cli_xlsx(fleet, tmp_path):
    from openpyxl import load_workbook

    out = tmp_path / "fleet.xlsx"
    done = await termpulse(
        fleet,
        "--scope",
        "fleet",
        "--from",
        "2025-03-04",
        "--to",
        "2025-03-04",
        "--format",
        "xlsx",
        "-o",
        str(out),
    )
    assert done.returncode == 0, done.stderr
    wb = load_workbook(out)
    assert wb.sheetnames == ["Summary", "Per day", "About"]
    rows = list(wb["Summary"].iter_rows(values_only=True))
    head = rows[0]
    assert head[:2] == ("POIID", "Label") and "Uptime %" in head and "down_s" not in head
    by_poiid = {r[0]: dict(zip(head, r, strict=True)) for r in rows[1:]}
    assert len(by_poiid) == 3
    r1 = by_poiid[POIID]
    assert (r1["Outages"], r1["Store"], r1["Time zone"]) == (1, "S-7001", "Europe/Paris")
    assert r1["Down (h:mm)"] == timedelta(seconds=5400)  # a duration, shown as [h]:mm
    assert r1["Uptime %"] == pytest.approx(1 - 5400 / 86400)  # a fraction, shown as a percentage
    assert by_poiid["P400-999"]["Store"] == "'=S-7002"  # not a formula
    days = list(wb["Per day"].iter_rows(values_only=True))
    assert days[0][6] == "Date" and len(days) == 4


async def test_xlsx_formats_for_people(fleet, tmp_path):
    """Read back with openpyxl: number formats, real dates, widths, frozen header, autofilter;
    store rows count store outages and say how much was monitored."""
    from openpyxl import load_workbook

    s1 = next(r for r in (await _store_rows(fleet)) if r["Store"] == "S-7001")
    # T1 down 02:00-03:30 while T2 is up: one store outage; the CSV store row says so too
    assert (s1["Outages"], s1["Terminals"]) == ("1", "2")

    out = tmp_path / "stores.xlsx"
    done = await termpulse(
        fleet,
        "--by",
        "store",
        "--from",
        "2025-03-04",
        "--to",
        "2025-03-05",
        "--format",
        "xlsx",
        "-o",
        str(out),
    )
    assert done.returncode == 0, done.stderr
    wb = load_workbook(out)
    ws = wb["Summary"]
    head = [c.value for c in ws[1]]
    assert head[:6] == ["Store", "Store name", "Region", "Time zone", "From", "To"]
    assert ws.freeze_panes == "A2" and ws.auto_filter.ref == f"A1:{ws.cell(1, len(head)).column_letter}3"
    assert all(c.font.bold for c in ws[1])
    col = {name: i + 1 for i, name in enumerate(head)}
    row = next(r for r in ws.iter_rows(min_row=2) if r[0].value == "S-7001")

    def cell(name):
        return row[col[name] - 1]

    assert cell("From").value == datetime(2025, 3, 4) and cell("From").number_format == "yyyy-mm-dd"
    assert cell("To").value == datetime(2025, 3, 5)
    assert cell("Uptime %").number_format == "0.000%"
    assert cell("Uptime %").value == pytest.approx(1 - 5400 / (2 * 2 * 86400 - 3600))
    assert cell("Monitored %").number_format == "0.0%"
    assert cell("Monitored %").value == pytest.approx(1 - 3600 / (2 * 2 * 86400))
    assert cell("Down (h:mm)").number_format == "[h]:mm" and cell("Down (h:mm)").value == timedelta(hours=1.5)
    assert cell("Outages").value == 1 and cell("Terminals").value == 2
    assert cell("Store name").number_format == "General" and cell("Time zone").value == "Europe/Paris"
    for name, width in (("Store name", 26), ("Uptime %", 11), ("Paused/maintenance (h:mm)", 16)):
        assert ws.column_dimensions[cell(name).column_letter].width == width
    days = wb["Per day"]
    assert days.freeze_panes == "A2" and days.auto_filter.ref.startswith("A1:")
    day_head = [c.value for c in days[1]]
    first = next(r for r in days.iter_rows(min_row=2) if r[0].value == "S-7001")
    assert first[day_head.index("Date")].value == datetime(2025, 3, 4)
    assert first[day_head.index("Date")].number_format == "yyyy-mm-dd"
    about = dict(wb["About"].iter_rows(values_only=True))
    assert "store" in about["Outages"] and "up or down" in about["Monitored %"]


async def _store_rows(db):
    done = await termpulse(db, "--by", "store", "--from", "2025-03-04", "--to", "2025-03-05")
    assert done.returncode == 0, done.stderr
    return _table(done.stdout)


async def test_store_outages_are_store_faults_not_terminal_faults_summed(db):
    """A store network fault taking both terminals down is one store outage; two overlapping
    terminal outages merge; the region sums its stores."""
    s = await store(db, "S-8001", region="East")
    t1 = await terminal(db, s)
    t2 = await terminal(db, s)
    net = await monitor(db, s, None, [(at(-48), "up"), (at(1), "down"), (at(2), "up")], kind="dns")
    assert net
    await monitor(db, s, t1, [(at(-48), "up"), (at(5), "down"), (at(6), "up")])
    await monitor(db, s, t2, [(at(-48), "up"), (at(5, 30), "down"), (at(7), "up")])
    other = await store(db, "S-8002", region="East")
    t3 = await terminal(db, other)
    await monitor(db, other, t3, [(at(-48), "up"), (at(9), "down"), (at(9, 10), "up")])
    rows = {r["Store"]: r for r in await _store_rows(db)}
    # 01:00-02:00 (both terminals, one fault) and 05:00-07:00 (two overlapping): 2 outages
    assert rows["S-8001"]["Outages"] == "2" and rows["S-8001"]["Longest outage (h:mm)"] == "2:00"
    assert rows["S-8001"]["Down (h:mm)"] == "4:30"  # terminal-time: 1 + 1 + 1 + 1.5 hours
    done = await termpulse(db, "--by", "region", "--from", "2025-03-04", "--to", "2025-03-05")
    (region,) = _table(done.stdout)
    assert (region["Region"], region["Outages"], region["Terminals"]) == ("East", "3", "3")
    done = await termpulse(db, "--by", "store", "--per-day", "--from", "2025-03-04", "--to", "2025-03-05")
    per_day = {(r["Store"], r["Date"]): r["Outages"] for r in _table(done.stdout)}
    assert per_day[("S-8001", "2025-03-04")] == "2" and per_day[("S-8001", "2025-03-05")] == "0"


async def test_cli_bad_input_exit_2(fleet, tmp_path):
    cases = [
        (
            ("--scope", "store", "--id", "S-0404", "--from", "2025-03-04", "--to", "2025-03-05"),
            "No store with code",
        ),
        (
            ("--scope", "terminal", "--id", "NOPE-1", "--from", "2025-03-04", "--to", "2025-03-05"),
            "No terminal",
        ),
        (("--scope", "store", "--id", "S-7001", "--from", "2025-02-30", "--to", "2025-03-05"), "--from"),
        (
            ("--scope", "store", "--id", "S-7001", "--from", "2025-03-05", "--to", "2025-03-04"),
            "before the start",
        ),
        (("--scope", "store", "--id", "S-7001", "--from", "2025-03-04"), "--to"),
        (("--scope", "store", "--from", "2025-03-04", "--to", "2025-03-05"), "Enter a store code"),
        (("--from", "2025-03-04", "--to", "2025-03-05", "--format", "xlsx"), "-o FILE"),
        (
            ("--from", "2025-03-04", "--to", "2025-03-05", "-o", str(tmp_path / "no" / "x.csv")),
            "does not exist",
        ),
    ]
    for args, message in cases:
        done = await termpulse(fleet, *args)
        assert done.returncode == 2, (args, done.stderr)
        assert message in done.stderr and done.stdout == "" and "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []


async def test_page_api_and_downloads(fleet, client):
    page = await client.get(
        "/history",
        params={
            "scope": "store",
            "id": "s-7001",
            "period": "custom",
            "from": "2025-03-04",
            "to": "2025-03-04",
        },
    )
    assert page.status_code == 200
    d = dom(page)
    assert "S-7001" in text(d) and d.cssselect("svg.hist-bars")
    assert "Download CSV" in texts(d, 'a[href^="/history/export.csv?"]')
    # the breakdown lists the store's terminals
    assert POIID in texts(d, 'a[href^="/history?scope=terminal&"]')
    fleet_page = await client.get("/history")  # last 24 h of the fleet: nothing observed then, still a page
    assert fleet_page.status_code == 200

    api = await client.get(
        "/api/v1/uptime", params={"scope": "terminal", "id": POIID, "from": "2025-03-04", "to": "2025-03-04"}
    )
    assert api.status_code == 200
    body = api.json()
    assert body["total"]["down_s"] == 5400 and body["total"]["outages"] == 1
    assert [d["date"] for d in body["days"]] == ["2025-03-04"]
    region = (
        await client.get(
            "/api/v1/uptime",
            params={"scope": "region", "id": "north", "from": "2025-03-04", "to": "2025-03-05"},
        )
    ).json()
    assert region["total"]["terminals"] == 2 and region["groups"][0]["id"] == "S-7001"

    q = {
        "scope": "store",
        "id": "S-7001",
        "period": "custom",
        "from": "2025-03-04",
        "to": "2025-03-04",
        "by": "store",
    }
    got = await client.get("/history/export.csv", params=q)
    assert got.status_code == 200 and got.headers["content-type"].startswith("text/csv")
    assert 'filename="uptime_S-7001' in got.headers["content-disposition"]
    summary = _table(got.text)
    assert len(summary) == 1 and summary[0]["Terminals"] == "2" and summary[0]["down_s"] == "5400.0"
    per_day = await client.get("/history/export.csv", params={**q, "table": "days"})
    assert per_day.status_code == 200 and "per-day.csv" in per_day.headers["content-disposition"]
    assert [r["Date"] for r in _table(per_day.text)] == ["2025-03-04"]
    xlsx = await client.get("/history/export.xlsx", params=q)
    assert xlsx.status_code == 200 and xlsx.content[:2] == b"PK"


@pytest.mark.parametrize(
    "params, field, message",
    [
        ({"scope": "store", "id": "S-0404"}, "id", "No store with code"),
        ({"scope": "terminal", "id": "X-1"}, "id", "No terminal with POIID"),
        ({"period": "custom", "from": "2025-13-01", "to": "2025-03-01"}, "from", "is not a date"),
        ({"period": "custom", "from": "2025-03-05", "to": "2025-03-01"}, "to", "before the start"),
        ({"period": "custom", "from": "", "to": ""}, "from", "Enter the start date"),
        ({"period": "yesterday"}, "period", "Unknown period"),
        ({"scope": "galaxy"}, "scope", "Unknown scope"),
        ({"scope": "region", "id": "Atlantis"}, "id", "No store is in region"),
    ],
)
async def test_bad_input_is_4xx_with_the_message_by_the_field(fleet, client, params, field, message):
    page = await client.get("/history", params=params)
    assert page.status_code == 422
    assert message in text(one(dom(page), f"#e-{field}"))
    frag = await client.get("/history", params=params, headers={"HX-Request": "true"})
    assert frag.status_code == 422 and is_fragment(frag) and message in text(one(dom(frag), f"#e-{field}"))
    for path in ("/history/export.csv", "/history/export.xlsx"):
        bad = await client.get(path, params=params)
        assert bad.status_code == 422 and message in text(one(dom(bad), f"#e-{field}"))  # the page again
    api = await client.get("/api/v1/uptime", params=params)
    assert api.status_code == 422
    assert any(message in d["message"] for d in api.json()["detail"])


def test_calendar_presets():
    from datetime import date

    from app.history.params import calendar_period

    today = date(2025, 3, 5)  # a Wednesday
    assert (calendar_period("this_month", today).first, calendar_period("this_month", today).last) == (
        date(2025, 3, 1),
        today,
    )
    last_month = calendar_period("last_month", today)
    assert (last_month.first, last_month.last) == (date(2025, 2, 1), date(2025, 2, 28))
    last_week = calendar_period("last_week", today)
    assert (last_week.first, last_week.last) == (date(2025, 2, 24), date(2025, 3, 2))  # Mon-Sun
    january = calendar_period("last_month", date(2025, 1, 31))
    assert (january.first, january.last) == (date(2024, 12, 1), date(2024, 12, 31))


async def test_page_table_of_stores_and_downloads_from_the_form(fleet, client):
    page = await client.get("/history", params={"period": "last_month", "by": "store"})
    assert page.status_code == 200
    d = dom(page)
    # the fleet's table shows stores, not regions, when asked
    assert {"S-7001", "'=S-7002"} & set(texts(d, 'a[href^="/history?scope=store&"]'))
    assert "Last month" in texts(d, "#h-period option[selected]")
    links = d.cssselect(".hist-downloads a")
    # the links read the form when clicked (rows per, period), Show pressed or not: static/dashboard.js
    assert all(a.get("data-export-form") == "history-form" for a in links)
    assert any("table=days" in a.get("href") for a in links)
    frag = await client.get(
        "/history",
        params={"scope": "store", "id": "S-7001", "from": "2025-03-04", "to": "2025-03-04"},
        headers={"HX-Request": "true"},
    )
    assert frag.status_code == 200 and is_fragment(frag)
    assert "Monitored97.9 % of the period" in text(one(dom(frag), ".hist-figures"))  # T2 1 h unknown of 48
    got = await client.get("/history/export.csv", params={"period": "this_month", "by": "region"})
    assert got.status_code == 200 and _table(got.text)[0].keys() >= {"Region", "Monitored %", "Uptime %"}
