"""`mpitrack show`: one region's spot strip as a PNG, for scripts and batch logs."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from mpitrack.cli.common import add_config_argument, add_database_argument, add_workdir_argument

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "show",
        help="one region's tracks as an image strip (PNG)",
        description=(
            "Write a PNG with a row per track of a region and a column per scan: the maximum "
            "projection of the region volume along omega above the omega slice through the "
            "track's centre, cropped around the track (cyan cross), with the outlines of every "
            "spot detection found (yellow). Borders: green detected, red overlapping (OVL+ids "
            "of the tracks sharing the spot), dashed grey missed; OPEN marks decisions a later "
            "commit may still revise. The images come from the frames on disk, detected again "
            "with the config's settings; the decisions from the database. The report's "
            "region pages show the same strips. See docs/statistics.md#spots."
        ),
        epilog="Example: mpitrack show --config configs/demo.yaml --region 3 --scans 0:11",
    )
    add_config_argument(p)
    add_database_argument(p)
    add_workdir_argument(p)
    p.add_argument("--region", type=int, required=True, metavar="R", help="the region")
    p.add_argument(
        "--scans", metavar="A:B", help="scans A..B inclusive (default: every scan with rows)"
    )
    p.add_argument(
        "-o",
        "--out",
        type=Path,
        metavar="FILE",
        help="the PNG to write (default: region_<R>.png, or region_<R>_scans_<A>-<B>.png)",
    )
    p.add_argument(
        "--crop",
        type=int,
        default=21,
        metavar="N",
        help="voxels shown around the track along each frame axis (default: 21)",
    )
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from mpitrack import store
    from mpitrack.cli.common import load, parse_scans, workdir_and_database
    from mpitrack.errors import UsageError
    from mpitrack.services import resolved_services
    from mpitrack.stats.png import encode_indexed, write_bytes
    from mpitrack.stats.query import spot_rows
    from mpitrack.stats.sheets import FrameSource, region_strip
    from mpitrack.stats.spotrows import open_from
    from mpitrack.stats.strips import PALETTE

    if args.crop < 1:
        raise UsageError(f"--crop must be >= 1, got {args.crop}")
    config = load(args)
    if args.region not in {r.id for r in config.regions}:
        raise UsageError(f"{args.config}: region {args.region} is not in the config")
    first, last = parse_scans(args.scans) if args.scans else (None, None)
    workdir, url = workdir_and_database(args)
    axes = ("omega", *config.frames.axes)
    with resolved_services(workdir, url, None, need_redis=False) as urls:
        assert urls.database_url is not None
        with store.connect(
            urls.database_url, config.run, retries=config.runtime.connect_retries
        ) as conn:
            rows = spot_rows(conn, args.region, axes, first)
            committed = store.committed_scan(conn, args.region)
    if last is not None:
        rows = [r for r in rows if r.scan <= last]
    span = f"scans {args.scans}" if args.scans else "any scan"
    if not rows:
        raise UsageError(f"region {args.region} has no tracks in {span}")
    first_open = (
        open_from(committed, config.tracking.n_scan) if committed is not None else rows[-1].scan + 1
    )
    description = next(r.description for r in config.regions if r.id == args.region)
    title = f"{config.run} REGION {args.region} {description}".strip()
    scale = 3
    image = region_strip(
        FrameSource.from_config(config), args.region, rows, first_open, args.crop, scale, title
    )
    out = args.out
    if out is None:
        suffix = f"_scans_{first}-{last}" if args.scans else ""
        out = Path(f"region_{args.region}{suffix}.png")
    try:
        write_bytes(out, encode_indexed(image, PALETTE))
    except OSError as exc:
        raise UsageError(f"cannot write {out}: {exc}") from None
    tracks = len({r.track for r in rows})
    scans = len({r.scan for r in rows})
    print(f"region {args.region}: {tracks} tracks x {scans} scans -> {out}")
    return 0
