"""The `termpulse` command.

Each command imports what it runs when it runs: `termpulse agent` on a store's back-office
PC or Raspberry Pi must not load the server's database and web stack (about 60 MB)."""

from __future__ import annotations

import argparse
import asyncio
import errno
import os
import secrets
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from app.agent.cli import add_arguments as add_agent_arguments
from app.config import Settings, get_settings, weak_secret_key
from app.logging import configure_logging
from app.monitoring.processes import Supervisor, default_processes

if TYPE_CHECKING:
    import socket

    from fastapi import FastAPI


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="termpulse", description="Connectivity dashboard for payment terminals."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="migrate the database, then serve the dashboard")
    serve.add_argument("--host", default=None)
    serve.add_argument("--port", type=int, default=None)
    serve.add_argument("--no-worker", action="store_true", help="serve pages only, run no checks")
    serve.add_argument(
        "--checker-processes",
        type=int,
        default=0,
        metavar="N",
        help="run the checker as N processes beside the web server (PostgreSQL; default: in the server)",
    )
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="serve pages from N processes sharing the port (PostgreSQL; the checker then runs as "
        "--checker-processes, default 1)",
    )
    serve.add_argument("--listen-fd", type=int, default=None, help=argparse.SUPPRESS)  # one of --workers
    serve.add_argument(
        "--demo", action="store_true", help="fresh SQLite demo database with a simulated fleet"
    )

    demo = sub.add_parser("demo", help="same as serve --demo")
    demo.add_argument("--host", default=None)
    demo.add_argument("--port", type=int, default=None)

    sub.add_parser("migrate", help="upgrade the database schema to the newest version")
    worker = sub.add_parser("worker", help="run checks only (add more workers to share the fleet)")
    worker.add_argument(
        "--processes",
        type=int,
        default=None,
        metavar="N",
        help="worker processes sharing the fleet (PostgreSQL; default: one per core; SQLite: 1)",
    )

    imp = sub.add_parser("import", help="import stores and terminals from CSV (all or nothing)")
    imp.add_argument("files", nargs="+", metavar="CSV", help="STORES.csv [TERMINALS.csv]")
    imp.add_argument("--dry-run", action="store_true", help="validate and report, write nothing")

    check = sub.add_parser(
        "check", help="check one terminal (or --store: a whole store) now and explain the result"
    )
    check.add_argument("poiid", nargs="?", help="the terminal's POIID")
    check.add_argument("--store", metavar="CODE", help="check every network and terminal check of this store")
    check.add_argument("--json", action="store_true")

    agent = sub.add_parser("agent", help="run a store agent: this store's checks, reported to the server")
    add_agent_arguments(agent)

    export = sub.add_parser("export", help="export uptime history as CSV or XLSX")
    export.add_argument("--scope", choices=("terminal", "store", "region", "fleet"), default="fleet")
    export.add_argument("--id", help="POIID, store code or region name")
    export.add_argument("--from", dest="since", help="start date (YYYY-MM-DD)")
    export.add_argument("--to", dest="until", help="end date (YYYY-MM-DD)")
    export.add_argument(
        "--by",
        choices=("terminal", "store", "region"),
        default=None,
        help="one row per terminal (default), store or region",
    )
    export.add_argument(
        "--per-day",
        action="store_true",
        help="CSV: the per-day table (one row per unit and local day) instead of the summary",
    )
    export.add_argument("--format", choices=("csv", "xlsx"), default="csv")
    export.add_argument("--output", "-o", help="file to write (default: standard output, CSV only)")

    user = sub.add_parser("create-user", help="create a user (asks for the password)")
    user.add_argument("username")
    user.add_argument(
        "--role",
        choices=("viewer", "support", "manager", "admin", "operator"),
        help="what the user may do (asked when not given; operator is the old name of support)",
    )
    user.add_argument("--password", help="take the password from here instead of asking")

    token = sub.add_parser("agent-token", help="enrol store agents: create, rotate or revoke their tokens")
    token.add_argument("action", choices=("create", "rotate", "revoke", "list"))
    token.add_argument("agent", nargs="?", help="agent id or name (rotate, revoke)")
    token.add_argument("--store", action="append", default=[], help="store code (create; repeat for several)")
    token.add_argument("--name", help="the agent's name (create; default: '<first store> agent')")

    sub.add_parser(
        "rotate-secret",
        help="re-encrypt stored provider keys (old key: TERMPULSE_OLD_SECRET_KEY, new: TERMPULSE_SECRET_KEY)",
    )

    sim = sub.add_parser("simulate", help="run the terminal, DNS and provider simulators on loopback")
    sim.add_argument("--fleet", default=None, help="terminals CSV (default: the sample fleet)")
    sim.add_argument("--dns-port", type=int, default=5353)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    handler = COMMANDS[args.command]
    if args.command not in NO_DATABASE:
        print(f"termpulse {args.command}: database {database_words(args, settings)}", file=sys.stderr)
    try:
        return handler(args, settings) or 0
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `termpulse export ... | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        print(
            f"termpulse {args.command}: {exc.strerror}. Another TermPulse (a demo or a simulator) may be "
            "running: stop it, or choose another --port.",
            file=sys.stderr,
        )
        return 2


NO_DATABASE = frozenset({"agent", "simulate"})  # the commands that open no database


def database_words(args: argparse.Namespace, settings: Settings) -> str:
    """The database a command uses, as a person can check it: the URL without its password,
    and a SQLite file's full path (`./termpulse.db` depends on the directory one is in)."""
    from sqlalchemy.engine import make_url

    if args.command == "demo" or getattr(args, "demo", False):
        from app.demo import DEMO_DATABASE

        return f"{DEMO_DATABASE.resolve()} (the demo's, made afresh at each start)"
    url = make_url(settings.database_url)
    words = url.render_as_string(hide_password=True)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        words += f" ({Path(url.database).resolve()})"
    return words


def _serve(args: argparse.Namespace, settings: Settings) -> int:

    from app.demo import run_demo
    from app.main import create_app

    if args.command == "demo" or args.demo:
        return run_demo(settings, host=args.host or settings.host, port=args.port or settings.port)
    if refused := _refuse_weak_secret(args, settings):
        return refused
    if args.listen_fd is not None:
        return _serve_one_of_many(args, settings)
    if args.workers != 1:
        return _serve_many(args, settings)
    _migrate(args, settings)
    checkers = (
        _processes(args.checker_processes, settings, "--checker-processes") if args.checker_processes else 0
    )
    if checkers is None:
        return 2
    # A fresh install (no user yet) serves only the setup page, with this token from the log.
    setup_token = secrets.token_urlsafe(18)
    app = create_app(settings, run_worker=not args.no_worker and not checkers, setup_token=setup_token)
    supervisor = Supervisor(checkers).start() if checkers else None
    try:
        _run_server(app, args, settings)
    finally:
        if supervisor is not None:
            supervisor.stop()
    return 0


SETUP_TOKEN_ENV = "TERMPULSE_SETUP_TOKEN"  # from `serve --workers N` to its web processes


def _serve_many(args: argparse.Namespace, settings: Settings) -> int:
    """`serve --workers N`: N web processes accepting on one socket (bound here, inherited),
    the checker beside them as its own processes, each started again if it dies. They share
    nothing but the database (app.relay), so a request may reach any of them."""
    import signal
    import socket
    import threading

    if args.workers < 1:
        print("termpulse serve: --workers needs 1 or more", file=sys.stderr)
        return 2
    if settings.database_url.startswith("sqlite"):
        print(
            f"termpulse serve: --workers {args.workers}: SQLite is served by one process; "
            "use PostgreSQL for several",
            file=sys.stderr,
        )
        return 2
    _migrate(args, settings)
    checkers = 0 if args.no_worker else args.checker_processes or 1
    setup_token = secrets.token_urlsafe(18)
    asyncio.run(_announce_setup(settings, setup_token))
    host, port = args.host or settings.host, args.port or settings.port
    listening = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
    listening.set_inheritable(True)
    fd = listening.fileno()
    web = Supervisor(
        args.workers,
        command=[sys.executable, "-m", "app.cli", "serve", "--no-worker", "--listen-fd", str(fd)],
        what="web",
        pass_fds=(fd,),
        env={**os.environ, SETUP_TOKEN_ENV: setup_token},
    )
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    checker = Supervisor(checkers).start() if checkers else None
    web.start()
    print(f"termpulse serve: {args.workers} web processes on http://{host}:{port}", file=sys.stderr)
    while not stop.wait(1.0):
        if web.failed:
            break
    status = web.stop()
    if checker is not None:
        status = checker.stop() or status
    listening.close()
    return 1 if web.failed else status


async def _announce_setup(settings: Settings, setup_token: str) -> None:
    from app.auth.routes import announce_setup
    from app.db import Database

    database = Database(settings.database_url)
    try:
        await announce_setup(database, setup_token)
    finally:
        await database.dispose()


def _serve_one_of_many(args: argparse.Namespace, settings: Settings) -> int:
    """One web process of `serve --workers N`: pages only, on the socket it was given."""
    import socket

    from app.main import create_app

    listening = socket.socket(fileno=args.listen_fd)
    setup_token = os.environ.get(SETUP_TOKEN_ENV)
    app = create_app(settings, setup_token=setup_token, announce=False)
    _run_server(app, args, settings, sockets=[listening])
    return 0


def _run_server(
    app: FastAPI, args: argparse.Namespace, settings: Settings, sockets: list[socket.socket] | None = None
) -> None:
    import uvicorn

    config = uvicorn.Config(
        app,
        host=args.host or settings.host,
        port=args.port or settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=5,
        # Longer than the store agents keep an idle connection (60 s): they close it first, so
        # they never send on one the server is closing, and their calls reuse it.
        timeout_keep_alive=75,
    )
    from app.main import StoppingServer
    from app.process import raise_fd_limit, tune_gc

    raise_fd_limit()  # a socket per open page, store agent and (embedded checker) check in flight
    tune_gc()
    StoppingServer(config, app).run(sockets=sockets)


def _processes(asked: int | None, settings: Settings, flag: str) -> int | None:
    """How many worker processes to run: None (with the reason said) when that cannot be."""
    sqlite = settings.database_url.startswith("sqlite")
    if asked is not None and asked < 1:
        print(f"termpulse: {flag} needs 1 or more", file=sys.stderr)
        return None
    if sqlite:
        if asked is not None and asked > 1:
            print(
                f"termpulse: {flag} {asked}: SQLite supports one worker only; use PostgreSQL for several",
                file=sys.stderr,
            )
            return None
        return 1
    return asked if asked is not None else default_processes()


def _supervise(processes: int) -> int:
    """`termpulse worker --processes N`: N children until SIGINT/SIGTERM."""
    import signal
    import threading

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    supervisor = Supervisor(processes).start()
    while not stop.wait(1.0):
        if supervisor.failed:
            supervisor.stop()
            return 1
    return supervisor.stop()


_MAKE_A_KEY = "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"


def _refuse_weak_secret(args: argparse.Namespace, settings: Settings) -> int:
    """2 (with how to make a key) when a real server or worker would start on a weak secret:
    anyone knowing it could forge an admin session and decrypt the stored provider keys."""
    reason = weak_secret_key(settings)
    if reason is None:
        return 0
    print(
        f"termpulse {args.command}: refusing to start: {reason}. Make one and keep it (it also "
        "encrypts the stored provider keys, so changing it later needs `termpulse rotate-secret`):\n"
        f'    export TERMPULSE_SECRET_KEY="$({_MAKE_A_KEY})"\n'
        "`termpulse demo` needs none.",
        file=sys.stderr,
    )
    return 2


def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    from app.db import Database
    from app.migrate import migrate

    async def run() -> None:
        database = Database(settings.database_url)
        try:
            await migrate(database.engine)
        finally:
            await database.dispose()

    asyncio.run(run())
    return 0


def _import(args: argparse.Namespace, settings: Settings) -> int:
    from app.auth.audit import record_command
    from app.db import Database
    from app.inventory.csvimport import ImportFailed, import_fleet

    files = []
    for name in args.files:
        try:
            files.append((name, Path(name).read_bytes()))
        except OSError as exc:
            print(f"{name}: cannot read: {exc.strerror}", file=sys.stderr)
            return 2
    _migrate(args, settings)

    async def run() -> int:
        database = Database(settings.database_url)
        try:
            async with database.sessionmaker() as session:
                summary = await import_fleet(session, files, dry_run=args.dry_run)
                if not args.dry_run:
                    names = ", ".join(Path(name).name for name, _ in files)
                    detail = f"stores: {summary.stores}; terminals: {summary.terminals}"
                    await record_command(session, "import", target=names, detail=detail)
                    await session.commit()
        except ImportFailed as failed:
            for error in failed.errors:
                print(error, file=sys.stderr)
            rows = len({(e.file, e.line) for e in failed.errors})
            print(
                f"import failed: {len(failed.errors)} error(s) in {rows} row(s); nothing was written",
                file=sys.stderr,
            )
            return 2
        finally:
            await database.dispose()
        verb = "would be (dry run, nothing written)" if args.dry_run else "imported"
        print(f"stores {verb}: {summary.stores}")
        print(f"terminals {verb}: {summary.terminals}")
        monitors = summary.monitors
        print(
            f"monitors: {monitors['created']} created, {monitors['updated']} updated, "
            f"{monitors['deleted']} removed"
        )
        return 0

    return asyncio.run(run())


def _worker(args: argparse.Namespace, settings: Settings) -> int:
    from app.alerts.runner import alert_jobs
    from app.history.daily import daily_uptime_jobs
    from app.monitoring.worker import run_worker

    if refused := _refuse_weak_secret(args, settings):
        return refused
    _migrate(args, settings)
    processes = _processes(args.processes, settings, "--processes")
    if processes is None:
        return 2
    if processes > 1:
        return _supervise(processes)
    # The alert jobs and the daily uptime job run beside the checks.
    return run_worker(settings, lambda s, d: [*alert_jobs(s, d), *daily_uptime_jobs(s, d)])


def _check(args: argparse.Namespace, settings: Settings) -> int:
    from app.monitoring.cli import check_command, check_store_command

    if (args.poiid is None) == (args.store is None):
        print("termpulse check: give a terminal's POIID or --store CODE (one of them)", file=sys.stderr)
        return 2
    if args.store is not None:
        return check_store_command(settings, args.store, as_json=args.json)
    return check_command(settings, args.poiid, as_json=args.json)


def _agent(args: argparse.Namespace, settings: Settings) -> int:
    from app.agent.cli import agent_command

    return agent_command(args, settings)


def _export(args: argparse.Namespace, settings: Settings) -> int:
    from app.history.cli import export_command

    return export_command(settings, args)


def _create_user(args: argparse.Namespace, settings: Settings) -> int:
    from app.auth.cli import create_user_command
    from app.demo import DEMO_DATABASE

    return create_user_command(settings, args, DEMO_DATABASE)


def _agent_token(args: argparse.Namespace, settings: Settings) -> int:
    if args.action == "create" and not args.store:
        print("termpulse agent-token create: name the store(s) with --store S-0001", file=sys.stderr)
        return 2
    if args.action in ("rotate", "revoke") and not args.agent:
        print(f"termpulse agent-token {args.action}: name the agent (id or name)", file=sys.stderr)
        return 2
    from app.agents.cli import agent_token_command

    return agent_token_command(settings, args)


def _simulate(args: argparse.Namespace, settings: Settings) -> int:
    from app.inventory.csvimport import SAMPLE_FLEET
    from app.simulator.cli import simulate_command

    args.fleet = args.fleet or str(SAMPLE_FLEET / "terminals.csv")
    return simulate_command(settings, args)


def _rotate_secret(args: argparse.Namespace, settings: Settings) -> int:
    from app.alerts.service import rotate_channel_urls
    from app.providers.cli import rotate_secret_command

    return rotate_secret_command(settings, also=[rotate_channel_urls])


COMMANDS = {
    "serve": _serve,
    "demo": _serve,
    "migrate": _migrate,
    "import": _import,
    "worker": _worker,
    "check": _check,
    "agent": _agent,
    "export": _export,
    "create-user": _create_user,
    "agent-token": _agent_token,
    "simulate": _simulate,
    "rotate-secret": _rotate_secret,
}

if __name__ == "__main__":
    sys.exit(main())
