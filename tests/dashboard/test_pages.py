"""Every dashboard page and fragment: full page for a browser, the block for htmx, on both
databases; filters, sorting, paging, live polls and Check connection."""

from __future__ import annotations

import re
from datetime import UTC

import pytest
from sqlalchemy import select, update

from app.db import Database
from app.inventory.models import Monitor, Store, Terminal
from tests.dashboard.fleet import import_sample, seed_states, set_terminal_state

HX = {"HX-Request": "true"}


def is_full(body: str) -> bool:
    return body.lstrip().lower().startswith("<!doctype html>")


@pytest.fixture
async def fleet(db: Database):
    await import_sample(db)
    return await seed_states(db)


async def _id(db: Database, poiid: str) -> int:
    async with db.sessionmaker() as s:
        return await s.scalar(select(Terminal.id).where(Terminal.poiid == poiid))


# --- overview --------------------------------------------------------------------------------


async def test_overview_empty_points_to_import(client):
    r = await client.get("/")
    assert r.status_code == 200
    assert "No stores yet" in r.text and 'href="/admin/import"' in r.text


async def test_overview_full_page_and_fragment(client, fleet):
    r = await client.get("/")
    assert r.status_code == 200 and is_full(r.text)
    assert r.headers["vary"] == "HX-Request"
    assert 'id="summary"' in r.text and 'id="stores-body"' in r.text
    # Worst first: the stores with down terminals lead the table.
    rows = re.findall(r'<tr id="s-\d+"[^>]*class="row-(\w+)"', r.text)
    assert rows[:3] == ["down", "down", "down"] and "up" in rows
    first_up = rows.index("up")
    assert all(state != "down" for state in rows[first_up:])
    # Terminals down count and stores affected in the summary bar.
    assert re.search(r'<span class="n">6</span><span class="w">terminals down</span>', r.text)
    assert re.search(r'<span class="n">3</span><span class="w">of 60 stores affected</span>', r.text)

    f = await client.get("/", headers=HX)
    assert f.status_code == 200 and not is_full(f.text)
    assert 'id="summary"' in f.text and "<header" not in f.text


async def test_overview_asks_for_a_provider_account_when_cloud_terminals_need_one(client, db, fleet):
    async with db.sessionmaker() as s:
        await s.execute(update(Terminal).values(cloud_enabled=False))
        await s.commit()
    assert "Add a provider account" not in (await client.get("/")).text
    async with db.sessionmaker() as s:
        await s.execute(
            update(Terminal)
            .where(Terminal.poiid == fleet["all"][0])
            .values(provider="adyen", cloud_enabled=True, integration="cloud")
        )
        await s.commit()
    r = await client.get("/")
    assert 'href="/admin/providers">Add a provider account' in r.text


async def test_overview_filters_by_region_and_search(client, fleet):
    r = await client.get("/", params={"region": "West"})
    regions = re.findall(r"</a></th>\s*<td>(\w+)</td>", r.text)
    assert regions and set(regions) == {"West"}
    r = await client.get("/", params={"q": "s-0003"}, headers=HX)
    assert "S-0003" in r.text and "S-0004" not in r.text
    r = await client.get("/", params={"q": "no-such-store"}, headers=HX)
    assert "No store matches" in r.text


