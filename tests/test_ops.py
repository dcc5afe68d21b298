"""Operations endpoints: /metrics (the fleet's gauges from the database, the checks' counters)
and /docs (Swagger UI served from /static: it works without internet)."""

from __future__ import annotations

from datetime import timedelta

from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update

from app.db import utcnow
from app.inventory.csvimport import import_fleet
from app.inventory.models import Monitor, Store, Terminal
from app.monitoring.metrics import count_check, count_poll
from tests.fleet import sample_files
from tests.html import dom


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_metrics_gauges_by_state_and_region_and_counters(db, client):
    async with db.sessionmaker() as session:
        await import_fleet(session, sample_files())
        await session.execute(update(Terminal).where(Terminal.poiid.like("%1")).values(status="down"))
        await session.execute(update(Store).where(Store.code == "S-0001").values(status="degraded"))
        # two monitors overdue by a minute and more, one down with its diagnosis
        ids = (await session.scalars(Monitor.__table__.select().with_only_columns(Monitor.id).limit(2))).all()
        await session.execute(
            update(Monitor).where(Monitor.id == ids[0]).values(next_due_at=utcnow() - timedelta(minutes=5))
        )
        await session.execute(
            update(Monitor)
            .where(Monitor.id == ids[1])
            .values(next_due_at=utcnow() - timedelta(minutes=1), state="down", last_diagnosis="tcp_timeout")
        )
        await session.commit()
        n_terminals = len(
            (await session.scalars(Terminal.__table__.select().with_only_columns(Terminal.id))).all()
        )
    count_check("tcp", "fail", "tcp_timeout")
    count_check("dns", "ok", None)
    count_poll("adyen", "provider_rate_limited")

    got = await client.get("/metrics")
    assert got.status_code == 200 and got.headers["content-type"].startswith("text/plain")
    m = samples(got.text)
    terminals = {k[1]: v for k, v in m.items() if k[0] == "termpulse_terminals"}
    assert sum(terminals.values()) == n_terminals
    assert any(dict(labels)["state"] == "down" for labels in terminals)
    assert all(set(dict(labels)) == {"state", "region"} for labels in terminals)
    stores = {k[1]: v for k, v in m.items() if k[0] == "termpulse_stores"}
    assert sum(stores.values()) == 60 and any(dict(lb)["state"] == "degraded" for lb in stores)
    assert m[("termpulse_monitors_overdue", ())] >= 2
    assert m[("termpulse_schedule_lag_seconds", ())] >= 300
    failing = {dict(k[1])["diagnosis"] for k in m if k[0] == "termpulse_monitors_failing"}
    assert "tcp_timeout" in failing
    assert sum(v for k, v in m.items() if k[0] == "termpulse_monitors") > 0
    assert m[("termpulse_database_up", ())] == 1.0
    assert m[("termpulse_checks_total", (("kind", "tcp"), ("outcome", "fail")))] >= 1
    assert m[("termpulse_check_failures_total", (("diagnosis", "tcp_timeout"), ("kind", "tcp")))] >= 1
    assert (
        m[
            (
                "termpulse_provider_poll_errors_total",
                (("diagnosis", "provider_rate_limited"), ("provider", "adyen")),
            )
        ]
        >= 1
    )
    assert "termpulse_check_start_lag_seconds_bucket" in got.text
    assert "termpulse_http_requests_total" in got.text


async def test_docs_work_offline(db, client):
    """/docs loads Swagger UI from this server: no external host in the page."""
    page = await client.get("/docs")
    assert page.status_code == 200
    assert "http://" not in page.text and "https://" not in page.text and "//cdn" not in page.text
    d = dom(page)
    assets = [e.get("src") for e in d.cssselect("script[src]")] + [
        e.get("href") for e in d.cssselect("link[href]")
    ]
    assert assets and all(a.startswith("/static/") for a in assets), assets
    for asset in assets:
        got = await client.get(asset)
        assert got.status_code == 200 and len(got.content) > 100, asset
    assert (await client.get("/redoc")).status_code == 404  # ReDoc would need a CDN: not offered
    assert (await client.get("/openapi.json")).json()["info"]["title"] == "TermPulse"
