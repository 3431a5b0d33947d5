"""`mpitrack stop`: ask a running experiment to finish (sets the Redis stop key)."""

from __future__ import annotations

import argparse

from mpitrack.cli.common import add_config_argument
from mpitrack.config import load_config


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "stop",
        help="ask a running experiment to finish its jobs in flight and stop",
        description=(
            "Sets the key mpitrack:{run}:stop. The dispatcher (`mpitrack run` rank 0 or "
            "`mpitrack dispatch`) then issues no new job, waits for the jobs in flight to "
            "commit, and ends the run; workers, listener and statistics then exit."
        ),
        epilog="Example: mpitrack stop --config configs/demo.yaml",
    )
    add_config_argument(parser)
    parser.add_argument("--redis-url", metavar="URL", help="Redis URL (else config/env)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from mpitrack import process_mode

    overrides: dict[str, object] = {}
    if args.redis_url:
        overrides["redis.url"] = args.redis_url
    key = process_mode.request_stop(load_config(args.config, overrides=overrides))
    print(f"stop requested ({key})")
    return 0