async def test_overview_live_sends_only_changes(client, db, fleet):
    page = (await client.get("/")).text
    poll = re.search(r'hx-get="(/live/overview[^"]+)"', page).group(1).replace("&amp;", "&")
    quiet = await client.get(poll, headers=HX)
    assert quiet.status_code == 200
    assert 'hx-swap-oob="true"' in quiet.text  # the banner slot is always cleared
    assert (
        not re.search(r'<tr id="s-\d+" hx-swap-oob', quiet.text)
        and 'id="summary" hx-swap-oob' not in quiet.text
    )

    # An up terminal of a store already down goes down too: counts change, order does not.
    async with db.sessionmaker() as s:
        store_id = await s.scalar(select(Terminal.store_id).where(Terminal.poiid == fleet["down"][0]))
        other = await s.scalar(
            select(Terminal.poiid).where(Terminal.store_id == store_id, Terminal.status == "up")
        )
    await set_terminal_state(db, other, "down", diagnosis="tcp_refused")
    changed = await client.get(poll, headers=HX)
    assert (
        f'<tr id="s-{store_id}" hx-swap-oob="true"' in changed.text
        or 'id="stores-body" hx-swap-oob' in changed.text
    )
    assert 'id="summary" hx-swap-oob="true"' in changed.text
    assert re.search(r'<span class="n">7</span><span class="w">terminals down</span>', changed.text)


async def test_overview_live_reorders_when_a_store_goes_down(client, db, fleet):
    page = (await client.get("/")).text
    poll = re.search(r'hx-get="(/live/overview[^"]+)"', page).group(1).replace("&amp;", "&")
    await set_terminal_state(db, fleet["all"][-1], "down", diagnosis="tcp_timeout")
    r = await client.get(poll, headers=HX)
    assert 'id="stores-body" hx-swap-oob="true"' in r.text


# --- store page ------------------------------------------------------------------------------


async def test_store_page(client, fleet):
    r = await client.get("/stores/S-0001")
    assert r.status_code == 200 and is_full(r.text)
    assert "Network checks" in r.text
    assert "temterminalsnar01.icloud.ingenico.com:7003" in r.text  # fullsteam-ingenico profile
    assert "Move5000-203097992" in r.text
    f = await client.get("/stores/S-0001", headers=HX)
    assert f.status_code == 200 and not is_full(f.text) and "Move5000-203097992" in f.text
    missing = await client.get("/stores/S-9999")
    assert missing.status_code == 404 and "No store" in missing.text


# --- terminals list --------------------------------------------------------------------------


async def test_terminals_list_full_and_fragment(client, fleet):
    r = await client.get("/terminals")
    assert r.status_code == 200 and is_full(r.text)
    assert r.headers["vary"] == "HX-Request"
    assert "246</strong> terminals" in r.text
    assert len(re.findall(r'<tr id="t-\d+"', r.text)) == 50
    # Default order: down first, longest down first.
    states = re.findall(r'<tr id="t-\d+" data-sig="[^"]*" class="row-(\w+)"', r.text)
    assert states[:6] == ["down"] * 6 and states[6] == "unknown"
    for word in ("Websocket", "LAN", "Last seen", "Uptime 24 h"):
        assert word in r.text
    f = await client.get("/terminals", headers=HX)
    assert not is_full(f.text) and len(re.findall(r'<tr id="t-\d+"', f.text)) == 50


async def test_terminals_websocket_column_icons_and_text(client, db, fleet):
    async with db.sessionmaker() as s:
        ids = list(await s.scalars(select(Terminal.id).order_by(Terminal.id).limit(3)))
        for i, state in zip(ids, ("connected", "disconnected", "not_enabled"), strict=True):
            await s.execute(
                update(Terminal)
                .where(Terminal.id == i)
                .values(cloud_state=state, cloud_enabled=state != "not_enabled")
            )
        await s.commit()
    for state, word in (
        ("connected", "Connected"),
        ("disconnected", "Disconnected"),
        ("not_enabled", "Not enabled"),
    ):
        r = await client.get("/terminals", params={"ws": state})
        assert f'data-ws="{state}"' in r.text
        assert f'aria-label="Websocket: {word}"' in r.text  # words for screen readers, a tooltip for the eye
        assert 'title="Cloud connection' in r.text
    r = await client.get("/terminals", params={"ws": "disconnected"}, headers=HX)
    assert len(re.findall(r'<tr id="t-\d+"', r.text)) == 1


