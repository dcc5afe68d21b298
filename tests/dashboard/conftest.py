"""Dashboard fixtures: checks may run from route tests, so DNS goes to a closed loopback port
and only loopback targets are allowed: nothing leaves 127.0.0.0/8."""

from __future__ import annotations

import pytest

from app.dashboard import queries


@pytest.fixture
def settings(db, tmp_path):
    from app.config import Settings

    return Settings(
        database_url=db.url,
        secret_key="test-secret-key",
        allowed_networks=["127.0.0.0/8"],
        provider_hosts=["127.0.0.1"],  # the provider simulators
        dns_nameservers=["127.0.0.1"],
        dns_port=9,
        check_timeout_s=1.0,
    )


@pytest.fixture(autouse=True)
def _fresh_caches(monkeypatch):
    monkeypatch.setattr(queries, "LIVE_CACHE_TTL_S", 0.0)  # tests look right after each change
    queries.clear_caches()
    yield
    queries.clear_caches()
