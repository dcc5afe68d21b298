"""SSO with OpenID Connect against the simulated provider (app.simulator.oidc) on a loopback
socket: TermPulse fetches its discovery document, keys and tokens over real connections; the
browser's legs are an HTTP client following the redirects (the app's own in process). Both
databases.

Proves: a first sign-in creates the user with the mapped role and the same server-side session
a password login gets; the next sign-in sets the role from the groups again; refused (with the
reason on the page and in the audit log, no session): another browser's or a forged state, a
replayed callback, a wrong nonce, a forged signature, another audience, an expired token, no
mapped group, a disabled user; calls only to the issuer, and loopback only when listed;
TERMPULSE_OIDC_ONLY."""

import time

import httpx
import pytest
from sqlalchemy import select, update

from app.auth.models import AuditEvent, OidcIdentity, User, UserSession
from app.auth.oidc import OidcConfig
from app.auth.sessions import COOKIE
from app.auth.sso import STARTS_PER_ADDRESS
from app.config import Settings
from app.main import create_app
from app.simulator.oidc import DEFAULT_ROLE_MAP, OidcSim, SimUser
from tests.conftest import csrf_header_hook
from tests.html import dom, one, text
from tests.test_auth import add_user, basic


@pytest.fixture(scope="module")
async def provider():
    sim = await OidcSim().start()
    yield sim
    await sim.stop()


@pytest.fixture
def sso_settings(settings, provider):
    provider.tamper = {}
    provider.discovery_changes = {}
    # base_url: where the provider sends the browser back (TermPulse's callback, the test client's).
    oidc = {
        **provider.settings(),
        "oidc_role_map": DEFAULT_ROLE_MAP.split(","),
        "base_url": "http://testserver",
    }
    return settings.model_copy(update=oidc)


def app_client(db, settings):
    application = create_app(settings, database=db)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=application), base_url="http://testserver")
    client.event_hooks["request"].append(csrf_header_hook(settings))  # as the pages send it
    return client


@pytest.fixture
async def http(db, sso_settings):
    await add_user(db, "root", "admin")  # out of the open mode: pages need a login
    async with app_client(db, sso_settings) as client:
        yield client


def pick(start, user):
    """The provider's sign-in page, answered: the user picked (what its form posts)."""
    return httpx.URL(start.headers["location"]).copy_add_param("user", user)


async def sign_in(http, user, *, next_path="/stores", state=None, other_browser=False):
    """Sign in with SSO as the provider's `user`: the answer of TermPulse's callback."""
    start = await http.get("/login/sso", params={"next": next_path})
    assert start.status_code == 303, start.text
    async with httpx.AsyncClient() as browser:  # at the provider, over a real socket
        answer = await browser.get(pick(start, user))
    assert answer.status_code == 302, answer.text
    back = httpx.URL(answer.headers["location"])
    if state is not None:
        back = back.copy_set_param("state", state)
    if other_browser:
        http.cookies.delete("termpulse_sso", path="/login/sso")
    return await http.get(back)


async def audit_log(db):
    async with db.sessionmaker() as session:
        rows = await session.scalars(select(AuditEvent).order_by(AuditEvent.id))
        return [(e.action, e.outcome, e.username, e.detail) for e in rows]


async def users(db):
    async with db.sessionmaker() as session:
        return {u.username: u for u in await session.scalars(select(User))}


def refusal(response):
    return text(one(dom(response), ".banner.error"))


async def test_the_login_page_offers_sso_when_configured(db, settings, sso_settings):
    async with app_client(db, sso_settings) as client:
        page = dom(await client.get("/login?next=/stores"))
        assert text(one(page, "a#sso")) == "Sign in with SSO"
        assert one(page, "a#sso").get("href") == "/login/sso?next=/stores"
        assert one(page, "#password") is not None
    async with app_client(db, settings) as client:
        page = dom(await client.get("/login"))
        assert not page.cssselect("a#sso") and one(page, "#password") is not None
        off = await client.get("/login/sso")
        assert off.status_code == 404 and "not configured" in refusal(off)


