"""Request bodies are limited (TERMPULSE_UPLOAD_MAX_MB, default 20 MB): a larger CSV import or
API call is a 413 with a clear reason (a page for the import form, JSON under /api), never a
500 nor a body read to its end. Both databases."""

import httpx

from app.config import Settings
from app.main import create_app
from tests.html import dom, one, text


def test_the_default_is_20_mb():
    assert Settings().upload_max_mb == 20


async def test_a_larger_upload_is_a_413_with_the_reason(db, settings):
    app = create_app(settings.model_copy(update={"upload_max_mb": 0.01}), database=db)  # 10 KiB
    big = b"code,name\n" + b"S-1,x\n" * 4000
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as http:
        page = await http.post("/admin/import/preview", files={"stores": ("stores.csv", big, "text/csv")})
        assert page.status_code == 413 and page.headers["content-type"].startswith("text/html")
        assert "larger than TermPulse takes (0.01 MB, TERMPULSE_UPLOAD_MAX_MB)" in text(
            one(dom(page), ".banner.error")
        )
        api = await http.post("/api/v1/stores", content=b'{"code": "' + b"x" * 20000 + b'"}')
        assert api.status_code == 413 and "detail" in api.json()
        small = await http.post(
            "/admin/import/preview", files={"stores": ("stores.csv", b"code,name\nS-1,x\n", "text/csv")}
        )
        assert small.status_code != 413


async def test_a_body_without_a_length_is_counted_as_it_is_read(db, settings):
    app = create_app(settings.model_copy(update={"upload_max_mb": 0.01}), database=db)

    async def chunks():
        for _ in range(30):
            yield b"x" * 1000

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as http:
        api = await http.post(
            "/api/v1/stores", content=chunks(), headers={"Content-Type": "application/json"}
        )
        assert api.status_code == 413 and "TERMPULSE_UPLOAD_MAX_MB" in api.json()["detail"]
