"""`mpitrack run`: track an experiment, under mpiexec or alone."""

from __future__ import annotations

import argparse
import sys

from mpitrack.cli.common import add_config_argument, add_retry_failed_argument, load_run_config
from mpitrack.errors import MpitrackError


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
    add_retry_failed_argument(parser)
    parser.add_argument("--database-url", metavar="URL", help="PostgreSQL URL (else config/env)")
    parser.add_argument("--redis-url", metavar="URL", help="Redis URL (else config/env)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from mpi4py import MPI

    from mpitrack import runtime
    from mpitrack.wiring import RunOptions

    try:
        config = load_run_config(args)
        failure = None
    except MpitrackError as exc:
        failure = (str(exc), exc.exit_code)
    # Every rank reads the config: rank 0 says once what was wrong (and where, if
    # not on every rank), instead of N ranks printing the same line.
    comm = MPI.COMM_WORLD
    failures = comm.allgather(failure)
    if any(failures):
        if comm.Get_rank() == 0:
            _print_failures(failures)
        return max(code for _message, code in filter(None, failures))
    options = RunOptions(
        follow=args.follow, idle_timeout=args.idle_timeout, retry_failed=args.retry_failed
    )
    return runtime.run(config, options)


def _print_failures(failures: list[tuple[str, int] | None]) -> None:
    ranks_of: dict[str, list[int]] = {}
    for rank, failure in enumerate(failures):
        if failure is not None:
            ranks_of.setdefault(failure[0], []).append(rank)
    for message, ranks in ranks_of.items():
        where = "" if len(ranks) == len(failures) else f" (rank {', '.join(map(str, ranks))})"
        print(f"mpitrack: error: {message}{where}", file=sys.stderr)
