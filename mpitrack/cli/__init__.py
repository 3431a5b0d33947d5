"""The `mpitrack` command: one subcommand per module in this package.

Exit codes: 0 success, 1 the work finished with failed jobs, 2 bad input
(config, arguments, files), 3 a server could not be reached.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from mpitrack import __version__
from mpitrack.errors import MpitrackError

# Subcommand modules, in the order `mpitrack --help` lists them. A module that
# is not there (an optional part not installed) is left out of the help.
_COMMANDS = (
    "simulate",
    "detector",
    "run",
    "evaluate",
    "baseline",
    "report",
    "export",
    "show",
    "listen",
    "dispatch",
    "work",
    "stats",
    "stop",
    "config",
    "db",
    "services",
)

log = logging.getLogger("mpitrack")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mpitrack",
        description=(
            "Track diffraction spots across the scans of an in-situ X-ray diffraction "
            "experiment, in real time, as an MPI program (mpiexec -n N mpitrack run ...)."
        ),
        epilog=(
            "Quick start: mpitrack simulate --out data/demo && "
            "mpiexec -n 4 mpitrack run --config data/demo/experiment.yaml. "
            "Exit codes: 0 ok, 1 jobs failed, 2 bad input, 3 server unreachable."
        ),
    )
    parser.add_argument("--version", action="version", version=f"mpitrack {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for name in _COMMANDS:
        try:
            module = importlib.import_module(f"mpitrack.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"mpitrack.cli.{name}":
                raise
            continue
        module.add_parser(subparsers)
    return parser


def setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else logging.DEBUG if verbose > 1 else logging.INFO
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%Y-%m-%dT%H:%M:%S",
        stream=sys.stderr,
    )
    # pgserver narrates every pg_ctl call at INFO; keep it for -vv.
    logging.getLogger("pgserver").setLevel(logging.DEBUG if verbose > 1 else logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help()
        return 2
    setup_logging(args.verbose, args.quiet)
    try:
        return int(args.handler(args) or 0)
    except MpitrackError as exc:
        print(f"mpitrack: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("mpitrack: interrupted", file=sys.stderr)
        return 130
