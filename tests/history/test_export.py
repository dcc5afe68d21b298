"""`termpulse export` as a user runs it (CSV and XLSX, bad input exit 2), the /history page,
its downloads and /api/v1/uptime, on both databases."""

from __future__ import annotations

import csv
import io

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


def _sections(text: str) -> tuple[list[dict], list[dict]]:
    summary, days = text.replace("\r\n", "\n").split("\n\n")
    return list(csv.DictReader(io.StringIO(summary))), list(csv.DictReader(io.StringIO(days)))


async def test_cli_csv_to_stdout(fleet):
    done = await termpulse(
        fleet, "--scope", "store", "--id", "S-7001", "--from", "2025-03-04", "--to", "2025-03-05"
    )
    assert done.returncode == 0, done.stderr
    summary, days = _sections(done.stdout)
    by_poiid = {r["poiid"]: r for r in summary}
    assert set(by_poiid) == {POIID, "P400-111222444"}
    r1 = by_poiid[POIID]
    assert (r1["from"], r1["to"], r1["down_s"], r1["outages"], r1["longest_outage_s"]) == (
        "2025-03-04",
        "2025-03-05",
        "5400.0",
        "1",
        "5400.0",
    )
    assert float(r1["up_s"]) == 2 * 86400 - 5400
    assert float(r1["uptime_pct"]) == pytest.approx(100 * (1 - 5400 / 172800), abs=1e-3)
    r2 = by_poiid["P400-111222444"]
    assert (r2["unknown_s"], r2["down_s"], r2["uptime_pct"]) == ("3600.0", "0.0", "100.0")
    # Paris days: 2025-03-04 starts at 03-03 23:00 UTC
    d1 = [d for d in days if d["poiid"] == POIID]
    assert [d["date"] for d in d1] == ["2025-03-04", "2025-03-05"]
    assert [d["down_s"] for d in d1] == ["5400.0", "0.0"]


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
    assert head[:2] == ("poiid", "label") and "uptime_pct" in head
    by_poiid = {r[0]: dict(zip(head, r, strict=True)) for r in rows[1:]}
    assert len(by_poiid) == 3
    r1 = by_poiid[POIID]
    assert (r1["down_s"], r1["outages"], r1["store_code"], r1["timezone"]) == (
        5400,
        1,
        "S-7001",
        "Europe/Paris",
    )
    assert r1["uptime_pct"] == pytest.approx(100 * (1 - 5400 / 86400), abs=1e-3)
    assert by_poiid["P400-999"]["store_code"] == "'=S-7002"  # not a formula
    days = list(wb["Per day"].iter_rows(values_only=True))
    assert days[0][6] == "date" and len(days) == 4


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
    summary, _ = _sections(got.text)
    assert len(summary) == 1 and summary[0]["terminals"] == "2" and summary[0]["down_s"] == "5400.0"
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
