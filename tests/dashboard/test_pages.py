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
from tests.html import classes, dom, is_fragment, is_full, one, text, texts

HX = {"HX-Request": "true"}


def state_of(row) -> str:
    """A store or terminal row's state: its row-<state> class."""
    [state] = [c.removeprefix("row-") for c in classes(row) if c.startswith("row-")]
    return state


def store_rows(d) -> list:
    return d.cssselect('tr[id^="s-"]')


def terminal_rows(d) -> list:
    return d.cssselect('tr[id^="t-"]')


def tile(d, name: str) -> tuple[str, str]:
    """A summary bar tile: (its number, its words)."""
    t = one(d, f"#summary .tile-{name}")
    return text(one(t, ".n")), text(one(t, ".w"))


def poller_url(d, poller: str) -> str:
    return one(d, poller).get("hx-get")


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
    empty = one(dom(r), ".empty")
    assert text(one(empty, "h2")) == "No stores yet" and empty.cssselect('a[href="/admin/import"]')


async def test_overview_full_page_and_fragment(client, fleet):
    r = await client.get("/")
    assert r.status_code == 200 and is_full(r)
    assert r.headers["vary"] == "HX-Request"
    d = dom(r)
    one(d, "#summary")
    # Worst first: the stores with down terminals lead the table.
    rows = [state_of(tr) for tr in store_rows(one(d, "#stores-body"))]
    assert rows[:3] == ["down", "down", "down"] and "up" in rows
    first_up = rows.index("up")
    assert all(state != "down" for state in rows[first_up:])
    # Terminals down count and stores affected in the summary bar.
    assert tile(d, "down") == ("6", "terminals down")
    # Stores by what matters to a shop: cannot take cards, or degraded (3 stores have down terminals).
    nopay, degraded = tile(d, "nopay"), tile(d, "degraded")
    assert nopay[1] == "stores cannot take cards" and degraded[1] == "degraded, of 60 stores"
    assert int(nopay[0]) + int(degraded[0]) == 3

    f = await client.get("/", headers=HX)
    assert f.status_code == 200 and is_fragment(f)
    fd = dom(f)
    one(fd, "#summary")
    assert not fd.cssselect("header")


async def test_overview_asks_for_a_provider_account_when_cloud_terminals_need_one(client, db, fleet):
    async with db.sessionmaker() as s:
        await s.execute(update(Terminal).values(cloud_enabled=False))
        await s.commit()
    assert "Add a provider account" not in text(dom(await client.get("/")))
    async with db.sessionmaker() as s:
        await s.execute(
            update(Terminal)
            .where(Terminal.poiid == fleet["all"][0])
            .values(provider="adyen", cloud_enabled=True, integration="cloud")
        )
        await s.commit()
    r = await client.get("/")
    assert "Add a provider account" in texts(dom(r), 'a[href="/admin/providers"]')


async def test_overview_filters_by_region_and_search(client, fleet):
    r = await client.get("/", params={"region": "West"})
    regions = [text(tr.find("td")) for tr in store_rows(dom(r))]  # the column after the store
    assert regions and set(regions) == {"West"}
    r = await client.get("/", params={"q": "s-0003"}, headers=HX)
    codes = texts(dom(r), 'tr[id^="s-"] th .mono')
    assert "S-0003" in codes and "S-0004" not in codes
    r = await client.get("/", params={"q": "no-such-store"}, headers=HX)
    assert "No store matches" in text(one(dom(r), "#stores-body"))


async def test_overview_live_sends_only_changes(client, db, fleet):
    poll = poller_url(dom(await client.get("/")), "#live")
    assert poll.startswith("/live/overview?")
    quiet = await client.get(poll, headers=HX)
    assert quiet.status_code == 200
    q = dom(quiet)
    assert one(q, "#banner").get("hx-swap-oob") == "true"  # the banner slot is always cleared
    assert not q.cssselect('tr[id^="s-"][hx-swap-oob]') and not q.cssselect("#summary[hx-swap-oob]")

    # An up terminal of a store already down goes down too: counts change, order does not.
    async with db.sessionmaker() as s:
        store_id = await s.scalar(select(Terminal.store_id).where(Terminal.poiid == fleet["down"][0]))
        other = await s.scalar(
            select(Terminal.poiid).where(Terminal.store_id == store_id, Terminal.status == "up")
        )
    await set_terminal_state(db, other, "down", diagnosis="tcp_refused")
    c = dom(await client.get(poll, headers=HX))
    assert c.cssselect(f'tr#s-{store_id}[hx-swap-oob="true"]') or c.cssselect("#stores-body[hx-swap-oob]")
    assert one(c, "#summary").get("hx-swap-oob") == "true"
    assert tile(c, "down") == ("7", "terminals down")


async def test_overview_live_reorders_when_a_store_goes_down(client, db, fleet):
    poll = poller_url(dom(await client.get("/")), "#live")
    await set_terminal_state(db, fleet["all"][-1], "down", diagnosis="tcp_timeout")
    r = await client.get(poll, headers=HX)
    assert one(dom(r), "#stores-body").get("hx-swap-oob") == "true"


