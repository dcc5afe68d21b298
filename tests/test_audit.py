"""The audit log: who did what, when, from where (logins and failures, Check connection,
inventory and provider changes, exports, refusals, user changes); the admin page filters it
and exports it as CSV. Both databases."""

import csv
import io

from sqlalchemy import select

from app.auth.models import AuditEvent
from tests.html import dom, one, text
from tests.html import select as css
from tests.test_auth import add_user, basic


async def entries(db):
    async with db.sessionmaker() as session:
        rows = await session.scalars(select(AuditEvent).order_by(AuditEvent.id))
        return [(e.username, e.action, e.target, e.outcome, e.address) for e in rows]


async def test_what_is_recorded(db, client):
    for role in ("viewer", "support", "manager", "admin"):
        await add_user(db, role, role)
    client._transport.app.state.user_count_cache = [0.0, 0]
    await client.post("/login", data={"username": "admin", "password": "wrong", "next": "/"})
    await client.post("/login", data={"username": "=cmd|' /C calc'!A0", "password": "x", "next": "/"})
    await client.post("/login", data={"username": "admin", "password": "correct horse", "next": "/"})
    client.cookies.clear()
    await client.post("/api/v1/terminals/P-NONE/check", headers=basic("support"))
    await client.post("/api/v1/stores", json={"code": "S-1", "name": "One"}, headers=basic("admin"))
    await client.post("/api/v1/providers", json={"name": ""}, headers=basic("admin"))
    await client.get("/history/export.csv", headers=basic("manager"))
    await client.get("/admin/stores", headers=basic("viewer"))
    await client.get("/", headers=basic("viewer"))  # reading is not recorded
    got = await entries(db)
    for entry in (
        ("admin", "login", "", "failed", "127.0.0.1"),
        ("=cmd|' /C calc'!A0", "login", "", "failed", "127.0.0.1"),
        ("admin", "login", "", "ok", "127.0.0.1"),
        ("support", "check connection", "/api/v1/terminals/P-NONE/check", "failed", "127.0.0.1"),
        ("admin", "inventory change", "/api/v1/stores", "ok", "127.0.0.1"),
        ("admin", "provider change", "/api/v1/providers", "failed", "127.0.0.1"),
        ("manager", "export", "/history/export.csv", "ok", "127.0.0.1"),
        ("viewer", "access", "/admin/stores", "refused", "127.0.0.1"),
    ):
        assert entry in got, entry
    assert len(got) == 8


async def test_the_page_filters_and_exports(db, client):
    await add_user(db, "root", "admin")
    client._transport.app.state.user_count_cache = [0.0, 0]
    for name in ("root", "=cmd|' /C calc'!A0"):
        await client.post("/login", data={"username": name, "password": "wrong", "next": "/"})
    await client.post("/api/v1/stores", json={"code": "S-1", "name": "One"}, headers=basic("root"))

    page = dom(await client.get("/admin/audit", headers=basic("root")))
    assert len(css(page, "#audit tbody tr")) == 3
    assert "inventory change" in text(css(page, "#audit tbody tr")[0])  # newest first
    failed = dom(
        await client.get("/admin/audit?action=login&outcome=failed&user=root", headers=basic("root"))
    )
    rows = css(failed, "#audit tbody tr")
    assert len(rows) == 1 and "failed" in text(rows[0])
    assert (
        len(css(dom(await client.get("/admin/audit?q=stores", headers=basic("root"))), "#audit tbody tr"))
        == 1
    )
    none = dom(await client.get("/admin/audit?until=2000-01-01", headers=basic("root")))
    assert not css(none, "#audit") and "No entries match" in text(none)
    bad = await client.get("/admin/audit?since=yesterday&outcome=maybe", headers=basic("root"))
    assert bad.status_code == 422
    assert "YYYY-MM-DD" in text(one(dom(bad), "#e-since")) and "One of ok" in text(
        one(dom(bad), "#e-outcome")
    )

    export = await client.get("/admin/audit/export.csv?action=login", headers=basic("root"))
    assert export.status_code == 200 and export.headers["content-type"].startswith("text/csv")
    table = list(csv.reader(io.StringIO(export.text)))
    assert table[0] == ["at", "username", "action", "target", "outcome", "address", "detail", "changes"]
    assert sorted(r[1] for r in table[1:]) == ["'=cmd|' /C calc'!A0", "root"]  # no formula
    assert ("root", "export", "/admin/audit/export.csv", "ok", "127.0.0.1") in await entries(db)
    assert (await client.get("/admin/audit/export.csv?since=x", headers=basic("root"))).status_code == 422


async def test_commands_are_recorded_too(db):
    from tests.test_cli import STORES, TERMINALS, termpulse

    assert (await termpulse(db, "import", "--dry-run", STORES, TERMINALS)).returncode == 0  # nothing written
    assert (await termpulse(db, "import", STORES, TERMINALS)).returncode == 0
    made = await termpulse(db, "create-user", "sam", "--role", "support", stdin="long enough password\n")
    assert made.returncode == 0
    async with db.sessionmaker() as session:
        rows = list(await session.scalars(select(AuditEvent).order_by(AuditEvent.id)))
    assert [(e.action, e.target, e.address) for e in rows] == [
        ("import", "stores.csv, terminals.csv", "command line"),
        ("user created", "sam", "command line"),
    ]
    assert rows[0].username.endswith("(command line)") and "stores: 60 created" in rows[0].detail
