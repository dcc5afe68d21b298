"""monitors keep free room in each page (fillfactor 50) on PostgreSQL

A worker rewrites a monitor's row several times per check: the claim (lease), the lease
renewals while the result waits, and the result (state, due time). The claim and the renewals
change no indexed column, so PostgreSQL can write them as heap-only tuples (no index entries)
when the row's page has room: with the default fillfactor of 100 pages are full and almost
every update also writes an entry in each of the table's six indexes. Measured with
bench/peers.py (pg_stat_user_tables): 17 % of the monitors' updates were heap-only before, 55 %
after. New and rewritten pages take the setting; SQLite has no such thing.

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE monitors SET (fillfactor = 50)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE monitors RESET (fillfactor)")
