"""`mpitrack baseline`: the frame-to-frame baseline tracker over an experiment's frames."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from mpitrack.errors import UsageError
from mpitrack.track.baseline import LinkerParams, export_row, track_region

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "baseline",
        help="run the simple frame-to-frame baseline tracker (JSON-lines output)",
        description=(
            "Detect spots in every (region, scan) volume of an experiment with the same "
            "detection as `mpitrack run` (the config's detection section), link them scan to "
            "scan by a Hungarian assignment with a distance gate, and write the rows as JSON "
            "lines (region_id, track_id, scan_number, detected, overlapping, features), the "
            "form `mpitrack evaluate --input` reads. It needs no database or Redis. With "
            "scans.last unset it stops at a region's first incomplete scan."
        ),
        epilog=(
            "Example: mpitrack baseline --config data/crossing/experiment.yaml "
            "--out baseline.jsonl && mpitrack evaluate --config data/crossing/experiment.yaml "
            "--truth data/crossing/truth.json --input baseline.jsonl"
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "-c", "--config", type=Path, required=True, metavar="FILE", help="experiment config (YAML)"
    )
    p.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="FILE",
        help="output file (JSON lines; written atomically)",
    )
    p.add_argument(
        "--max-distance",
        type=float,
        default=LinkerParams.max_distance,
        metavar="VOXELS",
        help="largest distance a spot may move between scans",
    )
    p.add_argument(
        "--max-missed",
        type=int,
        default=LinkerParams.max_missed,
        metavar="SCANS",
        help="consecutive scans a track may go undetected before it ends",
    )
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from mpitrack.config import load_config
    from mpitrack.frames import FrameError, FrameMasks, FramePattern, load_volume
    from mpitrack.regions import omega_window
    from mpitrack.track.detect import detect_spots

    try:
        params = LinkerParams(args.max_distance, args.max_missed)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    config = load_config(args.config)
    pattern = FramePattern(config.frames.pattern)
    masks = FrameMasks.from_config(config.frames.mask)
    axes = tuple(config.frames.axes)
    first, last = config.scans.first, config.scans.last

    def detect(volume: np.ndarray):
        return detect_spots(volume, config.detection, axes)

    def volumes(region_id: int, window: tuple[int, ...]) -> Iterator[tuple[int, np.ndarray]]:
        scan = first
        while last is None or scan <= last:
            try:
                volume = load_volume(
                    config.frames.directory,
                    pattern,
                    region_id,
                    scan,
                    window,
                    config.frames.shape,
                    masks.for_region(region_id),
                )
            except FrameError as exc:
                if last is None:
                    return
                raise UsageError(f"region {region_id}, scan {scan}: {exc}") from None
            yield scan, volume
            scan += 1

    out: Path = args.out
    tmp = out.with_name(f".{out.name}.tmp")
    n_rows = 0
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            for region in config.regions:
                window = omega_window(*region.frames, config.frames.frames_per_scan)
                for row in track_region(volumes(region.id, window), detect, params, axes):
                    fh.write(json.dumps(export_row(region.id, row)) + "\n")
                    n_rows += 1
        os.replace(tmp, out)
    except OSError as exc:
        raise UsageError(f"cannot write {out}: {exc}") from None
    finally:
        if tmp.exists():
            tmp.unlink()
    print(f"wrote {n_rows} rows for {len(config.regions)} regions to {out}", file=sys.stdout)
    return 0