@pytest.mark.parametrize(
    "params, expect",
    [
        ({"status": "down"}, 6),
        ({"status": "unknown"}, 4),
        ({"region": "West", "status": "down"}, None),
        ({"store": "S-0001"}, 4),
        ({"provider": "ingenico", "per": "200"}, None),
        ({"model": "A920"}, None),
        ({"q": "Move5000-203097992"}, 1),
        ({"q": "move5000\u2011203097992"}, 1),  # a non-breaking hyphen pasted from a PDF
        ({"q": "203097992"}, 1),  # serial
        ({"q": "S-0001"}, 4),  # store code
        ({"q": "zzz-nothing"}, 0),
    ],
)
async def test_terminals_filters(client, db, fleet, params, expect):
    r = await client.get("/terminals", params=params, headers=HX)
    assert r.status_code == 200
    n = len(re.findall(r'<tr id="t-\d+"', r.text))
    if expect is not None:
        assert n == expect, params
    else:
        assert n > 0
    if expect == 0:
        assert "No terminal matches" in r.text


@pytest.mark.parametrize("sort", ["poiid", "model", "store", "label", "status", "ws", "last_seen"])
async def test_terminals_sorting(client, fleet, sort):
    asc = await client.get("/terminals", params={"sort": sort, "per": "200"}, headers=HX)
    desc = await client.get("/terminals", params={"sort": sort, "dir": "desc", "per": "200"}, headers=HX)
    assert asc.status_code == desc.status_code == 200
    assert 'aria-sort="ascending"' in asc.text and 'aria-sort="descending"' in desc.text
    if sort == "poiid":
        poiids = re.findall(r'<td class="mono"><a href="/terminals/([^"]+)"', asc.text)
        assert poiids == sorted(poiids)


async def test_terminals_pagination_and_url(client, fleet):
    p1 = await client.get("/terminals", params={"sort": "poiid", "per": "25"})
    p2 = await client.get("/terminals", params={"sort": "poiid", "per": "25", "page": "2"})
    first = re.findall(r'<tr id="(t-\d+)"', p1.text)
    second = re.findall(r'<tr id="(t-\d+)"', p2.text)
    assert len(first) == len(second) == 25 and not set(first) & set(second)
    assert "showing 26\u201350" in p2.text  # an en dash
    # Links keep the filters and the sort; defaults are left out.
    assert 'href="/terminals?sort=poiid&amp;page=3&amp;per=25"' in p2.text
    last = await client.get("/terminals", params={"page": "999"})
    assert last.status_code == 200 and "showing 201\u2013246" in last.text


async def test_terminals_live_returns_changed_rows_only(client, db, fleet):
    page = (await client.get("/terminals", params={"sort": "poiid"})).text
    poll = re.search(r'hx-get="(/terminals/live[^"]+)"', page).group(1).replace("&amp;", "&")
    quiet = await client.get(poll, headers=HX)
    assert not re.search(r'<tr id="t-\d+" hx-swap-oob', quiet.text)
    target = re.findall(r'<tr id="t-(\d+)" data-sig="[^"]*" class="row-up"', page)[0]
    async with db.sessionmaker() as s:
        poiid = await s.scalar(select(Terminal.poiid).where(Terminal.id == int(target)))
    await set_terminal_state(db, poiid, "down", diagnosis="tcp_timeout")
    r = await client.get(poll, headers=HX)
    rows = re.findall(r'<tr id="t-(\d+)" hx-swap-oob="true"[^>]*class="row-(\w+)"', r.text)
    assert rows == [(target, "down")]
    assert re.search(r'<span class="uptime( low)?">\d+\.\d\d %</span>', r.text)  # the uptime came along
    # The new poller carries the new signature: asking again finds nothing new.
    again = re.search(r'hx-get="(/terminals/live[^"]+)"', r.text).group(1).replace("&amp;", "&")
    assert not re.search(r'hx-swap-oob="true"[^>]*class="row-', (await client.get(again, headers=HX)).text)


