"""The sample fleet the project ships, as bytes ready for import_fleet."""

from __future__ import annotations

from app.inventory.csvimport import SAMPLE_FLEET


def sample_files() -> list[tuple[str, bytes]]:
    return [(name, (SAMPLE_FLEET / name).read_bytes()) for name in ("stores.csv", "terminals.csv")]
