"""Check connection is limited per user (TERMPULSE_CHECK_PER_USER_PER_MINUTE, default 20): past
it a 429 saying when to try again (JSON under /api; on the terminal page the message where the
result goes), other users unaffected, the refusal in the audit log. Both databases."""

import httpx
from sqlalchemy import select

from app.auth.models import AuditEvent
from app.main import create_app
from tests.html import dom, one, text
from tests.test_auth import add_user, basic


async def test_check_connection_is_limited_per_user(db, settings):
    await add_user(db, "sam", "support")
    await add_user(db, "sue", "support")
    app = create_app(settings.model_copy(update={"check_per_user_per_minute": 2}), database=db)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as http:
        for _ in range(2):
            assert (
                await http.post("/api/v1/terminals/P-NONE/check", headers=basic("sam"))
            ).status_code == 404
        refused = await http.post("/api/v1/terminals/P-NONE/check", headers=basic("sam"))
        assert refused.status_code == 429 and 0 < int(refused.headers["retry-after"]) <= 60
        assert "pressed Check connection 2 times within a minute" in refused.json()["detail"]
        pressed = await http.post("/terminals/P-NONE/check", headers={**basic("sam"), "HX-Request": "true"})
        assert pressed.status_code == 200 and "try again in" in text(one(dom(pressed), ".banner.error"))
        assert (await http.post("/api/v1/terminals/P-NONE/check", headers=basic("sue"))).status_code == 404
    async with db.sessionmaker() as session:
        outcomes = [
            e.outcome
            for e in await session.scalars(
                select(AuditEvent).where(AuditEvent.username == "sam").order_by(AuditEvent.id)
            )
        ]
    assert outcomes == ["failed", "failed", "refused", "refused"]
