"""One line describing the machine, printed with every benchmark's figures."""

from __future__ import annotations

import os
import platform

import psutil
from sqlalchemy.engine import make_url


def describe() -> str:
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({cpu}), {mem_gib:.0f} GiB RAM, Python {platform.python_version()}"


def database_backends(url: str) -> list[psutil.Process]:
    """The PostgreSQL backends serving the database of `url` (their process title names it):
    the queries a bench sent, not another database's."""
    name = make_url(url).database or ""
    found = []
    for p in psutil.process_iter(["name", "cmdline"]):
        if p.info["name"] in ("postgres", "postmaster") and name in " ".join(p.info["cmdline"] or ()):
            found.append(p)
    return found