async def test_first_sign_in_creates_the_user_with_the_mapped_role(db, http, provider):
    provider.calls.clear()
    done = await sign_in(http, "alice")
    assert done.status_code == 303 and done.headers["location"] == "/stores"
    assert http.cookies.get(COOKIE) and not http.cookies.get("termpulse_sso")
    page = await http.get("/")
    assert page.status_code == 200 and "alice (admin)" in text(dom(page))
    alice = (await users(db))["alice"]
    assert alice.role == "admin" and alice.active and alice.password_hash == ""
    async with db.sessionmaker() as session:
        link = await session.scalar(select(OidcIdentity).where(OidcIdentity.user_id == alice.id))
        assert (link.issuer, link.subject) == (provider.url, provider.users["alice"].subject)
        # The same server-side session as a password login: revocable, listed on the account page.
        assert await session.scalar(select(UserSession.id).where(UserSession.user_id == alice.id))
    assert provider.calls["discovery"] == 1 and provider.calls["jwks"] == 1 and provider.calls["token"] == 1
    log = await audit_log(db)
    assert log[-2][:3] == ("user created", "ok", "alice") and "role admin" in log[-2][3]
    assert log[-1][:3] == ("sso login", "ok", "alice") and "role admin" in log[-1][3]
    # No password to change on the account page; the Users page says who signs in with SSO.
    account = dom(await http.get("/account"))
    assert "You sign in with SSO" in text(one(account, "#pw-sso")) and not account.cssselect("#pw-current")
    assert "(SSO)" in text(one(dom(await http.get("/admin/users")), f"#user-{alice.id}"))
    said = text(one(dom(await http.get(f"/admin/users/{alice.id}")), "#sso-link"))
    assert f"Signs in with SSO ({provider.url}, subject {link.subject})" in said
    # Logged out, it ends as any session does.
    await http.post("/logout")
    assert (await http.get("/")).status_code == 303


async def test_roles_follow_the_groups(db, http, provider):
    provider.users["multi"] = SimUser("multi", ["tp-viewers", "tp-managers", "other"])
    for name, role in (("mia", "manager"), ("sam", "support"), ("vic", "viewer"), ("multi", "manager")):
        http.cookies.clear()
        assert (await sign_in(http, name)).status_code == 303
        assert (await users(db))[name].role == role


async def test_the_next_sign_in_sets_the_role_from_the_groups_again(db, http, provider):
    provider.users["ray"] = SimUser("ray", ["tp-support"])
    assert (await sign_in(http, "ray")).status_code == 303
    assert (await users(db))["ray"].role == "support"
    provider.users["ray"].groups = ["tp-managers"]
    http.cookies.clear()
    assert (await sign_in(http, "ray")).status_code == 303
    assert (await users(db))["ray"].role == "manager"
    assert len([u for u in (await users(db)) if u.startswith("ray")]) == 1  # the same user
    changed = [e for e in await audit_log(db) if e[0] == "user role changed"]
    assert changed == [
        (
            "user role changed",
            "ok",
            "ray",
            'support -> manager (SSO groups)\nchanges: {"ray": {"role": ["support", "manager"]}}',
        )
    ]


async def set_active(db, name, active):
    async with db.sessionmaker() as session:
        await session.execute(update(User).where(User.username == name).values(active=active))
        await session.commit()


async def test_sso_never_demotes_the_last_admin(db, http, provider):
    provider.users["ada"] = SimUser("ada", ["tp-admins"])
    assert (await sign_in(http, "ada")).status_code == 303
    await set_active(db, "root", False)  # ada is the last active admin now
    provider.users["ada"].groups = ["tp-viewers"]
    http.cookies.clear()
    assert (await sign_in(http, "ada")).status_code == 303
    assert (await users(db))["ada"].role == "admin"
    kept = [e for e in await audit_log(db) if e[0] in ("user role kept", "user role changed")]
    assert kept == [
        (
            "user role kept",
            "ok",
            "ada",
            "SSO groups give viewer; kept admin: the last active admin stays (make another admin first)",
        )
    ]
    assert (await audit_log(db))[-1][:4] == ("sso login", "ok", "ada", "via 127.0.0.1, role admin")

    await set_active(db, "root", True)
    http.cookies.clear()
    page = dom(await http.get(f"/admin/users/{(await users(db))['ada'].id}", headers=basic("root")))
    assert "SSO groups give viewer; kept admin: the last active admin stays" in text(one(page, "#role-kept"))

    assert (await sign_in(http, "ada")).status_code == 303  # another admin exists: the groups decide
    http.cookies.clear()
    assert (await users(db))["ada"].role == "viewer"
    page = dom(await http.get(f"/admin/users/{(await users(db))['ada'].id}", headers=basic("root")))
    assert not page.cssselect("#role-kept")