# --- store page ------------------------------------------------------------------------------


async def test_store_page(client, fleet):
    r = await client.get("/stores/S-0001")
    assert r.status_code == 200 and is_full(r)
    page = text(dom(r))
    assert "Network checks" in page
    assert "temterminalsnar01.icloud.ingenico.com:7003" in page  # fullsteam-ingenico profile
    assert "Move5000-203097992" in texts(dom(r), 'tr[id^="t-"] td.mono a')
    f = await client.get("/stores/S-0001", headers=HX)
    assert f.status_code == 200 and is_fragment(f)
    assert "Move5000-203097992" in texts(dom(f), 'tr[id^="t-"] td.mono a')
    missing = await client.get("/stores/S-9999")
    assert missing.status_code == 404 and "No store" in text(dom(missing))


# --- terminals list --------------------------------------------------------------------------


async def test_terminals_list_full_and_fragment(client, fleet):
    r = await client.get("/terminals")
    assert r.status_code == 200 and is_full(r)
    assert r.headers["vary"] == "HX-Request"
    d = dom(r)
    bar = one(d, ".result-bar")
    assert text(one(bar, "strong")) == "246" and text(bar).startswith("246 terminals")
    rows = terminal_rows(one(d, "#terminals-body"))
    assert len(rows) == 50
    # Default order: down first, longest down first.
    states = [state_of(tr) for tr in rows]
    assert states[:6] == ["down"] * 6 and states[6] == "unknown"
    heads = texts(d, "#terminals-table thead th")
    for word in ("Websocket", "LAN", "Last seen", "Uptime 24 h"):
        assert any(h.startswith(word) for h in heads), (word, heads)
    f = await client.get("/terminals", headers=HX)
    assert is_fragment(f) and len(terminal_rows(dom(f))) == 50


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
        cells = dom(r).cssselect(f'tr[id^="t-"] .ws-cell [data-ws="{state}"]')
        assert cells
        for cell in cells:  # words for screen readers, a tooltip for the eye
            assert cell.get("aria-label") == f"Websocket: {word}"
            assert cell.get("title").startswith("Cloud connection")
    r = await client.get("/terminals", params={"ws": "disconnected"}, headers=HX)
    assert len(terminal_rows(dom(r))) == 1


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
    d = dom(r)
    n = len(terminal_rows(d))
    if expect is not None:
        assert n == expect, params
    else:
        assert n > 0
    if expect == 0:
        assert "No terminal matches" in text(one(d, "#terminals-body"))


@pytest.mark.parametrize("sort", ["poiid", "model", "store", "label", "status", "ws", "last_seen"])
async def test_terminals_sorting(client, fleet, sort):
    asc = await client.get("/terminals", params={"sort": sort, "per": "200"}, headers=HX)
    desc = await client.get("/terminals", params={"sort": sort, "dir": "desc", "per": "200"}, headers=HX)
    assert asc.status_code == desc.status_code == 200
    a, d = dom(asc), dom(desc)
    assert a.cssselect('th[aria-sort="ascending"]') and d.cssselect('th[aria-sort="descending"]')
    if sort == "poiid":
        links = a.cssselect('tr[id^="t-"] td.mono > a')
        poiids = [link.get("href").removeprefix("/terminals/") for link in links]
        assert len(poiids) == 200 and poiids == sorted(poiids)


async def test_terminals_pagination_and_url(client, fleet):
    p1 = await client.get("/terminals", params={"sort": "poiid", "per": "25"})
    p2 = await client.get("/terminals", params={"sort": "poiid", "per": "25", "page": "2"})
    first = [tr.get("id") for tr in terminal_rows(dom(p1))]
    second = [tr.get("id") for tr in terminal_rows(dom(p2))]
    assert len(first) == len(second) == 25 and not set(first) & set(second)
    assert "showing 26\u201350" in text(one(dom(p2), ".result-bar"))  # an en dash
    # Links keep the filters and the sort; defaults are left out.
    assert dom(p2).cssselect('a[href="/terminals?sort=poiid&page=3&per=25"]')
    last = await client.get("/terminals", params={"page": "999"})
    assert last.status_code == 200 and "showing 201\u2013246" in text(one(dom(last), ".result-bar"))


async def test_terminals_live_returns_changed_rows_only(client, db, fleet):
    page = dom(await client.get("/terminals", params={"sort": "poiid"}))
    poll = poller_url(page, "#tlive")
    assert poll.startswith("/terminals/live?")
    quiet = await client.get(poll, headers=HX)
    assert not dom(quiet).cssselect('tr[id^="t-"][hx-swap-oob]')
    target = next(tr.get("id") for tr in terminal_rows(page) if state_of(tr) == "up")
    async with db.sessionmaker() as s:
        poiid = await s.scalar(select(Terminal.poiid).where(Terminal.id == int(target.removeprefix("t-"))))
    await set_terminal_state(db, poiid, "down", diagnosis="tcp_timeout")
    r = dom(await client.get(poll, headers=HX))
    rows = [(tr.get("id"), state_of(tr)) for tr in r.cssselect('tr[id^="t-"][hx-swap-oob="true"]')]
    assert rows == [(target, "down")]
    [uptime] = one(r, f"tr#{target}").cssselect("span.uptime")  # the uptime came along
    assert re.fullmatch(r"\d+\.\d\d %", text(uptime))
    # The new poller carries the new signature: asking again finds nothing new.
    again = dom(await client.get(poller_url(r, "#tlive"), headers=HX))
    oob = again.cssselect('[hx-swap-oob="true"]')
    assert not [e for e in oob if any(c.startswith("row-") for c in classes(e))]