async def test_terminals_empty_fleet_points_to_import(client):
    r = await client.get("/terminals")
    assert r.status_code == 200 and "No terminals yet" in r.text and "/admin/import" in r.text


# --- terminal detail -------------------------------------------------------------------------


async def test_terminal_detail(client, fleet):
    poiid = fleet["all"][0]
    r = await client.get(f"/terminals/{poiid}")
    assert r.status_code == 200 and is_full(r.text)
    for text in (
        "About this terminal",
        "Cloud connection",
        "Check connection",
        "Address changes",
        "127.1.1.9:2000",
        "Status, last 24 hours",
        "Status, last 7 days",
        "Recent checks",
        "State changes",
        '<polyline class="line"',
    ):
        assert text in r.text, text
    f = await client.get(f"/terminals/{poiid}", headers=HX)
    assert f.status_code == 200 and not is_full(f.text) and "About this terminal" in f.text
    assert (await client.get("/terminals/NOPE-1")).status_code == 404


async def test_terminal_detail_of_a_down_terminal_shows_history(client, fleet):
    poiid = fleet["down"][0]
    r = await client.get(f"/terminals/{poiid}")
    assert "seg-down" in r.text and "Connection timed out (filtered)" in r.text
    assert re.search(r'Uptime 24 h</span> <span class="uptime( low)?">9\d\.\d\d %', r.text)


async def test_terminal_status_poll_is_204_until_it_changes(client, db, fleet):
    poiid = fleet["all"][0]
    page = (await client.get(f"/terminals/{poiid}")).text
    poll = re.search(r'hx-get="(/terminals/[^"]+/status\?sig=[^"]+)"', page).group(1)
    assert (await client.get(poll, headers=HX)).status_code == 204
    await set_terminal_state(db, poiid, "down", diagnosis="tcp_refused")
    r = await client.get(poll, headers=HX)
    assert r.status_code == 200 and 'data-state="down"' in r.text


async def test_check_connection_reports_disconnected_with_diagnosis(client, db, fleet):
    # S-0002 has no network profile; its terminals listen on 127.1.2.x where nothing runs.
    import socket

    with socket.socket() as sock:  # a loopback port where nothing listens (the demo may hold 127.1.x.y)
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    async with db.sessionmaker() as s:
        t = (
            await s.execute(
                select(Terminal.id, Terminal.poiid)
                .join(Store)
                .where(Store.code == "S-0002", Terminal.status == "up")
            )
        ).first()
        poiid = t.poiid
        await s.execute(
            update(Monitor).where(Monitor.terminal_id == t.id).values(target=f"127.0.0.1:{closed}")
        )
        await s.commit()
    r = await client.post(f"/terminals/{poiid}/check", headers=HX)
    assert r.status_code == 200
    assert "Terminal is disconnected" in r.text
    assert "Connection refused" in r.text  # the diagnosis title
    assert 'id="report-text"' in r.text and "Copy report" in r.text
    report = re.search(r'<pre id="report-text"[^>]*>(.*?)</pre>', r.text, re.S).group(1)
    assert poiid in report and "FAILED" in report and "What to do" in report
    assert 'id="tstatus" class="head-badges" hx-swap-oob="true"' in r.text
    # The page's recent checks follow: the manual result is listed, marked as manual.
    assert '<section id="sec-checks" class="panel" hx-swap-oob="true"' in r.text
    assert '<span class="note">manual</span>' in r.text


async def test_check_connection_unknown_terminal(client, fleet):
    assert (await client.post("/terminals/NOPE-1/check", headers=HX)).status_code == 404


# --- database down ---------------------------------------------------------------------------


