"""`mpitrack run`: track an experiment, under mpiexec or alone."""

from __future__ import annotations

import argparse
import re

from mpitrack.cli.common import add_config_argument
from mpitrack.config import load_config
from mpitrack.errors import UsageError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run",
        help="track an experiment (under mpiexec -n N)",
        description=(
            "Track every region of an experiment through its scans and write the results to "
            "PostgreSQL. Run it under MPI: rank 0 dispatches, ranks 1..N-2 track, rank N-1 "
            "computes statistics (N=2: rank 0 also does statistics; N=1: one process does "
            "everything). Re-running the same command after a crash resumes from the "
            "checkpoints and gives the same rows."
        ),
        epilog="Example: mpiexec -n 4 mpitrack run --config configs/demo.yaml",
    )
    add_config_argument(parser)
    parser.add_argument(
        "--scans",
        metavar="A:B",
        help="process scans A..B inclusive (overrides scans in the config)",
    )
    parser.add_argument(
        "--follow",
        action="store_true",
        help="live experiment: keep waiting for new scans past the last one until SIGTERM, "
        "the Redis stop key (mpitrack:{run}:stop) or --idle-timeout",
    )
    parser.add_argument(
        "--idle-timeout",
        type=float,
        metavar="SECONDS",
        help="stop when no frames arrived and no job ran for this long (default: wait)",
    )
    parser.add_argument("--database-url", metavar="URL", help="PostgreSQL URL (else config/env)")
    parser.add_argument("--redis-url", metavar="URL", help="Redis URL (else config/env)")
    parser.set_defaults(handler=run)


def parse_scans(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", text)
    if not match or int(match.group(1)) > int(match.group(2)):
        raise UsageError(f"--scans {text!r}: expected A:B with 0 <= A <= B, e.g. --scans 0:19")
    return int(match.group(1)), int(match.group(2))


def run(args: argparse.Namespace) -> int:
    from mpitrack import runtime

    overrides: dict[str, object] = {}
    if args.scans:
        overrides["scans.first"], overrides["scans.last"] = parse_scans(args.scans)
    if args.database_url:
        overrides["database.url"] = args.database_url
    if args.redis_url:
        overrides["redis.url"] = args.redis_url
    config = load_config(args.config, overrides=overrides)
    if not args.follow and config.scans.last is None:
        raise UsageError(
            f"{args.config}: scans.last is not set: give --scans A:B, set it, or use --follow"
        )
    options = runtime.RunOptions(follow=args.follow, idle_timeout=args.idle_timeout)
    return runtime.run(config, options)
