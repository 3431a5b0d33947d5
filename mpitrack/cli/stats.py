"""`mpitrack stats`: the statistics role as its own process (separate-process mode)."""

from __future__ import annotations

import argparse

from mpitrack.cli.common import add_config_argument
from mpitrack.config import load_config


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "stats",
        help="separate-process mode: per-scan statistics as scans complete",
        description=(
            "Computes each scan's statistics (table scan_stats) when the dispatcher announces "
            "on mpitrack:{run}:events that the scan is complete for every region. Exits when "
            "the dispatcher declares the run finished, or on SIGTERM."
        ),
        epilog="Example: mpitrack stats --config configs/demo.yaml",
    )
    add_config_argument(parser)
    parser.add_argument("--database-url", metavar="URL", help="PostgreSQL URL (else config/env)")
    parser.add_argument("--redis-url", metavar="URL", help="Redis URL (else config/env)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from mpitrack import process_mode

    overrides: dict[str, object] = {}
    if args.database_url:
        overrides["database.url"] = args.database_url
    if args.redis_url:
        overrides["redis.url"] = args.redis_url
    return process_mode.run_stats(load_config(args.config, overrides=overrides))
