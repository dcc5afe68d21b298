"""Provider keys go only to provider API hosts: the official ones, and what an admin lists in
TERMPULSE_PROVIDER_HOSTS (issue 12). The settings here list none: loopback is no provider."""

from __future__ import annotations

import asyncio

import pytest

from app.providers.hosts import ProviderHosts
from app.providers.service import get_account
from tests.html import dom, one
from tests.providers.conftest import SECRET

KEY = "AQEyhmfxK4_super_secret_adyen_key_7Q2w"


@pytest.fixture
def settings(settings):
    return settings.model_copy(update={"provider_hosts": []})  # the default: official hosts only


@pytest.fixture
async def listener():
    """A loopback listener that counts the connections it gets (none expected)."""
    seen: list[bytes] = []

    async def handle(reader, writer):
        seen.append(await reader.read(65536))
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    server.seen = seen
    server.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    yield server
    server.close()
    await server.wait_closed()


def _body(url: str, **extra):
    return {"name": "Adyen EU", "kind": "adyen", "environment": "test", "merchant_account": "ShopPOS",
            "api_base_url": url, "api_key": KEY, **extra}  # fmt: skip


def test_official_hosts_and_listed_ones():
    official = ProviderHosts()
    for url in (
        "https://device-api-live-us.adyen.com/v1",
        "https://management-test.adyen.com",
        "https://api.stripe.com",
    ):
        assert official.allows(url), url
    for url in ("http://api.stripe.com", "https://adyen.com.evil.example", "https://evil.example/v1",
                "http://127.0.0.1:9/v1", "https://api.stripe.com.evil.example"):  # fmt: skip
        assert not official.allows(url), url
    assert "HTTPS only" in official.refusal("http://device-api-test.adyen.com/v1")
    assert "TERMPULSE_PROVIDER_HOSTS" in official.refusal("http://127.0.0.1:9/v1")
    one_port = ProviderHosts(["127.0.0.1:8123"])
    assert one_port.allows("http://127.0.0.1:8123/v1") and not one_port.allows("http://127.0.0.1:8124/v1")
    assert ProviderHosts(["127.0.0.1"]).allows("http://127.0.0.1:8124/v1")
    assert ProviderHosts(["Proxy.Example:443"]).allows("https://proxy.example/v1")


async def test_an_account_pointing_elsewhere_is_refused_and_nothing_is_sent(client, listener):
    response = await client.post("/api/v1/providers", json=_body(f"{listener.url}/v1"))
    assert response.status_code == 422, response.text
    assert "api_base_url" in response.text and "not a provider API host" in response.text
    assert (await client.get("/api/v1/providers")).json() == []

    form = {k: str(v) for k, v in _body(f"{listener.url}/v1").items()}
    page = await client.post("/admin/providers/new", data=form)
    assert page.status_code == 422
    assert one(dom(page), 'input[name="api_base_url"]').get("aria-invalid") == "true"  # at the field
    assert "not a provider API host" in page.text

    # An official host is accepted (saved only: nothing is called here).
    ok = await client.post("/api/v1/providers", json=_body("https://device-api-test.adyen.com/v1"))
    assert ok.status_code == 201, ok.text
    moved = await client.put(f"/api/v1/providers/{ok.json()['id']}", json=_body(listener.url))
    assert moved.status_code == 422 and "not a provider API host" in moved.text
    assert listener.seen == []


async def test_a_stored_account_off_the_list_is_never_called(db, client, listener):
    """An account saved while its host was listed (or written to the database directly):
    Test, sync and the cloud check refuse before sending the key (Stripe: sync calls it too)."""
    from app.providers.schemas import AccountIn
    from app.providers.service import create_account

    data = AccountIn(**_body(listener.url, kind="stripe", management_base_url=listener.url))
    async with db.sessionmaker() as session:
        account = await create_account(
            session, SECRET, data, hosts=ProviderHosts([listener.url.split("//")[1]])
        )
    result = (await client.post(f"/api/v1/providers/{account.id}/test")).json()
    assert result["ok"] is False and "not sent" in result["message"], result
    sync = await client.post(f"/api/v1/providers/{account.id}/sync")
    assert sync.status_code in (502, 503) and "not sent" in sync.text, sync.text
    page = await client.post(f"/admin/providers/{account.id}/test")
    assert page.status_code == 200 and "not sent" in page.text

    from app.providers.check import cloud_status_now

    async with db.sessionmaker() as session:
        stored = await get_account(session, account.id)
    r = await cloud_status_now(SECRET, stored, "P400Plus-1", "tmr_1", hosts=ProviderHosts())
    assert r.diagnosis == "provider_unavailable" and "not sent" in str(r.steps)
    assert listener.seen == []  # the key never left
