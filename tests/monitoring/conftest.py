"""Fixtures of the scheduling engine tests (the helpers live in helpers.py)."""

from tests.monitoring.helpers import ctx, servers  # noqa: F401