async def test_database_down_shows_a_banner(settings):
    import httpx

    from app.main import create_app

    dead = Database("postgresql+asyncpg://postgres@127.0.0.1:1/none")
    app = create_app(settings, database=dead)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        r = await http.get("/terminals")
        assert r.status_code == 503 and "The database cannot be reached" in r.text
        poll = await http.get("/terminals/live?known=1:x", headers=HX)
        assert poll.status_code == 200 and poll.headers["HX-Reswap"] == "none"
        assert 'id="banner" hx-swap-oob="true"' in poll.text
    await dead.dispose()


async def test_check_connection_could_not_check_says_why(client, db, fleet):
    # A terminal with nothing to check (no LAN address, no cloud, store without network profile).
    async with db.sessionmaker() as s:
        t = (
            await s.execute(
                select(Terminal.id, Terminal.poiid)
                .join(Store)
                .where(Store.code == "S-0002")
                .order_by(Terminal.id)
            )
        ).first()
        await s.execute(Monitor.__table__.delete().where(Monitor.terminal_id == t.id))
        await s.commit()
    r = await client.post(f"/terminals/{t.poiid}/check", headers=HX)
    assert r.status_code == 200
    assert 'data-verdict="could_not_check"' in r.text and "Could not check" in r.text
    assert "why:" in r.text


def test_report_text_is_plain_evidence():
    from datetime import datetime

    from app.checks.result import step
    from app.dashboard.checkview import from_report
    from app.monitoring.manual import DiagnosisText, MonitorCheck, TerminalCheckReport
    from app.vocabulary import MonitorKind, Outcome, State, Verdict

    filtered = DiagnosisText(
        "tcp_timeout",
        "Connection timed out (filtered)",
        "Port 7003 is filtered.",
        "Allow outbound TCP 7003.",
        False,
    )
    host = "temterminalsnar01.icloud.ingenico.com"
    report = TerminalCheckReport(
        poiid="A920-1",
        terminal_id=1,
        store_code="S-0007",
        verdict=Verdict.DISCONNECTED,
        headline=Verdict.DISCONNECTED.headline,
        checked_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        duration_ms=5012.3,
        checks=[
            MonitorCheck(
                1,
                MonitorKind.DNS,
                host,
                "store network",
                Outcome.OK,
                2.1,
                [step("resolve", True, 2.1, "A 10.0.0.1")],
                "",
                None,
                State.UP,
            ),
            MonitorCheck(
                2,
                MonitorKind.TCP,
                f"{host}:7003",
                "store network",
                Outcome.FAIL,
                None,
                [step("connect", False, 5000.0, "timed out")],
                "timed out",
                filtered,
                State.DOWN,
            ),
        ],
        diagnosis=filtered,
    )
    view = from_report(report)
    text = view.report_text()
    assert view.headline == "Terminal is disconnected" and view.state == "down"
    assert "Time: 2026-01-02 03:04:05 UTC" in text and "Store: S-0007" in text
    assert f"TCP {host}:7003 [store network]: FAILED" in text
    assert "connect" in text and "5000.0 ms" in text
    assert text.rstrip().endswith("What to do: Allow outbound TCP 7003.")
    assert "<" not in text  # plain text, pasteable into any ticket


async def test_a_terminal_down_because_of_its_store_network_says_so(client, db, fleet):
    # S-0001's terminals: their own LAN checks up, the store's port 7003 check down.
    async with db.sessionmaker() as s:
        store_id = await s.scalar(select(Store.id).where(Store.code == "S-0001"))
        await s.execute(update(Monitor).where(Monitor.store_id == store_id).values(state="up"))
        await s.execute(
            update(Monitor)
            .where(Monitor.store_id == store_id, Monitor.terminal_id.is_(None), Monitor.target.like("%:7003"))
            .values(state="down")
        )
        await s.execute(update(Terminal).where(Terminal.store_id == store_id).values(status="down"))
        await s.commit()
    r = await client.get("/terminals", params={"store": "S-0001"}, headers=HX)
    assert r.text.count(">store network</span>") == 4
