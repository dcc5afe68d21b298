"""The Users page (admins): create, change role, disable, reset password, end sessions; the
last admin stays; each role sees only what it may do. Both databases."""

from sqlalchemy import select

from app.auth.models import AuditEvent, User
from tests.html import dom, one, text
from tests.test_auth import add_user, basic
from tests.test_sessions import COOKIE, login


async def user_id(db, name):
    async with db.sessionmaker() as session:
        return await session.scalar(select(User.id).where(User.username == name))


async def test_admin_creates_users_with_errors_by_their_field(db, client):
    await add_user(db, "root", "admin")
    client._transport.app.state.user_count_cache = [0.0, 0]
    client.cookies.set(COOKIE, await login(client, "root"))
    page = await client.get("/admin/users")
    assert page.status_code == 200 and one(dom(page), "#user-form") is not None
    bad = await client.post("/admin/users", data={"username": "root", "role": "boss", "password": "short"})
    assert bad.status_code == 422
    d = dom(bad)
    assert "root already exists" in text(one(d, "#e-username"))
    assert "One of viewer, support, manager, admin" in text(one(d, "#e-role"))
    assert "At least 8 characters" in text(one(d, "#e-password"))
    made = await client.post(
        "/admin/users", data={"username": "sam", "role": "support", "password": "long enough"}
    )
    assert made.status_code == 303
    listed = dom(await client.get(made.headers["location"]))
    assert "User created." in text(one(listed, ".banner.ok"))
    assert "support" in text(one(listed, f"#user-{await user_id(db, 'sam')}"))
    client.cookies.clear()
    await login(client, "sam", "long enough")


async def test_role_disable_reset_and_the_last_admin(db, client):
    await add_user(db, "root", "admin")
    await add_user(db, "sam", "viewer")
    client._transport.app.state.user_count_cache = [0.0, 0]

    async def cookie_of(name, password="correct horse"):
        value = await login(client, name, password)
        client.cookies.clear()
        return {"Cookie": f"{COOKIE}={value}"}

    as_root, as_sam = await cookie_of("root"), await cookie_of("sam")
    root, sam = await user_id(db, "root"), await user_id(db, "sam")

    last = await client.post(f"/admin/users/{root}/role", data={"role": "viewer"}, headers=as_root)
    assert last.status_code == 409 and "last active admin" in text(one(dom(last), "#e-role"))
    kept = await client.post(f"/admin/users/{root}/active", data={"active": "no"}, headers=as_root)
    assert kept.status_code == 409 and "last active admin" in kept.text

    moved = await client.post(f"/admin/users/{sam}/role", data={"role": "manager"}, headers=as_root)
    assert moved.status_code == 303
    assert "Role changed." in text(dom(await client.get(moved.headers["location"], headers=as_root)))
    assert "sam (manager)" in text(dom(await client.get("/", headers=as_sam)))  # at once, same session

    short = await client.post(f"/admin/users/{sam}/password", data={"password": "x"}, headers=as_root)
    assert short.status_code == 422
    reset = await client.post(
        f"/admin/users/{sam}/password", data={"password": "a new password"}, headers=as_root
    )
    assert reset.status_code == 303
    assert (await client.get("/", headers=as_sam)).status_code == 303  # the reset ended the session
    as_sam = await cookie_of("sam", "a new password")

    disabled = await client.post(f"/admin/users/{sam}/active", data={"active": "no"}, headers=as_root)
    assert disabled.status_code == 303
    assert (await client.get("/", headers=as_sam)).status_code == 303
    refused = await client.post("/login", data={"username": "sam", "password": "a new password", "next": "/"})
    assert refused.status_code == 401

    async with db.sessionmaker() as session:
        actions = [(e.username, e.action, e.target) for e in await session.scalars(select(AuditEvent))]
    for entry in (
        ("root", "user role changed", "sam"),
        ("root", "password reset", "sam"),
        ("root", "user disabled", "sam"),
        ("sam", "login", ""),
    ):
        assert entry in actions, entry


async def test_each_role_sees_only_what_it_may_do(db, client):
    from app.inventory.csvimport import import_fleet
    from tests.fleet import sample_files

    async with db.sessionmaker() as session:
        await import_fleet(session, sample_files())
    for role in ("viewer", "support", "manager", "admin"):
        await add_user(db, role, role)
    client._transport.app.state.user_count_cache = [0.0, 0]
    poiid = (await client.get("/api/v1/terminals", headers=basic("admin"))).json()["items"][0]["poiid"]
    seen = {}
    for role in ("viewer", "support", "manager", "admin"):
        terminal = dom(await client.get(f"/terminals/{poiid}", headers=basic(role)))
        history = dom(await client.get("/history", headers=basic(role)))
        incidents = dom(await client.get("/incidents", headers=basic(role)))
        nav = [a.get("href") for a in dom(await client.get("/", headers=basic(role))).cssselect("nav a")]
        seen[role] = (
            bool(terminal.cssselect("#check-btn")),
            bool(history.cssselect('a[href^="/history/export"]')),
            bool(incidents.cssselect('a[href^="/incidents/export"]')),
            "/admin/users" in nav,
        )
    assert seen == {
        "viewer": (False, False, False, False),
        "support": (True, False, False, False),
        "manager": (True, True, True, False),
        "admin": (True, True, True, True),
    }
    refused = await client.get("/history/export.csv", headers=basic("support"))
    assert refused.status_code == 403 and "for the manager role and above" in text(
        one(dom(refused), ".banner.error")
    )
