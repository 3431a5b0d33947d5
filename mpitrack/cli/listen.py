"""`mpitrack listen`: register complete frames in Redis (separate-process mode)."""

from __future__ import annotations

import argparse

from mpitrack.cli.common import add_config_argument
from mpitrack.config import load_config
from mpitrack.errors import UsageError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "listen",
        help="separate-process mode: watch the frame directory, register frames in Redis",
        description=(
            "Polls the frame directory (so it works on NFS, where inotify does not) and "
            "registers every complete frame in Redis for `mpitrack dispatch`. Dot-files and "
            "*.tmp are ignored and empty files held back, so producers should write a "
            "temporary name and rename. Restart-safe: registering is idempotent. Exits when "
            "the dispatcher declares the run finished, or on SIGTERM."
        ),
        epilog="Example: mpitrack listen --config configs/demo.yaml",
    )
    add_config_argument(parser)
    parser.add_argument(
        "--poll",
        type=float,
        metavar="SECONDS",
        help="seconds between directory scans (default: runtime.poll_interval)",
    )
    parser.add_argument(
        "--settle",
        type=float,
        metavar="SECONDS",
        help="seconds an empty frame file is waited for before it is registered anyway "
        "(its job then fails, naming it); default: frames.settle_s, as `mpitrack run`",
    )
    parser.add_argument("--redis-url", metavar="URL", help="Redis URL (else config/env)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from mpitrack import process_mode

    if args.poll is not None and args.poll <= 0:
        raise UsageError(f"--poll {args.poll}: must be > 0")
    overrides: dict[str, object] = {}
    if args.settle is not None:
        overrides["frames.settle_s"] = args.settle
    if args.redis_url:
        overrides["redis.url"] = args.redis_url
    config = load_config(args.config, overrides=overrides)
    return process_mode.run_listener(config, poll_interval=args.poll)
