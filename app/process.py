"""Settings of a long-running process (`serve`, `worker` and its processes), made once it is set up."""

from __future__ import annotations

import gc
import resource

# Young collections every GC_YOUNG allocations, not Python's 700: a request waiting for the
# agents' writer (a few hundred ms) outlived two young collections and was moved to the old
# generation, so full collections (walking the whole heap, ~0.5 s under 2,000 store agents)
# ran every ~10 s: a quarter of the server's CPU (bench/agents.py). Now such requests die young.
GC_YOUNG = 20_000


def tune_gc() -> None:
    """For a serving or checking process, once it is set up: what exists by then (modules,
    tables, routes, templates) lives as long as the process and is frozen out of the
    collector's sight, and young collections run less often (GC_YOUNG). A worker's checks and
    results live for a fraction of a second too, like the requests."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG, *gc.get_threshold()[1:])


def raise_fd_limit() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit: every check in flight (a worker's concurrency)
    and every simulated endpoint is a socket, and the usual soft limit is 1,024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard
