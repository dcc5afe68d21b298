"""Loopback address blocks (127.N.x.y) for the suites that bind simulated fleets.

A running demo holds the sample fleet's own 127.1.x.y, and other test processes on the same
machine (another session, or the other pytest-xdist workers of this one) may hold theirs, so
each process takes a block of four second octets of its own, one per use, and no two uses
within a process share one.

The block is claimed from the kernel, not guessed: the process binds a TCP socket to
127.<first octet>.255.254 (an address no fleet uses) and keeps it open while it lives, so a
second process trying the same block gets EADDRINUSE and moves on to the next one. The
kernel frees the claim when the process ends, however it ends.
"""

import os
import socket

_BLOCKS = 25  # second octets 100..199
_CLAIM_PORT = 47_999


def _claim() -> tuple[int, socket.socket]:
    start = os.getpid() % _BLOCKS
    for i in range(_BLOCKS):
        base = 100 + (start + i) % _BLOCKS * 4
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind((f"127.{base}.255.254", _CLAIM_PORT))
        except OSError:
            sock.close()
            continue
        return base, sock
    raise RuntimeError(f"all {_BLOCKS} loopback blocks 127.100-199.x.y are held by other test processes")


_BASE, _CLAIM = _claim()  # the socket stays open (and the block ours) until the process exits

CHECKS = _BASE  # tests/checks: terminals and named endpoints
CHECKS_SECOND_FLEET = _BASE + 1
BROWSER = _BASE + 2  # tests/browser: the live server's fleet
ALERTS = _BASE + 3  # tests/alerts: a blocked port 7003 and the receivers