async def test_terminals_empty_fleet_points_to_import(client):
    r = await client.get("/terminals")
    assert r.status_code == 200
    empty = one(dom(r), ".empty")
    assert text(one(empty, "h2")) == "No terminals yet" and empty.cssselect('a[href="/admin/import"]')


# --- terminal detail -------------------------------------------------------------------------


async def test_terminal_detail(client, fleet):
    poiid = fleet["all"][0]
    r = await client.get(f"/terminals/{poiid}")
    assert r.status_code == 200 and is_full(r)
    d = dom(r)
    page = text(d)
    for words in (
        "About this terminal",
        "Check connection",
        "Address changes",
        "127.1.1.9:2000",
        "Recent checks",
        "State changes",
    ):
        assert words in page, words
    # A LAN-only terminal: no Cloud connection panel, and Check connection is a panel of its own.
    assert not d.cssselect("#cloud") and d.cssselect("#check #check-btn")
    assert texts(d, "figure.timeline figcaption") == ["Status, last 24 hours", "Status, last 7 days"]
    assert d.cssselect("svg polyline.line")  # the latency chart
    # Its labels are HTML beside the SVG (they never scale with it); buckets on the clock.
    assert not d.cssselect("figure.chart svg text") and len(d.cssselect("figure.chart .chart-y span")) == 3
    titles = [t.text for t in d.cssselect("figure.chart rect.bucket title")]
    assert titles and all(re.match(r"(\d\d \w{3} )?\d\d:(00|15|30|45)\u2013\d\d:\d\d UTC", t) for t in titles)
    f = await client.get(f"/terminals/{poiid}", headers=HX)
    assert f.status_code == 200 and is_fragment(f) and "About this terminal" in text(dom(f))
    assert (await client.get("/terminals/NOPE-1")).status_code == 404


async def test_terminal_detail_of_a_down_terminal_shows_history(client, fleet):
    poiid = fleet["down"][0]
    d = dom(await client.get(f"/terminals/{poiid}"))
    assert d.cssselect("figure.timeline rect.seg-down") and "Connection timed out (filtered)" in text(d)
    [uptime] = d.cssselect('span.kv[data-uptime="24h"]')
    assert re.fullmatch(r"9\d\.\d\d %", text(one(uptime, "span.uptime")))
    assert text(one(uptime, ".coverage")) == "(monitored all of 24 h)"


async def test_terminal_status_poll_is_204_until_it_changes(client, db, fleet):
    poiid = fleet["all"][0]
    poll = poller_url(dom(await client.get(f"/terminals/{poiid}")), "#tstatus")
    assert poll.startswith(f"/terminals/{poiid}/status?sig=")
    assert (await client.get(poll, headers=HX)).status_code == 204
    await set_terminal_state(db, poiid, "down", diagnosis="tcp_refused")
    r = await client.get(poll, headers=HX)
    assert r.status_code == 200 and one(dom(r), "#tstatus").cssselect('[data-state="down"]')


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
    d = dom(r)
    verdict = one(d, "section.verdict")
    assert text(one(verdict, "h3")) == "Terminal is disconnected"
    assert text(one(verdict, ".diagnosis .diag-title strong")) == "Connection refused"  # the diagnosis title
    assert "Copy report" in text(verdict)
    report = one(d, "pre#report-text").text_content()
    assert poiid in report and "FAILED" in report and "What to do" in report
    badges = one(d, "#tstatus")
    assert "head-badges" in classes(badges) and badges.get("hx-swap-oob") == "true"
    # The page's recent checks follow: the manual result is listed, marked as manual.
    checks = one(d, "section#sec-checks")
    assert "panel" in classes(checks) and checks.get("hx-swap-oob") == "true"
    assert "manual" in texts(checks, "span.note")


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
        assert r.status_code == 503 and "The database cannot be reached" in text(dom(r))
        poll = await http.get("/terminals/live?known=1:x", headers=HX)
        assert poll.status_code == 200 and poll.headers["HX-Reswap"] == "none"
        banner = one(dom(poll), "#banner")
        assert banner.get("hx-swap-oob") == "true" and "The database cannot be reached" in text(banner)
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
    verdict = one(dom(r), "section.verdict")
    assert verdict.get("data-verdict") == "could_not_check" and "Could not check" in text(one(verdict, "h3"))
    assert text(one(verdict, ".meta strong")) == "why:"


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
    assert [text(span) for span in dom(r).cssselect("span")].count("store network") == 4
