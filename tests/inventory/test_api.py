"""JSON API: paginated and filterable; bad input answers 4xx with a reason."""

from app.inventory.csvimport import import_fleet
from tests.fleet import sample_files


async def load_sample(db):
    async with db.sessionmaker() as session:
        await import_fleet(session, sample_files())


async def test_list_filter_and_paginate(db, client):
    await load_sample(db)
    page = (await client.get("/api/v1/stores", params={"per_page": 25, "page": 3})).json()
    assert (page["total"], len(page["items"]), page["page"]) == (60, 10, 3)
    north = (await client.get("/api/v1/stores", params={"region": "North", "per_page": 500})).json()
    assert north["total"] > 0 and {s["region"] for s in north["items"]} == {"North"}

    terminals = (await client.get("/api/v1/terminals", params={"store": "S-0001"})).json()
    assert terminals["total"] == 4 and all(t["store_code"] == "S-0001" for t in terminals["items"])
    search = (await client.get("/api/v1/terminals", params={"q": "203097992"})).json()
    assert [t["poiid"] for t in search["items"]] == ["Move5000-203097992"]


async def test_terminal_crud_with_normalisation(db, client):
    await load_sample(db)
    body = {
        "store_code": "S-0004",
        "poiid": "P400Plus\u2011999",
        "model": "P400Plus",
        "serial": "999",
        "provider": "adyen",
        "integration": "both",
        "lan_host": "127.1.4.9",
        "local_api": "adyen_local",
        "mac": "02-00-00-04-09-AA",
        "cloud_enabled": True,
    }
    created = await client.post("/api/v1/terminals", json=body)
    assert created.status_code == 201, created.text
    assert created.json()["poiid"] == "P400Plus-999" and created.json()["mac"] == "02:00:00:04:09:aa"
    assert created.json()["lan_port"] == 8443

    duplicate = await client.post("/api/v1/terminals", json={**body, "poiid": "P400Plus-999"})
    assert duplicate.status_code == 409 and duplicate.json()["detail"]["field"] == "poiid"

    moved = await client.put("/api/v1/terminals/P400Plus-999", json={**body, "store_code": "S-0005"})
    assert moved.status_code == 200 and moved.json()["store_code"] == "S-0005"
    assert (
        await client.put("/api/v1/terminals/P400Plus-999", json={**body, "store_code": "S-9999"})
    ).status_code == 409

    assert (await client.get("/api/v1/terminals/P400Plus\u2013999")).status_code == 200  # any dash finds it
    assert (await client.delete("/api/v1/terminals/P400Plus-999")).status_code == 204
    assert (await client.get("/api/v1/terminals/P400Plus-999")).status_code == 404


async def test_bad_input_is_4xx_with_reason(db, client):
    bad = await client.post(
        "/api/v1/terminals",
        json={
            "store_code": "S-1",
            "poiid": "x",
            "integration": "local",
            "local_api": "tcp",
            "lan_host": "127.0.0.1",
            "lan_port": 70000,
        },
    )
    assert bad.status_code == 422
    assert any(e["loc"][-1] == "lan_port" for e in bad.json()["detail"])
    assert (await client.get("/api/v1/stores", params={"per_page": 0})).status_code == 422
    assert (await client.get("/api/v1/stores/NOPE")).status_code == 404
    assert (
        await client.post(
            "/api/v1/stores", content=b"{not json", headers={"content-type": "application/json"}
        )
    ).status_code == 422


async def test_store_delete_refused_while_it_has_terminals(db, client):
    await load_sample(db)
    refused = await client.delete("/api/v1/stores/S-0001")
    assert refused.status_code == 409 and "4 terminal(s)" in refused.json()["detail"]["reason"]
    created = await client.post(
        "/api/v1/stores", json={"code": "S-NEW", "name": "New", "network_profile": "adyen-cloud"}
    )
    assert created.status_code == 201
    renamed = await client.put("/api/v1/stores/S-NEW", json={"code": "S-NEWER", "name": "Newer"})
    assert renamed.json()["code"] == "S-NEWER"
    assert (await client.delete("/api/v1/stores/S-NEWER")).status_code == 204


async def test_openapi_and_ops_endpoints(db, client):
    spec = (await client.get("/openapi.json")).json()
    assert "/api/v1/terminals" in spec["paths"] and "/api/v1/stores/{code}" in spec["paths"]
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    assert (await client.get("/readyz")).json() == {"status": "ok"}
    metrics = (await client.get("/metrics")).text
    assert "termpulse_http_requests_total" in metrics


async def test_unknown_filter_values_are_422_with_the_choices(db, client):
    """A filter with a fixed set of values refuses others (not an empty list that reads as 'none')."""
    await load_sample(db)
    for params, field, word in (
        ({"status": "bogus"}, "status", "'down'"),
        ({"status": "UP"}, "status", "'up'"),
        ({"provider": "visa"}, "provider", "'adyen'"),
    ):
        got = await client.get("/api/v1/terminals", params=params)
        assert got.status_code == 422, params
        (problem,) = got.json()["detail"]
        assert problem["loc"] == ["query", field] and word in problem["msg"]
    down = await client.get("/api/v1/terminals", params={"status": "down", "provider": "adyen"})
    assert down.status_code == 200 and down.json()["total"] == 0
    unknown = (await client.get("/api/v1/terminals", params={"status": "unknown"})).json()
    assert unknown["total"] > 0
