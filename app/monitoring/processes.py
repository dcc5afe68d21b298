"""Several processes of one command: checking workers (`termpulse worker --processes N`,
`termpulse serve --checker-processes N`) and web processes (`termpulse serve --workers N`).

One worker process uses one core (its event loop); a machine's cores are used by running one
per core. They share the fleet through the leases like workers on several hosts do, so a
process that dies loses nothing: its monitors run again when their leases expire (10 s), and
the supervisor starts it again. PostgreSQL only: SQLite has one worker, said at start.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal
import subprocess
import sys
import threading
import time

log = logging.getLogger(__name__)

RESTART_DELAY_S = 2.0
MAX_RESTARTS_PER_MINUTE = 5  # past this a child fails at once: stop restarting it, say so


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the parent dies (Linux prctl PR_SET_PDEATHSIG)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the supervisor's own stop() is what stops them


def default_processes() -> int:
    return max(1, os.cpu_count() or 1)


def _child_command() -> list[str]:
    return [sys.executable, "-m", "app.cli", "worker", "--processes", "1"]


class Supervisor:
    """Starts `count` worker processes, starts again one that dies (not too often), stops
    them all on `stop()` (SIGTERM, then SIGKILL after `grace_s`). `what` names them in the log;
    `pass_fds` and `env` go to each (web processes share the listening socket)."""

    def __init__(
        self,
        count: int,
        *,
        command: list[str] | None = None,
        grace_s: float = 30.0,
        what: str = "worker",
        pass_fds: tuple[int, ...] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.count = count
        self.command = command or _child_command()
        self.grace_s = grace_s
        self.what = what
        self.pass_fds = pass_fds
        self.env = env
        self.children: list[subprocess.Popen[bytes] | None] = [None] * count
        self._restarts: list[list[float]] = [[] for _ in range(count)]
        self._given_up: set[int] = set()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Supervisor:
        for i in range(self.count):
            self._spawn(i)
        self._thread = threading.Thread(target=self._watch, name="termpulse-supervisor", daemon=True)
        self._thread.start()
        log.info(
            "%d %s processes started (pids %s)",
            self.count,
            self.what,
            ", ".join(str(p.pid) for p in self._alive()),
        )
        return self

    def _spawn(self, i: int) -> None:
        # Its own process group: a Ctrl-C in the terminal reaches the supervisor only, which
        # stops the children in order (else they would stop before the supervisor knew). And
        # a SIGTERM from the kernel when the supervisor dies however it dies (uvicorn re-raises
        # the signal that stopped it, which ends `serve` before any `finally`): never an orphan.
        self.children[i] = subprocess.Popen(
            self.command,
            start_new_session=True,
            preexec_fn=_die_with_parent,
            pass_fds=self.pass_fds,
            env=self.env,
        )

    def _alive(self) -> list[subprocess.Popen[bytes]]:
        return [c for c in self.children if c is not None and c.poll() is None]

    def _watch(self) -> None:
        while not self._stopping.wait(0.5):
            for i, child in enumerate(self.children):
                if child is None or child.poll() is None or i in self._given_up or self._stopping.is_set():
                    continue
                now = time.monotonic()
                recent = [t for t in self._restarts[i] if now - t < 60] + [now]
                self._restarts[i] = recent
                if len(recent) > MAX_RESTARTS_PER_MINUTE:
                    self._given_up.add(i)
                    log.error(
                        "%s process %d keeps exiting (status %s, %d times in a minute): not restarted",
                        self.what,
                        i + 1,
                        child.returncode,
                        len(recent),
                    )
                    continue
                log.warning(
                    "%s process %d (pid %d) exited with status %s: starting it again in %.0f s",
                    self.what,
                    i + 1,
                    child.pid,
                    child.returncode,
                    RESTART_DELAY_S,
                )
                if not self._stopping.wait(RESTART_DELAY_S):
                    self._spawn(i)

    @property
    def failed(self) -> bool:
        """Every process has been given up (each kept exiting at once)."""
        return len(self._given_up) == self.count

    def stop(self) -> int:
        """Stop every process; 0 if all stopped cleanly."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=RESTART_DELAY_S + 1)
        alive = self._alive()
        for child in alive:
            child.terminate()
        deadline = time.monotonic() + self.grace_s
        status = 0
        for child in alive:
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning(
                    "%s process %d did not stop in %.0f s: killed", self.what, child.pid, self.grace_s
                )
                child.kill()
                child.wait()
            status = status or (child.returncode or 0)
        return status