async def test_an_sso_user_gets_no_password(db, http, provider):
    assert (await sign_in(http, "mia")).status_code == 303
    mia = await users(db)
    refused = await http.post(
        "/account/password", data={"current": "", "new": "long enough 1", "again": "long enough 1"}
    )
    assert refused.status_code == 409 and "You sign in with SSO" in refused.text
    http.cookies.clear()
    url = f"/admin/users/{mia['mia'].id}"
    page = dom(await http.get(url, headers=basic("root")))
    assert not page.cssselect(f'form[action="{url}/password"]') and "Signs in with SSO at" in text(
        one(page, "#password-sso")
    )
    reset = await http.post(f"{url}/password", data={"password": "long enough 1"}, headers=basic("root"))
    assert reset.status_code == 409
    assert "mia signs in with SSO at http://127.0.0.1" in text(one(dom(reset), "#password-sso"))
    assert "TermPulse keeps no password" in text(one(dom(reset), "#password-sso"))
    assert (await users(db))["mia"].password_hash == ""
    assert not [e for e in await audit_log(db) if e[0] in ("password reset", "password change")]


async def test_a_name_taken_by_a_password_user_is_never_linked(db, http, provider):
    await add_user(db, "vic", "admin")  # a local admin called vic: SSO's vic must not become them
    assert (await sign_in(http, "vic")).status_code == 303
    found = await users(db)
    assert found["vic"].role == "admin" and found["vic"].password_hash
    assert found["vic@127.0.0.1"].role == "viewer"
    assert "vic@127.0.0.1 (viewer)" in text(dom(await http.get("/")))


async def assert_refused(db, http, response, status, words, outcome="failed"):
    assert response.status_code == status, response.text
    assert words in refusal(response)
    assert not http.cookies.get(COOKIE)
    assert (await http.get("/")).status_code == 303  # not logged in
    action, result, _who, detail = (await audit_log(db))[-1]
    assert (action, result) == ("sso login", outcome)
    return detail


async def test_a_forged_state_is_refused(db, http):
    response = await sign_in(http, "alice", state="forged-state")
    detail = await assert_refused(db, http, response, 400, "does not match", "refused")
    assert detail == "state does not match"
    assert "alice" not in await users(db)


async def test_a_callback_in_another_browser_is_refused(db, http):
    # Someone sends you a link to the callback with their code: your browser did not start it.
    response = await sign_in(http, "alice", other_browser=True)
    await assert_refused(db, http, response, 400, "does not match", "refused")


async def test_a_callback_is_taken_once(db, http, provider):
    start = await http.get("/login/sso")
    async with httpx.AsyncClient() as browser:
        back = (await browser.get(pick(start, "alice"))).headers["location"]
    assert (await http.get(back)).status_code == 303
    http.cookies.delete(COOKIE)
    await assert_refused(db, http, await http.get(back), 400, "does not match", "refused")


@pytest.mark.parametrize(
    ("tamper", "words"),
    [
        ({"nonce": "another-sign-in"}, "nonce"),
        ({"sign_with_other_key": True}, "signature does not verify"),
        ({"aud": "another-client"}, "audience (aud)"),
        ({"exp": int(time.time()) - 3600, "iat": int(time.time()) - 7200}, "has expired"),
        ({"iss": "https://evil.example"}, "issuer (iss)"),
    ],
    ids=["nonce", "signature", "audience", "expired", "issuer"],
)
async def test_an_id_token_that_does_not_check_out_is_refused(db, http, provider, tamper, words):
    provider.tamper = tamper
    response = await sign_in(http, "alice")
    detail = await assert_refused(db, http, response, 403, words)
    assert words in detail
    assert "alice" not in await users(db)


