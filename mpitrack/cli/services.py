"""`mpitrack services up|status|down`: embedded PostgreSQL and Redis for a work directory."""

from __future__ import annotations

import argparse
from pathlib import Path

from mpitrack import services
from mpitrack.cli.common import add_config_argument, add_workdir_argument, load


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "services",
        help="start, show or stop the embedded PostgreSQL and Redis",
        description=(
            "Embedded servers for machines without PostgreSQL or Redis. `up` starts them "
            "under the work directory and prints their URLs as shell assignments and an "
            'export, so that eval "$(mpitrack services up -c X)" hands them to every process '
            "started after it. They keep running until `down`."
        ),
    )
    parser.add_argument("action", choices=("up", "status", "down"))
    add_config_argument(parser, required=False)
    add_workdir_argument(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    workdir = (
        args.workdir.resolve() if args.workdir else load(args).workdir if args.config else None
    )
    if workdir is None:
        workdir = Path("runs/default").resolve()
    base = services.services_dir(workdir)
    postgres = services.EmbeddedPostgres(base / "postgres")
    redis_server = services.EmbeddedRedis(base / "redis")
    if args.action == "up":
        # One assignment a line (scripts read them back), then the export that eval needs.
        print(f"MPITRACK_DATABASE_URL={_quoted(postgres.start())}")
        print(f"MPITRACK_REDIS_URL={_quoted(redis_server.start())}")
        print("export MPITRACK_DATABASE_URL MPITRACK_REDIS_URL")
        return 0
    if args.action == "status":
        pg_pid, redis_pid = postgres.running_pid(), redis_server.running_pid()
        for name, pid, where in (
            ("postgres", pg_pid, postgres.directory),
            ("redis", redis_pid, redis_server.url),
        ):
            print(f"{name:<9} {f'running pid {pid}' if pid else 'stopped':<18} {where}")
        return 0 if pg_pid and redis_pid else 1
    for name, server in (("redis", redis_server), ("postgres", postgres)):
        print(f"{name}: {'stopped' if server.stop() else 'was not running'}")
    return 0


def _quoted(value: str) -> str:
    """A POSIX shell single-quoted word (always quoted: scripts parse NAME='...')."""
    return "'" + value.replace("'", "'\\''") + "'"
