"""Values the database cannot hold (app.db.is_bad_value, app.web.errors.unusable_input) and
row ids beyond their column (app.web.deps.RowId): a 422 with the reason, never a 500 nor the
"database cannot be reached" banner. Found by tests/test_api_fuzz.py. Both databases."""

from __future__ import annotations

import pytest

BEYOND_INT32 = 17738997083  # asyncpg refused it for an INTEGER id before sending: was a 500
BEYOND_INT64 = 7474681188214070195519488  # SQLite's driver cannot bind it either

ID_ROUTES = [
    ("GET", "/api/v1/providers/{id}"),
    ("PUT", "/api/v1/providers/{id}/key"),
    ("DELETE", "/api/v1/providers/{id}"),
    ("POST", "/api/v1/providers/{id}/test"),
    ("GET", "/api/v1/agents/{id}"),
    ("POST", "/api/v1/agents/{id}/rotate"),
    ("POST", "/api/v1/agents/{id}/revoke"),
    ("GET", "/api/v1/maintenance-windows/{id}"),
    ("POST", "/api/v1/maintenance-windows/{id}/end"),
    ("GET", "/api/v1/incidents/{id}"),
    ("POST", "/api/v1/incidents/{id}/ack"),
]


@pytest.mark.parametrize(("method", "route"), ID_ROUTES)
async def test_an_id_no_row_can_have_is_a_422_naming_the_bound(client, method, route):
    for bad in (BEYOND_INT32, BEYOND_INT64, 0, -1):
        if "incidents" in route and bad == BEYOND_INT32:
            continue  # incidents' ids are BIGINT: a 404 for this one
        body = {"api_key": "sk_test_12345678"} if route.endswith("/key") else None
        answer = await client.request(method, route.format(id=bad), json=body)
        assert answer.status_code == 422, (route, bad, answer.text)
        (problem,) = answer.json()["detail"]
        assert problem["loc"][0] == "path" and problem["type"] in ("greater_than_equal", "less_than_equal")
    assert (await client.get("/api/v1/incidents/17738997083")).status_code == 404


async def test_a_value_the_database_refuses_is_a_422_on_pages_too(client, db):
    # Pages keep plain int ids: the database's refusal itself is mapped (SQLSTATE class 22 on
    # PostgreSQL, the driver's OverflowError on SQLite), not a 500 nor the "cannot be reached" page.
    for path in (f"/admin/providers/{BEYOND_INT64}", f"/admin/users/{BEYOND_INT64}"):
        page = await client.get(path)
        assert page.status_code == 422, (path, page.status_code)
        assert "cannot be stored" in page.text and "cannot be reached" not in page.text


def test_what_counts_as_a_bad_value():
    from sqlalchemy.exc import DataError, DBAPIError, OperationalError

    from app.db import is_bad_value

    class DriverError(Exception):
        def __init__(self, sqlstate):
            self.sqlstate = sqlstate

    def wrapped(sqlstate, kind=DBAPIError):
        return kind("SELECT 1", {}, DriverError(sqlstate))

    assert is_bad_value(wrapped("22003")) and is_bad_value(wrapped("22021")) and is_bad_value(OverflowError())
    assert is_bad_value(wrapped(None, DataError))
    assert not is_bad_value(wrapped("23505")) and not is_bad_value(wrapped("08006", OperationalError))
    assert not is_bad_value(ValueError("x"))