async def test_no_mapped_group_is_refused_with_a_clear_page(db, http):
    response = await sign_in(http, "nobody")
    await assert_refused(db, http, response, 403, "none of your groups (marketing)", "refused")
    assert "TERMPULSE_OIDC_ROLE_MAP" in refusal(response)
    assert "nobody" not in await users(db)
    assert "no group maps to a role; groups: marketing" in (await audit_log(db))[-1][3]


async def test_a_disabled_user_stays_out(db, http):
    assert (await sign_in(http, "sam")).status_code == 303
    async with db.sessionmaker() as session:
        await session.execute(update(User).where(User.username == "sam").values(active=False))
        await session.commit()
    http.cookies.clear()
    response = await sign_in(http, "sam")
    await assert_refused(db, http, response, 403, "sam is disabled", "refused")


async def test_sign_ins_started_are_limited_per_address(db, http):
    for _ in range(STARTS_PER_ADDRESS[0]):
        assert (await http.get("/login/sso")).status_code == 303
    refused = await http.get("/login/sso")
    assert refused.status_code == 429 and "Too many sign-ins" in refusal(refused)


async def test_calls_go_only_to_the_issuer(db, http, provider):
    # A discovery document sending the token request (with the client secret) elsewhere.
    provider.discovery_changes = {"token_endpoint": provider.url.replace("127.0.0.1", "localhost") + "/token"}
    provider.calls.clear()
    response = await sign_in(http, "alice")
    await assert_refused(db, http, response, 403, "localhost is not the SSO issuer's host")
    assert provider.calls["token"] == 0


async def test_a_loopback_issuer_needs_loopback_listed(db, sso_settings):
    await add_user(db, "root", "admin")
    unlisted = sso_settings.model_copy(update={"allowed_networks": ["10.0.0.0/8"]})
    async with app_client(db, unlisted) as client:
        response = await client.get("/login/sso")
    assert response.status_code == 502 and "loopback" in refusal(response)
    assert (await audit_log(db))[-1][:2] == ("sso login", "failed")


async def test_sso_only(db, sso_settings):
    await add_user(db, "root", "admin")
    await add_user(db, "viv", "viewer")
    non_admins = sso_settings.model_copy(update={"oidc_only": "non-admins"})
    async with app_client(db, non_admins) as client:
        page = dom(await client.get("/login"))
        assert "(administrators)" in text(page) and one(page, "#password") is not None
        refused = await client.post("/login", data={"username": "viv", "password": "correct horse"})
        assert refused.status_code == 403 and "SSO only" in refusal(refused)
        assert (await client.get("/api/v1/stores", headers=basic("viv"))).status_code == 401
        admin = await client.post("/login", data={"username": "root", "password": "correct horse"})
        assert admin.status_code == 303
    assert (await audit_log(db))[-2][:4] == ("login", "refused", "viv", "SSO only")
    everyone = sso_settings.model_copy(update={"oidc_only": "all"})
    async with app_client(db, everyone) as client:
        page = dom(await client.get("/login"))
        assert one(page, "a#sso") is not None and not page.cssselect("#password")
        refused = await client.post("/login", data={"username": "root", "password": "correct horse"})
        assert refused.status_code == 403


def test_settings_are_checked_at_start():
    base = {"oidc_client_id": "c", "oidc_client_secret": "s"}
    assert OidcConfig.from_settings(Settings()) is None
    with pytest.raises(ValueError, match="https"):
        OidcConfig.from_settings(Settings(oidc_issuer="http://idp.example", **base))
    with pytest.raises(ValueError, match="CLIENT_ID"):
        OidcConfig.from_settings(Settings(oidc_issuer="https://idp.example"))
    with pytest.raises(ValueError, match="'ops=root' is not group=role"):
        OidcConfig.from_settings(
            Settings(oidc_issuer="https://idp.example", oidc_role_map="ops=root", **base)
        )
    config = OidcConfig.from_settings(
        Settings(
            oidc_issuer="https://idp.example/",
            oidc_role_map="a=viewer, b=admin",
            oidc_hosts="oauth2.idp-apis.example",
            base_url="https://termpulse.example",
            **base,
        )
    )
    assert config.issuer == "https://idp.example" and config.role_for(["a", "b"]) == "admin"
    assert config.role_for(["c"]) is None
    assert config.hosts == {"idp.example", "oauth2.idp-apis.example"}
    assert config.redirect_uri == "https://termpulse.example/login/sso/callback"
