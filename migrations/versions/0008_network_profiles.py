"""network profiles as records (seeded with the shipped presets), a terminal's TCP port list

The stores keep the profile names they have, and so every monitor its key, id and history.
Store network monitors say their target is a profile's destination ({"by_name": true}: the
target guard allows it by name, app.checks.context), as the profiles' hosts list did.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

# The presets as of this revision (app.inventory.profiles.PRESETS), copied: a migration stays
# what it was when later code changes.
_TLS = ["dns", "tcp", "tls"]
_FULLSTEAM = [
    {"host": "prodssl.protectedtransactions.com", "port": 443, "checks": _TLS},
    {"host": "temterminalsnar01.icloud.ingenico.com", "port": 7003, "checks": ["dns", "tcp"]},
]
_ADYEN = [{"host": "terminal-api-live.adyen.com", "port": 443, "checks": _TLS}]
_STRIPE = [
    {"host": h, "port": 443, "checks": _TLS}
    for h in ("api.stripe.com", "armada.stripe.com", "gator.stripe.com", "api.emms.bbpos.com")
]
PRESETS = [
    ("fullsteam-ingenico", "Fullsteam processor and Ingenico terminal management", _FULLSTEAM),
    ("adyen-cloud", "Adyen's cloud Terminal API", _ADYEN),
    ("paynt-local", "Paynt terminals on the LAN: their own EPOS checks cover it", []),
    ("mixed", "Fullsteam/Ingenico and Adyen cloud", _FULLSTEAM + _ADYEN),
    ("stripe-terminal", "Stripe Terminal readers", _STRIPE),
]

_monitors = sa.table("monitors", sa.column("terminal_id", sa.Integer()), sa.column("params", JSON))


def upgrade() -> None:
    profiles = op.create_table(
        "network_profiles",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("description", sa.String(length=500), nullable=False),
        sa.Column("destinations", JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    now = datetime.now(UTC)
    op.bulk_insert(
        profiles,
        [
            {"name": n, "description": d, "destinations": dests, "created_at": now, "updated_at": now}
            for n, d, dests in PRESETS
        ],
    )
    op.execute(_monitors.update().where(_monitors.c.terminal_id.is_(None)).values(params={"by_name": True}))
    with op.batch_alter_table("terminals") as batch:
        batch.add_column(sa.Column("tcp_ports", sa.String(length=200), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("terminals") as batch:
        batch.drop_column("tcp_ports")
    op.execute(_monitors.update().where(_monitors.c.terminal_id.is_(None)).values(params={}))
    op.drop_table("network_profiles")
