"""Loopback address blocks (127.N.x.y) for the suites that bind simulated fleets.

A running demo holds the sample fleet's own 127.1.x.y, and other test sessions on the same
machine may hold theirs, so each session takes four second octets of its own from its PID,
one per use, and no two uses within a session share one.
"""

import os

_BASE = 100 + (os.getpid() % 25) * 4  # 100..199

CHECKS = _BASE  # tests/checks: terminals and named endpoints
CHECKS_SECOND_FLEET = _BASE + 1
BROWSER = _BASE + 2  # tests/browser: the live server's fleet
