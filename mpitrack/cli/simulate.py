"""`mpitrack simulate`: write a synthetic experiment with ground truth."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mpitrack.errors import UsageError
from mpitrack.sim.scenarios import SCENARIO_NAMES, SimParams, check_scenario_names
from mpitrack.sim.writer import CONFIG_NAME, DEFAULT_PATTERN, TRUTH_NAME, ExperimentSpec, simulate

_DEFAULTS = SimParams()


def _shape(text: str) -> tuple[int, int, int]:
    try:
        parts = tuple(int(p) for p in text.replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected OMEGA,N1,N2 integers, got {text!r}") from None
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"expected three sizes OMEGA,N1,N2, got {text!r}")
    return parts  # type: ignore[return-value]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "simulate",
        help="write a synthetic experiment (frames, ground truth, config)",
        description=(
            "Write a synthetic experiment: R regions x S scans of .npy frames (one file per "
            "region, omega frame and scan, written atomically), the ground truth "
            f"({TRUTH_NAME}) and a config ({CONFIG_NAME}) that `mpitrack run` uses as it is. "
            "Each region is a seeded instance of a named scenario; the same arguments "
            "always give the same files. Scenarios: " + ", ".join(SCENARIO_NAMES) + " "
            "(see mpitrack/sim/scenarios.py)."
        ),
        epilog=(
            "Example: mpitrack simulate --out data/crossing --scenario crossing --regions 4 "
            "--scans 12 --seed 1. Emulate a live detector writing 500 frames/s, one scan every "
            "10 s: mpitrack simulate --out data/live --fps 500 --scan-period 10."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="DIR",
        help="output directory (frames/, truth.json, experiment.yaml)",
    )
    p.add_argument(
        "--scenario",
        action="append",
        metavar="NAME",
        help="scenario of the regions, repeatable or comma-separated; regions take "
        "them in turn (default: mixed)",
    )
    p.add_argument("--regions", type=int, default=8, metavar="R", help="number of regions")
    p.add_argument("--scans", type=int, default=10, metavar="S", help="number of scans")
    p.add_argument(
        "--first-scan", type=int, default=0, metavar="N", help="number of the first scan"
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (scenarios and noise)")
    p.add_argument("--run", default="sim", metavar="NAME", help="experiment name in the config")
    p.add_argument(
        "--region-shape",
        type=_shape,
        default=_DEFAULTS.region_shape,
        metavar="OMEGA,N1,N2",
        help="omega frames x frame axis 1 x frame axis 2",
    )
    p.add_argument(
        "--frames-per-scan",
        type=int,
        default=_DEFAULTS.frames_per_scan,
        metavar="F",
        help="omega frames in a full scan (window numbers wrap at F)",
    )
    p.add_argument(
        "--snr",
        type=float,
        default=_DEFAULTS.snr,
        help="peak signal-to-noise ratio of ordinary spots",
    )
    p.add_argument(
        "--low-snr",
        type=float,
        default=_DEFAULTS.low_snr,
        help="peak SNR of the low_snr scenario's spots",
    )
    p.add_argument(
        "--background",
        type=float,
        default=_DEFAULTS.background,
        help="background level in counts (Poisson)",
    )
    p.add_argument(
        "--background-slope",
        type=float,
        nargs=2,
        default=list(_DEFAULTS.background_slope),
        metavar=("S1", "S2"),
        help="background slope in counts per pixel along the two frame axes",
    )
    p.add_argument(
        "--read-noise",
        type=float,
        default=_DEFAULTS.read_noise,
        help="Gaussian read noise sigma in counts",
    )
    p.add_argument(
        "--profile",
        choices=("gaussian", "pseudo-voigt"),
        default=_DEFAULTS.profile,
        help="spot profile",
    )
    p.add_argument(
        "--voigt-fraction",
        type=float,
        default=_DEFAULTS.voigt_fraction,
        help="Lorentzian fraction of the pseudo-Voigt profile",
    )
    p.add_argument(
        "--dense-spots",
        type=int,
        default=_DEFAULTS.dense_spots,
        metavar="N",
        help="spots per region in the dense scenario",
    )
    p.add_argument(
        "--overlap-distance",
        type=float,
        default=_DEFAULTS.overlap_distance,
        help="normalised centre distance below which true spots count as overlapping",
    )
    p.add_argument(
        "--axes",
        nargs=2,
        default=list(_DEFAULTS.axes),
        metavar=("AXIS1", "AXIS2"),
        help="names of the two frame axes",
    )
    p.add_argument(
        "--pattern",
        default=DEFAULT_PATTERN,
        help="frame file name pattern ({region}, {frame}, {scan}; may contain '/')",
    )
    p.add_argument(
        "--fps",
        type=float,
        metavar="N",
        help="write at most N frame files per second (default: as fast as possible)",
    )
    p.add_argument(
        "--scan-period",
        type=float,
        metavar="SECONDS",
        help="start scan k no earlier than k x SECONDS after the first",
    )
    p.add_argument(
        "--progress-interval",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="seconds between progress log lines",
    )
    p.add_argument(
        "--overwrite", action="store_true", help="write into a non-empty output directory"
    )
    p.add_argument(
        "--detector",
        action="store_true",
        help="write full detector frames (HDF5, two panels) instead of region files: "
        "the same as `mpitrack detector simulate --out DIR --scans S --seed SEED`",
    )
    p.set_defaults(handler=run)


def _scenarios(values: list[str] | None) -> tuple[str, ...]:
    names = [n.strip() for v in (values or ["mixed"]) for n in v.split(",") if n.strip()]
    if not names:
        raise UsageError(f"--scenario is empty; known scenarios: {', '.join(SCENARIO_NAMES)}")
    try:
        check_scenario_names(names)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return tuple(names)


def run(args: argparse.Namespace) -> int:
    if args.detector:
        from mpitrack.cli import build_parser

        forwarded = ["detector", "simulate", "--out", str(args.out), "--scans", str(args.scans)]
        forwarded += ["--seed", str(args.seed)] + (["--overwrite"] if args.overwrite else [])
        detector_args = build_parser().parse_args(forwarded)
        return int(detector_args.handler(detector_args))
    scenarios = _scenarios(args.scenario)
    params = SimParams(
        region_shape=tuple(args.region_shape),
        frames_per_scan=args.frames_per_scan,
        background=args.background,
        background_slope=tuple(args.background_slope),
        read_noise=args.read_noise,
        snr=args.snr,
        low_snr=args.low_snr,
        profile=args.profile,
        voigt_fraction=args.voigt_fraction,
        dense_spots=args.dense_spots,
        overlap_distance=args.overlap_distance,
        axes=tuple(args.axes),
    )
    out: Path = args.out
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not args.overwrite:
        raise UsageError(f"--out {out} is not empty; give --overwrite to write into it")
    spec = ExperimentSpec(
        out_dir=out,
        scenarios=scenarios,
        regions=args.regions,
        scans=args.scans,
        first_scan=args.first_scan,
        seed=args.seed,
        params=params,
        run=args.run,
        pattern=args.pattern,
        fps=args.fps,
        scan_period=args.scan_period,
    )
    try:
        summary = simulate(spec, progress_interval=args.progress_interval)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise UsageError(f"cannot write the experiment under {out}: {exc}") from None
    print(
        f"wrote {summary.frames_written} frames ({args.regions} regions x {args.scans} scans) "
        f"in {summary.seconds:.2f} s ({summary.frames_per_second:.0f} frames/s)\n"
        f"config: {summary.config}\nground truth: {summary.truth}",
        file=sys.stdout,
    )
    return 0
