"""The main form posts (store, terminal, provider account, user) with odd strings in every
field: NUL and other control characters, huge values, non-ASCII, numbers as strings. Whatever
comes in, the answer is a page (a redirect, or the form with its errors), never a 500 nor the
false "database cannot be reached" banner. Hypothesis, bounded and derandomized; both databases.
The schemathesis run (tests/test_api_fuzz.py) does the same for the JSON API."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.test_auth import add_user
from tests.test_sessions import COOKIE, login

ODD = st.one_of(
    st.text(max_size=40),  # any characters, control ones included
    st.sampled_from(
        ["", " ", "\x00", "a\x00b", "\x1b[31m", "x" * 70_000, "é" * 300, "😀" * 80, "\u202e", "NaN", "1e999"]
    ),
    st.integers().map(str),  # numbers as strings, far beyond any column
    st.floats(allow_nan=True).map(str),
)

FORMS = {
    "/admin/stores/new": (
        "code name region timezone adyen_store_id stripe_location_id network_profile tags "
        "check_interval_s check_timeout_s down_after up_after"
    ),
    "/admin/terminals/new": (
        "store_code poiid model serial label provider provider_terminal_id integration lan_host "
        "lan_port local_api mac cloud_enabled tcp_ports"
    ),
    "/admin/providers/new": (
        "name kind environment region merchant_account api_base_url management_base_url "
        "use_legacy_api requests_per_second poll_interval_s api_key"
    ),
    "/admin/users": "username role password",
}


@pytest.fixture
async def admin_cookie(db, client):
    await add_user(db, "root", "admin")
    client._transport.app.state.user_count_cache = [0.0, 0]
    cookie = await login(client, "root")
    client.cookies.clear()
    return cookie


@pytest.mark.parametrize("path", FORMS)
@settings(
    max_examples=12,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@given(data=st.data())
async def test_odd_form_input_is_a_page_never_a_server_error(client, admin_cookie, path, data):
    fields = FORMS[path].split()
    form = data.draw(st.fixed_dictionaries({}, optional={name: ODD for name in fields}), label="form")
    page = await client.post(path, data=form, headers={"Cookie": f"{COOKIE}={admin_cookie}"})
    assert page.status_code in (200, 303, 409, 413, 422), (page.status_code, page.text[:300])
    assert "database cannot be reached" not in page.text
