"""Provider accounts: the key is encrypted at rest, masked everywhere, replaceable alone."""

from __future__ import annotations

import logging

from sqlalchemy import text

from app.providers.crypto import decrypt_api_key
from tests.cli import termpulse_async
from tests.html import dom, one
from tests.html import text as page_text

KEY = "AQEyhmfxK4_super_secret_adyen_key_7Q2w"


def _body(**extra):
    return {
        "name": "Adyen EU",
        "kind": "adyen",
        "environment": "test",
        "merchant_account": "ShopPOS",
        "api_base_url": "http://127.0.0.1:9/v1",
        "api_key": KEY,
        **extra,
    }


async def _raw_row(db) -> dict:
    async with db.engine.connect() as conn:
        row = (await conn.execute(text("SELECT * FROM provider_accounts"))).mappings().one()
    return dict(row)


async def test_key_is_encrypted_at_rest_and_never_returned(db, client, settings, caplog):
    caplog.set_level(logging.DEBUG)
    response = await client.post("/api/v1/providers", json=_body())
    assert response.status_code == 201, response.text
    created = response.json()
    assert "api_key" not in created and KEY not in response.text
    assert created["api_key_hint"] == "••••7Q2w" and created["has_api_key"]

    raw = await _raw_row(db)
    for value in raw.values():  # no column holds the key in clear, in any encoding
        blob = bytes(value) if isinstance(value, (bytes, bytearray, memoryview)) else str(value).encode()
        assert KEY.encode() not in blob and KEY[:-4].encode() not in blob
    assert decrypt_api_key(settings.secret_key, raw["api_key_encrypted"]) == KEY

    for url in (
        "/api/v1/providers",
        f"/api/v1/providers/{created['id']}",
        "/admin/providers",
        f"/admin/providers/{created['id']}",
    ):
        page = await client.get(url)
        assert page.status_code == 200 and KEY not in page.text and KEY[:-4] not in page.text
    assert KEY not in caplog.text


async def test_replace_key_alone_and_edit_without_key(db, client, settings):
    account = (await client.post("/api/v1/providers", json=_body())).json()
    url = f"/api/v1/providers/{account['id']}"
    response = await client.put(f"{url}/key", json={"api_key": "AQE-brand-new-key-XYZ9"})
    assert response.status_code == 204
    after = (await client.get(url)).json()
    assert after["api_key_hint"] == "••••XYZ9" and after["merchant_account"] == "ShopPOS"
    assert (
        decrypt_api_key(settings.secret_key, (await _raw_row(db))["api_key_encrypted"])
        == "AQE-brand-new-key-XYZ9"
    )

    body = _body(name="Adyen EU renamed")
    body.pop("api_key")
    assert (await client.put(url, json=body)).json()["name"] == "Adyen EU renamed"
    assert (
        decrypt_api_key(settings.secret_key, (await _raw_row(db))["api_key_encrypted"])
        == "AQE-brand-new-key-XYZ9"
    )

    # The form: an empty key field keeps the stored key too.
    form = {k: str(v) for k, v in _body(name="Adyen EU form", api_key="").items()}
    response = await client.post(f"/admin/providers/{account['id']}", data=form)
    assert response.status_code == 303
    assert (
        decrypt_api_key(settings.secret_key, (await _raw_row(db))["api_key_encrypted"])
        == "AQE-brand-new-key-XYZ9"
    )
    response = await client.post(
        f"/admin/providers/{account['id']}/key", data={"api_key": "AQE-third-key-ABCD"}
    )
    assert response.status_code == 200 and "••••ABCD" in page_text(dom(response))
    assert "AQE-third-key" not in response.text  # anywhere in the markup, attributes included


async def test_validation_errors(client):
    response = await client.post("/api/v1/providers", json=_body(merchant_account="", kind="adyen"))
    assert response.status_code == 422
    response = await client.post("/api/v1/providers", json=_body(api_base_url="ftp://example"))
    assert response.status_code == 422
    assert (await client.post("/api/v1/providers", json=_body())).status_code == 201
    assert (await client.post("/api/v1/providers", json=_body())).status_code == 409
    form = {k: str(v) for k, v in _body(name="", api_key="short").items()}
    page = await client.post("/admin/providers/new", data=form)
    assert page.status_code == 422
    d = dom(page)
    assert d.cssselect('[aria-invalid="true"]')  # the fields in error are marked
    assert one(d, 'input[name="api_key"]').get("value") == ""  # a key is never sent back, not even a bad one


async def test_account_test_reports_rejected_key(db, client, adyen_sim):
    account = (
        await client.post(
            "/api/v1/providers",
            json=_body(api_base_url=adyen_sim.device_api_url, merchant_account=adyen_sim.merchant_account),
        )
    ).json()
    result = (await client.post(f"/api/v1/providers/{account['id']}/test")).json()
    assert result["ok"] is False and "rejected" in result["message"].lower()
    await client.put(f"/api/v1/providers/{account['id']}/key", json={"api_key": adyen_sim.api_key})
    result = (await client.post(f"/api/v1/providers/{account['id']}/test")).json()
    assert result["ok"] is True and "12 terminal(s) connected" in result["message"]


async def test_new_provider_address_needs_the_key_again(db, client, settings):
    """Else the stored key could be sent to any host: point the account elsewhere, press Test."""
    account = (await client.post("/api/v1/providers", json=_body())).json()
    url = f"/api/v1/providers/{account['id']}"
    moved = _body(api_base_url="http://127.0.0.1:10/v1")
    moved.pop("api_key")
    response = await client.put(url, json=moved)
    assert response.status_code == 422, response.text
    assert "api_key" in response.text and "again" in response.text
    assert (await client.get(url)).json()["api_base_url"] == "http://127.0.0.1:9/v1"  # nothing changed

    form = {k: str(v) for k, v in _body(api_base_url="http://127.0.0.1:10/v1", api_key="").items()}
    page = await client.post(f"/admin/providers/{account['id']}", data=form)
    assert page.status_code == 422
    assert one(dom(page), 'input[name="api_key"]').get("aria-invalid") == "true"  # shown at the field

    # With the key entered again the move is the admin's own, and allowed.
    response = await client.put(url, json=_body(api_base_url="http://127.0.0.1:10/v1"))
    assert response.status_code == 200 and response.json()["api_base_url"] == "http://127.0.0.1:10/v1"


async def test_rotate_secret_re_encrypts_every_key(db, client, settings):
    await client.post("/api/v1/providers", json=_body())
    new_key = "a-new-secret-key-for-rotation-0123456789"
    env = {"TERMPULSE_DATABASE_URL": db.url, "TERMPULSE_SECRET_KEY": new_key}

    wrong = await termpulse_async("rotate-secret", env={**env, "TERMPULSE_OLD_SECRET_KEY": "not-the-old-key"})
    assert wrong.returncode == 1 and "nothing changed" in wrong.stderr
    assert decrypt_api_key(settings.secret_key, (await _raw_row(db))["api_key_encrypted"]) == KEY

    weak = await termpulse_async(
        "rotate-secret",
        env={**env, "TERMPULSE_SECRET_KEY": "short", "TERMPULSE_OLD_SECRET_KEY": settings.secret_key},
    )
    assert weak.returncode == 2 and "weak" in weak.stderr

    done = await termpulse_async(
        "rotate-secret", env={**env, "TERMPULSE_OLD_SECRET_KEY": settings.secret_key}
    )
    assert done.returncode == 0, done.stderr
    assert "1 provider key(s) re-encrypted" in done.stdout
    assert decrypt_api_key(new_key, (await _raw_row(db))["api_key_encrypted"]) == KEY
