"""`mpitrack db init|status`: apply the schema, show what the database holds.

Each experiment has its own schema in the database (named after its run, see
docs/admin.md): `init` and `status` with a config (or --run) act on that
experiment; `status` without one lists every experiment in the database.
"""

from __future__ import annotations

import argparse

from mpitrack import services, store
from mpitrack.cli.common import (
    add_config_argument,
    add_database_argument,
    add_run_argument,
    add_workdir_argument,
    experiment_name,
    load,
    workdir_and_database,
)
from mpitrack.errors import UsageError
from mpitrack.urls import redact_url


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "db",
        help="create an experiment's tables, show row counts",
        description="Manage the PostgreSQL database that holds regions, tracks, measurements "
        "and tracker checkpoints. Every experiment keeps its tables in a schema of its own, "
        "named after its run. init: create the experiment's schema and tables (idempotent). "
        "status: the experiment's row counts, or, without --config and --run, every "
        "experiment in the database. Example: mpitrack db init --config configs/demo.yaml",
    )
    parser.add_argument("action", choices=("init", "status"))
    add_config_argument(parser, required=False)
    add_run_argument(parser)
    add_database_argument(parser)
    add_workdir_argument(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    workdir, url = workdir_and_database(args)
    experiment = experiment_name(args)
    retries = load(args).runtime.connect_retries if args.config is not None else 5
    if args.action == "init" and experiment is None:
        raise UsageError("db init needs the experiment: give --config FILE or --run NAME")
    with services.resolved_services(workdir, url, None, need_redis=False) as urls:
        assert urls.database_url is not None
        shown = redact_url(urls.database_url)
        with store.connect(urls.database_url, experiment, retries=retries) as conn:
            if args.action == "init":
                axes = load(args).frames.axes if args.config is not None else None
                version = store.apply_schema(conn, axes)
                print(f"experiment {experiment}: schema version {version} applied to {shown}")
                return 0
            print(f"database {shown}")
            if experiment is not None:
                _print_experiment(conn, experiment)
                return 0
            names = store.experiments(conn)
        if not names:
            print("no experiments (run `mpitrack db init --config FILE` or `mpitrack run`)")
        for name in names:
            with store.connect(urls.database_url, name, retries=retries) as conn:
                _print_experiment(conn, name)
    return 0


def _print_experiment(conn, experiment: str) -> None:
    note = (
        " (tables from before experiments had schemas of their own: see docs/admin.md)"
        if experiment == "public"
        else ""
    )
    print(f"experiment {experiment}{note}")
    version = store.schema_version(conn)
    print(f"  schema version {version}" if version else "  no tables (mpitrack db init)")
    if version:
        for table, count in store.table_counts(conn).items():
            print(f"  {table:<20} {'missing' if count is None else count:>12}")
