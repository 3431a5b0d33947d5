"""`mpitrack config defaults|show`: every key with its default, or a config as resolved."""

from __future__ import annotations

import argparse

from mpitrack.cli.common import add_config_argument, load
from mpitrack.errors import UsageError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "config",
        help="show every config key with its default and meaning, or a resolved config",
        description=(
            "defaults: a complete config with every key, its default and what it means "
            "(a starting point for a new experiment). show: the given config as mpitrack "
            "sees it after MPITRACK_* environment overrides, with every default filled in."
        ),
        epilog="Example: mpitrack config show --config configs/demo.yaml",
    )
    parser.add_argument("action", choices=("defaults", "show"))
    add_config_argument(parser, required=False)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from mpitrack.config_doc import annotated_defaults, resolved_yaml

    if args.action == "defaults":
        print(annotated_defaults(), end="")
        return 0
    if args.config is None:
        raise UsageError("config show needs --config FILE")
    print(resolved_yaml(load(args)), end="")
    return 0
