"""The command line's changes are in the audit log as the pages' are: `termpulse agent-token`
(create, rotate, revoke) and `termpulse rotate-secret`, by the system user "(command line)".
Both databases."""

from sqlalchemy import select

from app.auth.models import AuditEvent
from tests.cli import termpulse_async


async def audit_log(db):
    async with db.sessionmaker() as session:
        rows = await session.scalars(select(AuditEvent).order_by(AuditEvent.id))
        return [(e.action, e.target, e.detail, e.username, e.address) for e in rows]


async def test_agent_tokens_and_secret_rotation_are_audited(db, client, settings):
    assert (await client.post("/api/v1/stores", json={"code": "S-1", "name": "One"})).status_code == 201
    env = {"TERMPULSE_DATABASE_URL": db.url}
    for argv in (
        ("agent-token", "create", "--store", "S-1", "--name", "back office"),
        ("agent-token", "rotate", "back office"),
        ("agent-token", "revoke", "back office"),
    ):
        ran = await termpulse_async(*argv, env=env)
        assert ran.returncode == 0, ran.stderr
    new_key = "a-new-secret-key-for-rotation-0123456789"
    ran = await termpulse_async(
        "rotate-secret",
        env={**env, "TERMPULSE_SECRET_KEY": new_key, "TERMPULSE_OLD_SECRET_KEY": settings.secret_key},
    )
    assert ran.returncode == 0, ran.stderr

    entries = [e for e in await audit_log(db) if e[4] == "command line"]
    assert [e[:3] for e in entries] == [
        ("agent change", "back office", "termpulse agent-token: created for S-1"),
        ("agent change", "back office", "termpulse agent-token: token rotated"),
        ("agent change", "back office", "termpulse agent-token: revoked"),
        ("secret rotated", "", "0 provider key(s) and 0 other secret(s) re-encrypted under the new key"),
    ]
    assert all(e[3].endswith("(command line)") for e in entries)
