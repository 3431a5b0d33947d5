"""`mpitrack report`: recompute every scan's statistics and write the final HTML report."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from mpitrack.cli.common import add_config_argument, add_database_argument, add_workdir_argument

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "report",
        help="per-scan statistics, scan_stats.csv and the HTML report (offline)",
        description=(
            "Recompute the statistics of every scan from the measurements table (counts, "
            "births, deaths, misses, overlaps; median, IQR and 5th/95th percentiles of the "
            "FWHM per axis, intensity and largest principal variance; track ages and "
            "lifetimes), store them in scan_stats and scan_distributions, and write a "
            "self-contained report: index.html (alerts and a summary table first, the regions to "
            "look at first, then the figures), PNG figures, scan_stats.csv, and per region a page "
            "of image strips drawn from the frames (spots/). `mpitrack run` keeps the same report "
            "up to date while it runs. Figures need matplotlib (the `plots` extra). "
            "See docs/statistics.md."
        ),
        epilog="Example: mpitrack report --config configs/demo.yaml (writes runs/demo/report/)",
    )
    add_config_argument(p)
    add_database_argument(p)
    add_workdir_argument(p)
    p.add_argument(
        "-o",
        "--out",
        type=Path,
        metavar="DIR",
        help="report directory (default: <workdir>/report)",
    )
    p.add_argument(
        "--max-regions",
        type=int,
        default=16,
        metavar="N",
        help="trajectory figures for at most N regions, busiest first (default: 16)",
    )
    p.add_argument(
        "--no-spots",
        action="store_true",
        help="leave out the spot pages and their gallery (drawing them reads every region's "
        "frames once more)",
    )
    p.add_argument(
        "--timings", type=Path, metavar="FILE", help="also write the seconds per step as JSON"
    )
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from mpitrack import store
    from mpitrack.cli.common import load, workdir_and_database
    from mpitrack.errors import UsageError
    from mpitrack.services import resolved_services
    from mpitrack.stats.report import INDEX_NAME, build_report, options_from_config

    if args.max_regions < 0:
        raise UsageError(f"--max-regions must be >= 0, got {args.max_regions}")
    config = load(args)
    workdir, url = workdir_and_database(args)
    out = (args.out or workdir / "report").resolve()
    options = replace(options_from_config(config), max_region_plots=args.max_regions)
    if args.no_spots:
        options = replace(options, spots=None)
    with resolved_services(workdir, url, None, need_redis=False) as urls:
        assert urls.database_url is not None
        with store.connect(
            urls.database_url, config.run, retries=config.runtime.connect_retries
        ) as conn:
            store.apply_schema(conn, config.frames.axes)
            try:
                stats, timings = build_report(conn, out, options)
            except OSError as exc:
                raise UsageError(f"cannot write the report in {out}: {exc}") from None
    print(f"{len(stats)} scans -> {out / INDEX_NAME}")
    if stats:
        print(stats[max(stats)].summary())
    if args.timings is not None:
        args.timings.write_text(json.dumps(timings, indent=2) + "\n", encoding="utf-8")
    return 0
