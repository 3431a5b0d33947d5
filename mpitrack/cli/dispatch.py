"""`mpitrack dispatch`: the dispatcher as its own process (separate-process mode)."""

from __future__ import annotations

import argparse

from mpitrack.cli.common import add_config_argument, add_retry_failed_argument, load_run_config
from mpitrack.errors import UsageError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "dispatch",
        help="separate-process mode: hand out jobs through Redis",
        description=(
            "The dispatcher of `mpitrack run` as its own process: decides which (region, scan) "
            "jobs are ready from the frames `mpitrack listen` registers, keeps every region's "
            "scans in order with at most one job in flight, and puts jobs on the Redis stream "
            "mpitrack:{run}:jobs for `mpitrack work` processes. Exits when every region is done "
            "(0, or 1 if jobs failed); with --follow, after `mpitrack stop`, SIGTERM or "
            "--idle-timeout. Starting it again resumes from the checkpoints."
        ),
        epilog="Example: mpitrack dispatch --config configs/demo.yaml (see docs/process-mode.md)",
    )
    add_config_argument(parser)
    parser.add_argument("--scans", metavar="A:B", help="process scans A..B inclusive")
    parser.add_argument(
        "--follow", action="store_true", help="keep waiting for new scans past the last one"
    )
    parser.add_argument(
        "--idle-timeout",
        type=float,
        metavar="SECONDS",
        help="stop when no frames arrived and no job ran for this long",
    )
    parser.add_argument(
        "--slots",
        type=int,
        metavar="N",
        help="jobs outstanding on the stream at most (default: one per region, at most "
        "process.max_slots, 64)",
    )
    add_retry_failed_argument(parser)
    parser.add_argument("--database-url", metavar="URL", help="PostgreSQL URL (else config/env)")
    parser.add_argument("--redis-url", metavar="URL", help="Redis URL (else config/env)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from mpitrack import process_mode

    config = load_run_config(args)
    if args.slots is not None and args.slots < 1:
        raise UsageError(f"--slots {args.slots}: must be >= 1")
    options = process_mode.DispatchOptions(
        follow=args.follow,
        idle_timeout=args.idle_timeout,
        retry_failed=args.retry_failed,
        slots=args.slots,
    )
    return process_mode.run_dispatcher(config, options)
