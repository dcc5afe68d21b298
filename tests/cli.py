"""The `termpulse` command, run in process: `app.cli.main(argv)` with its own environment,
standard input and output, as a user's shell would give them (no interpreter to start, so a
call costs what the command does, not a second of imports).

main() runs the command with asyncio.run / uvloop.run, which needs a thread without a running
event loop: async tests call `await termpulse_async(...)` (a worker thread), sync ones
`termpulse(...)`. One test (tests/test_cli.py) still runs `python -m app.cli` in a subprocess.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import sys
import threading
from dataclasses import dataclass

from app.cli import main
from app.config import get_settings

_one_at_a_time = threading.Lock()  # the process's environment and standard streams are shared


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


def termpulse(*argv: str, env: dict[str, str] | None = None, stdin: str = "") -> Ran:
    """Run `termpulse ARGV...` with these TERMPULSE_* variables set (others as they are)."""
    with _one_at_a_time:
        saved_env = {k: os.environ.get(k) for k in env or {}}
        saved_streams = sys.stdin, sys.stdout, sys.stderr
        root = logging.getLogger()
        saved_handlers, saved_level = root.handlers[:], root.level  # main() configures logging
        out, err = io.StringIO(), io.StringIO()
        os.environ.update(env or {})
        get_settings.cache_clear()
        sys.stdin, sys.stdout, sys.stderr = io.StringIO(stdin), out, err
        try:
            code = main(list(argv))
        except SystemExit as exc:  # argparse errors
            code = exc.code if isinstance(exc.code, int) else 2
        finally:
            sys.stdin, sys.stdout, sys.stderr = saved_streams
            root.handlers[:] = saved_handlers
            root.setLevel(saved_level)
            for key, value in saved_env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            get_settings.cache_clear()
        return Ran(code, out.getvalue(), err.getvalue())


async def termpulse_async(*argv: str, env: dict[str, str] | None = None, stdin: str = "") -> Ran:
    """termpulse() from a test running on the event loop: in a thread of its own."""
    return await asyncio.to_thread(termpulse, *argv, env=env, stdin=stdin)
