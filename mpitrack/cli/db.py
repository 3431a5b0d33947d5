"""`mpitrack db init|status`: apply the schema, show what the database holds."""

from __future__ import annotations

import argparse

from mpitrack import services, store
from mpitrack.cli.common import (
    add_config_argument,
    add_database_argument,
    add_workdir_argument,
    workdir_and_database,
)
from mpitrack.urls import redact_url


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "db",
        help="create the tables, show row counts",
        description="Manage the PostgreSQL database that holds regions, tracks, measurements "
        "and tracker checkpoints. Example: mpitrack db init --config configs/demo.yaml",
    )
    parser.add_argument(
        "action",
        choices=("init", "status"),
        help="init: apply sql/schema.sql (idempotent); status: row counts and version",
    )
    add_config_argument(parser, required=False)
    add_database_argument(parser)
    add_workdir_argument(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    workdir, url = workdir_and_database(args)
    with services.resolved_services(workdir, url, None, need_redis=False) as urls:
        conn = store.connect(urls.database_url)
        with conn:
            if args.action == "init":
                version = store.apply_schema(conn)
                print(f"schema version {version} applied to {redact_url(urls.database_url)}")
            else:
                print(f"database {redact_url(urls.database_url)}")
                print(f"schema version {store.schema_version(conn)}")
                for table, count in store.table_counts(conn).items():
                    print(f"  {table:<20} {'missing' if count is None else count:>12}")
    return 0
