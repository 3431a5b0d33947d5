"""`mpitrack export`: an experiment's measurements to CSV, Parquet or HDF5."""

from __future__ import annotations

import argparse
from pathlib import Path

from mpitrack import services, store
from mpitrack.cli.common import (
    add_config_argument,
    add_database_argument,
    add_run_argument,
    add_workdir_argument,
    experiment_name,
    workdir_and_database,
)
from mpitrack.errors import UsageError
from mpitrack.results.export import FORMATS, export
from mpitrack.results.read import Selection, parse_regions, parse_scans


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export",
        help="write an experiment's measurements to CSV, Parquet or HDF5",
        description=(
            "Stream the measurements of one experiment, with every feature as a typed "
            "column (the view measurement_values, see docs/results.md), to a file: CSV, "
            "Parquet, or HDF5 with one group per region and units as attributes. Memory stays "
            "bounded however many rows; progress lines go to the log."
        ),
        epilog="Example: mpitrack export --config configs/demo.yaml --format hdf5 "
        "--out demo.h5 --regions 0-3 --scans 10:20",
    )
    p.add_argument("--format", choices=FORMATS, required=True)
    p.add_argument("--out", type=Path, required=True, metavar="FILE", help="output file")
    p.add_argument(
        "--regions", metavar="IDS", help="regions to export, such as 3,5,7-9 (default: all)"
    )
    p.add_argument(
        "--scans", metavar="A:B", help="scans A to B inclusive; A: and :B leave an end open"
    )
    add_config_argument(p, required=False)
    add_run_argument(p)
    add_database_argument(p)
    add_workdir_argument(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    try:
        regions = parse_regions(args.regions) if args.regions else None
        first, last = parse_scans(args.scans) if args.scans else (None, None)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    experiment = experiment_name(args)
    if experiment is None:
        raise UsageError("export needs the experiment: give --config FILE or --run NAME")
    workdir, url = workdir_and_database(args)
    selection = Selection(regions=regions, first_scan=first, last_scan=last)
    with services.resolved_services(workdir, url, None, need_redis=False) as urls:
        assert urls.database_url is not None
        with store.connect(urls.database_url, experiment) as conn:
            if store.schema_version(conn) < 4:
                raise UsageError(
                    f"experiment {experiment!r} has no results view: run `mpitrack db init`"
                )
            try:
                summary = export(conn, args.format, args.out, selection)
            except OSError as exc:
                raise UsageError(f"cannot write {args.out}: {exc}") from None
    print(f"wrote {summary.rows} rows to {summary.path} in {summary.seconds:.1f} s")
    return 0
