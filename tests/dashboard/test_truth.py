"""The dashboard says only what was observed (issue 15): not-monitored terminals, the provider
account actually used, why a terminal is down when its store's network is, the overview's
store states and reasons, and the top bar's exact jump."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update

from app.db import Database, utcnow
from app.inventory.models import Monitor, Store, Terminal
from app.monitoring.status import refresh_status
from app.providers.models import ProviderAccount
from tests.dashboard.fleet import import_sample, seed_states, set_terminal_state
from tests.html import dom, one, text, texts

HX = {"HX-Request": "true"}


@pytest.fixture
async def fleet(db: Database):
    await import_sample(db)
    return await seed_states(db)


async def _bare_terminals(db: Database) -> list[str]:
    """Terminals with nothing of their own to check (no LAN address, no cloud connection)."""
    has_monitor = select(Monitor.id).where(Monitor.terminal_id == Terminal.id).exists()
    async with db.sessionmaker() as s:
        return list(await s.scalars(select(Terminal.poiid).where(~has_monitor).order_by(Terminal.poiid)))


def _tile(d, name: str) -> str:
    return text(one(d, f"#summary .tile-{name} .n"))


async def test_a_terminal_with_nothing_to_check_is_not_monitored_anywhere(client, db, fleet):
    bare = [p for p in await _bare_terminals(db) if p not in fleet["down"]]
    assert bare, "the sample fleet has terminals with nothing to check"
    poiid = bare[0]
    d = dom(await client.get(f"/terminals/{poiid}"))
    assert one(d, "#tstatus").cssselect('[data-state="none"]') and not one(d, "#tstatus").cssselect(
        '[data-state="up"]'
    )
    assert "Not monitored" in text(one(d, "#tstatus"))
    assert "nothing about the terminal itself can be checked" in text(one(d, '[data-why="not_monitored"]'))
    # Never 100 % uptime: the history says it was not monitored.
    assert "not monitored" in text(one(d, 'span.kv[data-uptime="24h"]'))
    assert not d.cssselect('span.kv[data-uptime="24h"] span.uptime')

    # The overview counts it apart from "up".
    o = dom(await client.get("/"))
    async with db.sessionmaker() as s:
        n_none = len(list(await s.scalars(select(Terminal.id).where(Terminal.status == "none"))))
        n_up = len(list(await s.scalars(select(Terminal.id).where(Terminal.status == "up"))))
    assert n_none > 0 and _tile(o, "none") == str(n_none) and _tile(o, "up") == str(n_up)

    # The terminals list filters by it.
    r = dom(await client.get("/terminals", params={"status": "none", "per": "200"}))
    assert poiid in texts(r, 'tr[id^="t-"] td.mono a')


async def test_check_connection_of_a_not_monitored_terminal_says_so(client, db, fleet):
    poiid = (await _bare_terminals(db))[-1]
    r = await client.post(f"/terminals/{poiid}/check", headers=HX)
    assert r.status_code == 200
    verdict = one(dom(r), "section.verdict")
    assert verdict.get("data-verdict") == "not_monitored"
    assert text(one(verdict, "h3")) == "Nothing about this terminal can be checked"
    assert "Terminal is connected" not in text(verdict)
    # Codes stay in the report; the page says the title in words.
    assert "[" not in text(one(verdict, ".diagnosis")) and "TermPulse connection check" in text(
        one(verdict, "#report-text")
    )


async def test_the_provider_account_used_is_shown(client, db, fleet):
    poiid = fleet["all"][0]
    async with db.sessionmaker() as s:
        await s.execute(
            update(Terminal)
            .where(Terminal.poiid == poiid)
            .values(provider="adyen", integration="cloud", cloud_enabled=True, provider_account_id=None)
        )
        await s.commit()
    d = dom(await client.get(f"/terminals/{poiid}"))
    assert "No adyen provider account is set up" in text(one(d, "#cloud"))

    async with db.sessionmaker() as s:
        s.add(ProviderAccount(name="Adyen EU", kind="adyen", environment="test", api_key_hint="…abcd"))
        await s.commit()
    d = dom(await client.get(f"/terminals/{poiid}"))
    cloud = text(one(d, "#cloud"))
    assert "No adyen provider account" not in cloud and "No provider account is linked" not in cloud
    assert "Adyen EU" in cloud and "the default adyen account" in cloud
    assert "Adyen EU" in text(one(d, "[data-provider-account]"))


async def _network_down(db: Database, code: str) -> tuple[str, str]:
    """The store's TCP check to the processor down (port filtered), its terminals' own checks up."""
    async with db.sessionmaker() as s:
        store_id = await s.scalar(select(Store.id).where(Store.code == code))
        m = await s.scalar(
            select(Monitor)
            .where(Monitor.store_id == store_id, Monitor.terminal_id.is_(None), Monitor.kind == "tcp")
            .order_by(Monitor.target.desc())  # the Ingenico port 7003 before the processor's 443
            .limit(1)
        )
        m.state, m.state_since, m.last_diagnosis = "down", utcnow(), "tcp_timeout"
        m.last_detail = "connect timed out after 5.0 s"
        await s.flush()
        await refresh_status(s, utcnow(), network_changed_store_ids=[store_id])
        await s.commit()
        poiid = await s.scalar(
            select(Terminal.poiid)
            .where(Terminal.store_id == store_id, Terminal.id.in_(select(Monitor.terminal_id)))
            .order_by(Terminal.poiid)
            .limit(1)
        )
        return poiid, m.target


async def test_a_terminal_down_because_of_its_store_network_says_why(client, db, fleet):
    poiid, target = await _network_down(db, "S-0001")
    d = dom(await client.get(f"/terminals/{poiid}"))
    assert one(d, "#tstatus").cssselect('[data-state="down"]')
    why = one(d, '[data-why="store_network"]')
    assert why.get("data-reason") == "tcp_timeout"
    assert "Connection timed out (filtered)" in text(why) and target in text(why)
    # "What is checked" shows the store network's rows, the down one included.
    rows = one(d, "#sec-monitors").cssselect('tr[data-scope="store network"]')
    assert any("row-down" in (r.get("class") or "") and target in text(r) for r in rows)
    # Its own checks are up: it is not their row that is red.
    assert all("row-down" not in (r.get("class") or "") for r in d.cssselect('tr[data-scope="terminal"]'))


async def test_overview_store_states_and_reasons(client, db, fleet):
    _, target = await _network_down(db, "S-0001")
    assert target.endswith(":7003")
    unpaired = fleet["all"][40]
    await set_terminal_state(db, unpaired, "down", diagnosis="http_401")
    d = dom(await client.get("/"))
    rows = {text(one(tr, "th .mono")): tr for tr in d.cssselect('tr[id^="s-"]')}
    s1 = rows["S-0001"]
    assert s1.get("data-store-status") == "cannot_pay" and "Cannot take cards" in text(s1)
    assert text(one(s1, ".reason")) == "Port 7003 blocked"
    # Worst first: a store that cannot take cards leads.
    first = d.cssselect('tr[id^="s-"]')[0]
    assert first.get("data-store-status") == "cannot_pay"
    # Each row has its history strip (12 hours).
    assert len(one(s1, ".hstrip").cssselect("i")) == 12
    # The unpaired terminal's store says it in words.
    async with db.sessionmaker() as s:
        code = await s.scalar(select(Store.code).join(Terminal).where(Terminal.poiid == unpaired))
    reason = text(one(rows[code], ".reason"))
    assert "1 terminal unpaired" in reason
    assert rows[code].get("data-store-status") in ("degraded", "cannot_pay")
    # Sortable: by store code, both ways.
    asc = texts(dom(await client.get("/", params={"sort": "store"})), 'tr[id^="s-"] th .mono')
    desc = texts(dom(await client.get("/", params={"sort": "store", "dir": "desc"})), 'tr[id^="s-"] th .mono')
    assert asc == sorted(asc) and desc == sorted(desc, reverse=True) and asc[0] == "S-0001"


async def test_top_search_opens_an_exact_poiid_serial_or_store(client, db, fleet):
    poiid = fleet["all"][3]
    async with db.sessionmaker() as s:
        serial = await s.scalar(select(Terminal.serial).where(Terminal.poiid == poiid))
    pasted = "  " + poiid.replace("-", "\u2011") + " "  # a non-breaking hyphen from a chat
    for q in (poiid, poiid.lower(), pasted, serial):
        r = await client.get("/terminals", params={"q": q, "go": "1"})
        assert r.status_code == 303 and r.headers["location"] == f"/terminals/{poiid}", q
    r = await client.get("/terminals", params={"q": "s-0002", "go": "1"})
    assert r.status_code == 303 and r.headers["location"] == "/stores/S-0002"
    # A partial match is a search, as is the page's own filter (no go).
    r = await client.get("/terminals", params={"q": poiid[:6], "go": "1"})
    assert r.status_code == 200
    r = await client.get("/terminals", params={"q": poiid})
    assert r.status_code == 200
    # The top bar's form asks for the jump.
    d = dom(await client.get("/"))
    assert one(d, "form.quick-search").cssselect('input[name="go"][value="1"]')


async def test_the_cloud_panel_follows_the_live_status(client, db, fleet):
    """S-0021's story: the header turns Disconnected, and so must the Cloud connection panel."""
    async with db.sessionmaker() as s:
        poiid = await s.scalar(
            select(Terminal.poiid)
            .where(Terminal.cloud_enabled.is_(True), Terminal.id.in_(select(Monitor.terminal_id)))
            .order_by(Terminal.poiid)
            .limit(1)
        )
        await s.execute(update(Terminal).where(Terminal.poiid == poiid).values(cloud_state="connected"))
        await s.commit()
    d = dom(await client.get(f"/terminals/{poiid}"))
    assert one(d, "#cloud #cloud-line").get("data-ws") == "connected"
    poll = one(d, "#tstatus").get("hx-get")
    async with db.sessionmaker() as s:
        await s.execute(update(Terminal).where(Terminal.poiid == poiid).values(cloud_state="disconnected"))
        await s.commit()
    r = await client.get(poll, headers=HX)
    assert r.status_code == 200
    p = dom(r)
    assert one(p, "#tstatus").cssselect('[data-ws="disconnected"]')
    line = one(p, "#cloud-line")
    assert line.get("hx-swap-oob") == "true" and line.get("data-ws") == "disconnected"
    assert "no live connection" in text(line)


