"""The overview and the terminals list render their results once a second per process for
everyone with the same role and filters (app.dashboard.queries.shared_view): each role sees
its own, a change this process hears is never hidden behind an older render, and the page
whole carries exactly the results an htmx request gets. Both databases."""

import asyncio

import httpx
import pytest

from app.dashboard import queries
from tests.dashboard.fleet import import_sample, seed_states
from tests.dashboard.test_live import _ids, server, take_down  # noqa: F401 (the server fixture)
from tests.html import dom, one
from tests.monitoring.helpers import wait_for
from tests.test_auth import add_user, basic

HTMX = {"HX-Request": "true"}


@pytest.fixture
def settings(settings):
    """Users sign in with HTTP basic here: one client, several roles."""
    return settings.model_copy(update={"basic_auth": True})


@pytest.fixture
def shared_for_a_minute(monkeypatch):
    """Renders kept far longer than the page's second: only a change can drop them here."""
    monkeypatch.setattr(queries, "LIVE_CACHE_TTL_S", 60.0)
    queries.clear_caches()


async def test_a_load_that_a_change_overtook_is_not_kept(shared_for_a_minute):
    loads = 0

    async def render() -> int:
        nonlocal loads
        loads += 1
        await asyncio.sleep(0.05)  # reading the rows; a state change is heard meanwhile
        return loads

    reading = asyncio.create_task(queries.shared_view(("list",), render))
    await asyncio.sleep(0.01)
    queries.drop_views()
    assert await reading == 1
    assert await queries.shared_view(("list",), render) == 2  # read again, then kept
    assert await queries.shared_view(("list",), render) == 2


async def test_each_role_sees_its_own_render(db, client, shared_for_a_minute):
    await add_user(db, "boss", "admin")
    await add_user(db, "watcher", "viewer")
    for path in ("/", "/terminals"):
        admin = await client.get(path, headers=basic("boss"))
        viewer = await client.get(path, headers=basic("watcher"))
        assert admin.status_code == viewer.status_code == 200
        assert one(dom(admin), '.empty a[href="/admin/import"]') is not None
        assert not dom(viewer).cssselect('.empty a[href="/admin/import"]')
        assert "An admin can import them." in viewer.text


async def test_the_page_whole_carries_the_results_an_htmx_request_gets(db, client, shared_for_a_minute):
    await import_sample(db)
    await seed_states(db)
    for path, push in (
        ("/terminals?status=up&per=25", "/terminals?status=up&per=25"),
        ("/?region=North", None),
    ):
        part = await client.get(path, headers=HTMX)
        whole = await client.get(path)
        assert part.status_code == whole.status_code == 200
        assert f'<div id="results">\n{part.text}\n</div>' in whole.text
        assert whole.text.startswith("<!doctype html>") and "<title>" in whole.text
        assert part.headers["vary"] == whole.headers["vary"] == "HX-Request"
        if push:
            assert part.headers["hx-push-url"] == push


async def test_a_change_heard_is_on_the_next_page_at_once(db, server, settings, shared_for_a_minute):  # noqa: F811
    ids = await _ids(db)
    poiid, terminal_id = next(iter(ids["up"].items()))
    async with httpx.AsyncClient(base_url=server["url"], timeout=30) as http:
        path = f"/terminals?q={poiid}"

        async def row_state() -> str:
            r = await http.get(path, headers=HTMX)
            assert r.status_code == 200
            return one(dom(r), f"#t-{terminal_id}").get("class")

        assert "row-up" in await row_state()
        await take_down(db, terminal_id)
        # Heard through the relay (NOTIFY, or in process on SQLite), long before the minute.
        await wait_for(lambda: _shows_down(row_state), within=20)


async def _shows_down(row_state) -> bool:
    return "row-down" in await row_state()
