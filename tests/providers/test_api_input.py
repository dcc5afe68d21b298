"""Provider account fields that must be text refuse anything else with a 422 naming the field
(`"management_base_url": {}` was a 500: `.strip()` on a dict). Found by tests/test_api_fuzz.py."""

ACCOUNT = {"name": "A", "kind": "stripe", "api_key": "sk_test_12345678"}


async def test_urls_and_choices_must_be_text(db, client):
    for bad in (
        {"api_base_url": True},
        {"management_base_url": {}},
        {"kind": ["stripe"]},
        {"environment": 1},
    ):
        answer = await client.post("/api/v1/providers", json={**ACCOUNT, **bad})
        assert answer.status_code == 422, (bad, answer.text)
        field = next(iter(bad))
        assert any(e["loc"][-1] == field for e in answer.json()["detail"]), answer.text
    assert (await client.post("/api/v1/providers", json={**ACCOUNT, "api_base_url": None})).status_code == 201