@pytest.mark.parametrize("direction", ["asc", "desc"])
async def test_terminals_list_puts_not_monitored_last_across_pages(client, fleet, direction):
    seen: list[tuple[str, str]] = []
    for page in range(1, 6):
        params = {"per": "50", "page": str(page), "dir": direction}
        d = dom(await client.get("/terminals", params=params))
        for tr in d.cssselect('tr[id^="t-"]'):
            seen.append((tr.get("id"), one(tr, ".status-cell [data-state]").get("data-state")))
    assert len(seen) == 246 and len({i for i, _ in seen}) == 246  # every terminal once
    states = [s for _, s in seen]
    bare = [i for i, s in enumerate(states) if s == "none"]
    assert bare, "the sample fleet has terminals not monitored"
    if direction == "asc":
        assert bare == list(range(len(states) - len(bare), len(states)))  # all at the end
        assert states[0] == "down"
    else:
        assert bare == list(range(len(bare)))  # first when reversed


async def test_the_lists_uptime_says_how_much_of_the_day_it_rests_on(client, db, fleet):
    """100 % of half an hour is not 100 % of a day: the cell says what it rests on."""
    async with db.sessionmaker() as s:
        up = list(
            await s.scalars(select(Terminal.poiid).where(Terminal.status == "up").order_by(Terminal.id))
        )
    watched, partly = up[:2]
    now = utcnow()
    await set_terminal_state(db, partly, "unknown", at=now - timedelta(hours=23))
    await set_terminal_state(db, partly, "up", at=now - timedelta(minutes=30))

    async def cell(poiid: str):
        d = dom(await client.get("/terminals", params={"q": poiid}))
        return one(d, 'tr[id^="t-"] td[data-label="Uptime 24 h"]')

    whole = await cell(watched)
    assert text(whole) == "100 %" and not whole.cssselect(".coverage")
    part = await cell(partly)
    assert text(one(part, ".uptime")) == "100 %"
    share = float(one(part, ".coverage").get("data-monitored"))
    assert 1.4 / 24 < share < 1.6 / 24  # its first hour and its last half hour
    assert text(one(part, ".coverage")).startswith("of 1 h 30")
    assert one(part, "span[title]").get("title").startswith("Monitored 1 h 30")
