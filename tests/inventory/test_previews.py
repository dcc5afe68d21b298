"""Import previews are bounded: in age, per user and per host; a user uses only their own; one
import per preview; an expired one is said so where the result goes. The pages on both databases."""

import os

from sqlalchemy import func, select

from app.inventory.models import Terminal
from app.inventory.previews import PreviewStore
from tests.fleet import sample_files
from tests.html import dom, one, text
from tests.inventory.test_pages import HX

FILES = [("stores.csv", b"code,name\n"), ("terminals.csv", b"poiid\n")]


def age(store: PreviewStore, seconds: float) -> None:
    """Make every kept preview `seconds` older."""
    for folder in store.previews():
        t = folder.stat().st_mtime - seconds
        os.utime(folder, (t, t))


def test_a_preview_gives_back_its_files_once_discarded_never(tmp_path):
    store = PreviewStore(tmp_path / "previews")
    token = store.keep("ann", FILES)
    assert store.load("ann", token) == FILES
    assert store.load("bob", token) is None  # another user's
    assert store.load("ann", "../../etc") is None and store.load("ann", "") is None
    store.discard("ann", token)
    assert store.load("ann", token) is None and store.previews() == []


def test_previews_expire(tmp_path):
    store = PreviewStore(tmp_path, ttl_s=60)
    token = store.keep("ann", FILES)
    age(store, 59)
    assert store.load("ann", token) == FILES
    age(store, 2)
    assert store.load("ann", token) is None
    assert store.previews() == []  # deleted, not only refused
    assert "kept 1 min" in store.expired_message()


def test_each_user_keeps_their_latest_and_the_host_its_latest(tmp_path):
    store = PreviewStore(tmp_path, per_user=2, total=3)
    ann = []
    for _ in range(3):
        ann.append(store.keep("ann", FILES))
        age(store, 1)  # distinct ages
    assert [store.load("ann", t) is not None for t in ann] == [False, True, True]
    bob = [store.keep("bob", FILES)]
    age(store, 1)
    bob.append(store.keep("bob", FILES))
    assert len(store.previews()) == 3  # the host's bound: ann's older one went
    assert store.load("ann", ann[1]) is None and store.load("ann", ann[2]) is not None
    assert all(store.load("bob", t) is not None for t in bob)


async def preview_token(client) -> str:
    files = [("files", (name, data, "text/csv")) for name, data in sample_files()]
    preview = await client.post("/admin/import/preview", files=files, headers=HX)
    assert preview.status_code == 200, preview.text
    return one(dom(preview), 'form[action="/admin/import/commit"] input[name="token"]').get("value")


async def test_the_import_page_says_when_a_preview_expired(db, client, tmp_path):
    store = client._transport.app.state.import_previews = PreviewStore(tmp_path, ttl_s=600)
    token = await preview_token(client)
    age(store, 601)
    expired = await client.post("/admin/import/commit", data={"token": token}, headers=HX)
    assert expired.status_code == 422
    assert "This preview has expired (a preview is kept 10 min" in text(dom(expired))
    async with db.sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(Terminal)) == 0

    token = await preview_token(client)
    done = await client.post("/admin/import/commit", data={"token": token}, headers=HX)
    assert text(one(dom(done), ".banner strong")) == "Imported"
    assert store.previews() == []  # one import per preview: its files are gone
    again = await client.post("/admin/import/commit", data={"token": token}, headers=HX)
    assert again.status_code == 422 and "already imported" in text(dom(again))


async def test_many_previews_keep_a_bounded_folder(client, tmp_path):
    store = client._transport.app.state.import_previews = PreviewStore(tmp_path, per_user=3)
    tokens = []
    for _ in range(5):
        tokens.append(await preview_token(client))
        age(store, 1)  # distinct ages
    assert len(store.previews()) == 3
    answer = await client.post("/admin/import/commit", data={"token": tokens[0]}, headers=HX)
    assert answer.status_code == 422 and "only your latest 3" in text(dom(answer))
