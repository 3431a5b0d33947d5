"""`mpitrack detector`: regions from the experiment, cutting raw frames, a synthetic detector."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import yaml

from mpitrack.cli.common import add_config_argument
from mpitrack.errors import UsageError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "detector",
        help="raw detector frames: regions from rings or spots, cutting, a synthetic detector",
        description=(
            "Work with the detector's own files (full frames as HDF5 stacks or .npy): define "
            "regions from rings or predicted spots, cut raw frames into region frames, or "
            "write a synthetic detector experiment. See docs/detector.md."
        ),
    )
    sub = parser.add_subparsers(title="subcommands", metavar="SUBCOMMAND")
    parser.set_defaults(handler=lambda args: _help(parser))

    p = sub.add_parser(
        "regions",
        help="write the regions file (and the config's regions list) from rings or spots",
        description=(
            "Compute every region's (eta x 2theta) grid and omega window from the instrument "
            "file and a rings file (rings: [{tth, width, eta: [a, b], n_regions, omega: "
            "[[start, end]]}]) or a predicted-spots file (spots: [{tth, eta, omega}]). Writes "
            "the regions file for detector.regions_file and prints the config's `regions:` "
            "list (YAML) to stdout."
        ),
        epilog=(
            "Example: mpitrack detector regions --instrument configs/instrument-example.yaml "
            "--rings rings.yaml --out regions.yaml >> experiment.yaml"
        ),
    )
    p.add_argument("--instrument", type=Path, required=True, metavar="FILE")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--rings", type=Path, metavar="FILE", help="rings file (YAML)")
    source.add_argument("--spots", type=Path, metavar="FILE", help="predicted spots (YAML)")
    p.add_argument(
        "--box",
        type=float,
        nargs=3,
        default=(0.5, 5.0, 5.0),
        metavar=("TTH", "ETA", "OMEGA"),
        help="with --spots: full region widths in degrees",
    )
    p.add_argument("--first-id", type=int, default=0, help="id of the first region")
    p.add_argument("--out", type=Path, required=True, metavar="FILE", help="regions file to write")
    p.set_defaults(handler=_regions)

    p = sub.add_parser(
        "cut",
        help="cut raw detector frames into region frames (what rank 0 does in a run)",
        description=(
            "Read every raw frame the regions need once and write each region's slice into "
            "frames.directory (frames.pattern names, atomically). Re-running cuts only what "
            "is missing. Without --follow: cut what is complete now and exit; a missing panel "
            "file is an error naming it."
        ),
        epilog="Example: mpitrack detector cut --config data/det/experiment.yaml",
    )
    add_config_argument(p)
    p.add_argument(
        "--detector",
        type=Path,
        metavar="FILE",
        help="the detector settings (default: detector.yaml beside the config)",
    )
    p.add_argument(
        "--follow", action="store_true", help="keep cutting new frames until --idle-timeout"
    )
    p.add_argument(
        "--idle-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="stop after this long without new frames (default: settle time + 1 s; "
        "with --follow: 60 s)",
    )
    p.set_defaults(handler=_cut)

    p = sub.add_parser(
        "simulate",
        help="write a synthetic detector experiment (raw frames, regions, truth, configs)",
        description=(
            "Two small panels either side of the beam (one tilted and flipped), two rings cut "
            "into 8 regions, spots at known (2theta, eta, omega) drifting from scan to scan, "
            "rendered into full detector frames. Writes instrument.yaml, regions.yaml, "
            "detector.yaml, experiment.yaml (frames.directory: cuts), raw/, truth.json and, "
            "unless --no-direct, the same spots straight on the region grids in direct/ with "
            "experiment-direct.yaml."
        ),
        epilog=(
            "Example: mpitrack detector simulate --out data/det && mpitrack detector cut "
            "--config data/det/experiment.yaml && mpiexec -n 4 mpitrack run --config "
            "data/det/experiment.yaml"
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--out", type=Path, required=True, metavar="DIR")
    p.add_argument("--scans", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--format", choices=("hdf5", "npy"), default="hdf5")
    p.add_argument("--panel-size", type=int, default=256, metavar="PIXELS")
    p.add_argument("--frames-per-scan", type=int, default=72)
    p.add_argument("--spots-per-region", type=int, default=2)
    p.add_argument("--fps", type=float, default=None, help="raw frames per second (live)")
    p.add_argument("--marker", action="store_true", help="write <file>.done after each file")
    p.add_argument("--no-direct", action="store_true", help="skip the per-region-file copy")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty directory")
    p.set_defaults(handler=_simulate)


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _regions(args: argparse.Namespace) -> int:
    from mpitrack.detector.instrument import load_instrument
    from mpitrack.detector.regions import (
        config_regions,
        load_rings,
        load_spots,
        regions_from_rings,
        regions_from_spots,
        write_regions,
    )
    from mpitrack.detector.sampling import build_sampler

    instrument = load_instrument(args.instrument)
    if args.rings is not None:
        grids = regions_from_rings(instrument, load_rings(args.rings), args.first_id)
    else:
        tth, eta, omega = args.box
        grids = regions_from_spots(
            instrument, load_spots(args.spots), tth, eta, omega, args.first_id
        )
    for grid in grids:
        build_sampler(instrument, grid)  # refuses a region no panel sees, warns on gaps
    write_regions(args.out, grids)
    print(yaml.safe_dump({"regions": config_regions(grids)}, sort_keys=False), end="")
    print(f"wrote {len(grids)} regions to {args.out}", file=sys.stderr)
    return 0


def _cut(args: argparse.Namespace) -> int:
    from mpitrack.config import load_config
    from mpitrack.detector.cutter import cut_all
    from mpitrack.detector.settings import load_detector_config, make_cutter

    config = load_config(args.config)
    detector_file = args.detector or args.config.parent / "detector.yaml"
    detector = load_detector_config(detector_file)
    cutter = make_cutter(config, detector, strict=not args.follow)
    idle = args.idle_timeout
    if idle is None:
        idle = 60.0 if args.follow else detector.settle_s + 1.0
    started = time.monotonic()
    try:
        total = cut_all(cutter, idle_s=idle)
    finally:
        cutter.close()
    seconds = time.monotonic() - started
    stats = cutter.stats
    print(
        f"{stats.cuts_written} region frames written from {stats.frames_read} raw frames "
        f"({stats.bytes_read / 1e6:.1f} MB in {seconds:.2f} s); {total} region frames in "
        f"{config.frames.directory}; scans cut through {cutter.finished_through()}"
    )
    if stats.errors:
        raise UsageError(f"{len(stats.errors)} raw frame(s) could not be read: {stats.errors[0]}")
    return 0


def _simulate(args: argparse.Namespace) -> int:
    from mpitrack.detector.simulate import DetectorSimSpec, simulate_detector

    out: Path = args.out
    if out.is_dir() and any(out.iterdir()) and not args.overwrite:
        raise UsageError(f"--out {out} is not empty; give --overwrite to write into it")
    if args.scans < 1 or args.frames_per_scan < 24 or args.panel_size < 32:
        raise UsageError("need --scans >= 1, --frames-per-scan >= 24 and --panel-size >= 32")
    spec = DetectorSimSpec(
        out_dir=out,
        scans=args.scans,
        seed=args.seed,
        format=args.format,
        panel_size=args.panel_size,
        frames_per_scan=args.frames_per_scan,
        spots_per_region=args.spots_per_region,
        direct=not args.no_direct,
        fps=args.fps,
        marker=args.marker,
    )
    summary = simulate_detector(spec)
    print(
        f"wrote {summary['raw_frames']} raw frames ({summary['regions']} regions, "
        f"{summary['spots']} spots) in {summary['seconds']:.2f} s\n"
        f"config: {summary['experiment']}\ndetector: {summary['detector']}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m mpitrack.cli.detector ...``: the same subcommands, before (and
    besides) their registration under ``mpitrack detector``."""
    from mpitrack.cli import setup_logging
    from mpitrack.errors import MpitrackError

    parser = argparse.ArgumentParser(prog="mpitrack detector")
    parser.add_argument("-v", "--verbose", action="count", default=0)
    parser.add_argument("-q", "--quiet", action="store_true")
    wrapper = parser.add_subparsers(metavar="COMMAND")
    add_parser(wrapper)
    rest = list(sys.argv[1:] if argv is None else argv)
    lead = []
    while rest and rest[0] in ("-q", "--quiet", "-v", "-vv", "--verbose"):
        lead.append(rest.pop(0))
    args = parser.parse_args([*lead, "detector", *rest])
    setup_logging(args.verbose, args.quiet)
    try:
        return int(args.handler(args) or 0)
    except MpitrackError as exc:
        print(f"mpitrack: error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
