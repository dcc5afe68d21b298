"""/metrics is open (Prometheus scrapes it without a login) unless TERMPULSE_METRICS_TOKEN is set:
then only `Authorization: Bearer <token>` gets it. Both databases."""

import httpx

from app.main import create_app


async def test_metrics_can_require_a_token(db, settings):
    for token, headers, status in (
        ("", {}, 200),
        ("scrape-secret", {}, 401),
        ("scrape-secret", {"Authorization": "Bearer wrong"}, 401),
        ("scrape-secret", {"Authorization": "Bearer scrape-secret"}, 200),
    ):
        app = create_app(settings.model_copy(update={"metrics_token": token}), database=db)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver"
        ) as http:
            answer = await http.get("/metrics", headers=headers)
            assert answer.status_code == status, (token, headers)
            if status == 200:
                assert "termpulse_database_up" in answer.text
            else:
                assert "TERMPULSE_METRICS_TOKEN" in answer.json()["detail"]
            assert (await http.get("/healthz")).status_code == 200  # the probes stay open
