"""`mpitrack work`: a tracking worker as its own process (separate-process mode)."""

from __future__ import annotations

import argparse

from mpitrack.cli.common import add_config_argument
from mpitrack.config import load_config
from mpitrack.errors import UsageError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "work",
        help="separate-process mode: run jobs from Redis (start any number)",
        description=(
            "A tracking worker: reads jobs from the Redis stream mpitrack:{run}:jobs through "
            "the consumer group 'workers', commits rows and checkpoint to PostgreSQL, and "
            "acknowledges a job only after its commit. A job whose worker died is reclaimed "
            "after --lease seconds; a job that fails --max-attempts times goes to the "
            "dead-letter stream mpitrack:{run}:jobs:dead. Exits when the dispatcher declares "
            "the run finished, or after SIGTERM (the running job finishes first)."
        ),
        epilog="Example: mpitrack work --config configs/demo.yaml (see docs/process-mode.md)",
    )
    add_config_argument(parser)
    parser.add_argument(
        "--lease",
        type=float,
        metavar="SECONDS",
        help="a job not refreshed for this long is reclaimed by another worker (default: "
        "process.lease, 60); a running job refreshes its lease every third of it",
    )
    parser.add_argument(
        "--max-attempts",
        type=int,
        metavar="K",
        help="attempts of a job before it goes to the dead-letter stream (default: "
        "process.max_attempts, 3)",
    )
    parser.add_argument(
        "--reconnect",
        type=float,
        metavar="SECONDS",
        help="keep retrying a lost Redis connection this long before giving up (default: "
        "redis.reconnect_seconds, 60)",
    )
    parser.add_argument("--database-url", metavar="URL", help="PostgreSQL URL (else config/env)")
    parser.add_argument("--redis-url", metavar="URL", help="Redis URL (else config/env)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from mpitrack import process_mode

    if args.lease is not None and args.lease <= 0:
        raise UsageError(f"--lease {args.lease}: must be > 0")
    if args.max_attempts is not None and args.max_attempts < 1:
        raise UsageError(f"--max-attempts {args.max_attempts}: must be >= 1")
    if args.reconnect is not None and args.reconnect < 0:
        raise UsageError(f"--reconnect {args.reconnect}: must be >= 0")
    flags = {
        "database.url": args.database_url,
        "redis.url": args.redis_url,
        "process.lease": args.lease,
        "process.max_attempts": args.max_attempts,
        "redis.reconnect_seconds": args.reconnect,
    }
    overrides = {key: value for key, value in flags.items() if value is not None}
    return process_mode.run_worker(load_config(args.config, overrides=overrides))
