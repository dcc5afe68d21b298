"""A window's scope must be text: anything else is a 422 naming it, not its Python spelling
turned into a scope. Found by tests/test_api_fuzz.py."""


async def test_the_scope_must_be_text(db, client):
    for scope in (5, ["store"], {}):
        body = {
            "title": "t",
            "scope": scope,
            "starts_at": "2099-01-01T00:00Z",
            "ends_at": "2099-01-02T00:00Z",
        }
        answer = await client.post("/api/v1/maintenance-windows", json=body)
        assert answer.status_code == 422 and answer.json()["detail"][0]["loc"][-1] == "scope", answer.text
