"""`mpitrack run`: track an experiment, under mpiexec or alone."""

from __future__ import annotations

import argparse

from mpitrack.cli.common import add_config_argument, load_run_config


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


def run(args: argparse.Namespace) -> int:
    from mpitrack import runtime

    config = load_run_config(args)
    options = runtime.RunOptions(follow=args.follow, idle_timeout=args.idle_timeout)
    return runtime.run(config, options)
