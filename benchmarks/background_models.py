"""Detection with each background model on every simulated scenario: the measurement
behind the default ``detection.background`` (docs/detection.md).

For each scenario and model, small experiments (seeds x regions x scans) are
rendered as `mpitrack simulate` writes them and masked as the loader masks
them; each volume is detected with the default settings except the
background model, and the spots are matched to the true spots (nearest within
one normalised width). Reported per model and scenario: false spots per
volume, missed true spots (%), the median centre error (voxels), and the
median and spread of intensity / true intensity - 1.

Models: the three of ``detection.background`` (``profiles``, ``plane``,
``median``) and one candidate that is not shipped, ``omega_median`` (each
pixel's median over the omega frames plus a robust noise), included because
a per-pixel median along omega is the textbook choice for rings.

Prints JSON on stdout and a table on stderr.

    .venv/bin/python benchmarks/background_models.py [--seeds 0,1,2] [--scans 8]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np

import mpitrack.track.background as background
import mpitrack.track.detect as detection
from mpitrack.frames import FrameMask
from mpitrack.sim.scenarios import SCENARIO_NAMES
from mpitrack.sim.writer import ExperimentSpec, config_dict, plan, region_volume

MODELS = ("profiles", "plane", "median", "omega_median")
_shipped = background.estimate_background


def _omega_median(volume, method="profiles", *, measured=None, exclude=None, start=None):
    """The candidate: per-pixel median over omega (the shipped models otherwise)."""
    if method != "omega_median":
        return _shipped(volume, method, measured=measured, exclude=exclude, start=start)
    usable = np.ones(volume.shape, dtype=bool) if measured is None else measured.copy()
    if exclude is not None:
        usable &= ~exclude
    values = np.where(usable, volume, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels: the volume's median
        level = np.nanmedian(values, axis=0, keepdims=True)
    level = np.where(np.isnan(level), np.nanmedian(values), level)
    resid = volume - level
    offset, noise, clip = background.median_mad(resid[usable])
    keep = usable & (np.abs(resid - offset) <= clip * noise)
    return background.Background(np.broadcast_to(level, volume.shape), noise, keep, clip)


def run(model: str, scenario: str, seeds: list[int], regions: int, scans: int) -> dict[str, Any]:
    false = missed = truths = volumes = 0
    errors: list[float] = []
    ratios: list[float] = []
    params = detection.DetectParams(background=model)  # type: ignore[arg-type]
    for seed in seeds:
        spec = ExperimentSpec(
            out_dir=Path("."), scenarios=(scenario,), regions=regions, scans=scans, seed=seed
        )
        exp = plan(spec)
        mask_values = config_dict(exp)["frames"].get("mask", {}).get("values", [2.0**32 - 1])
        mask = FrameMask(values=tuple(mask_values))
        for r, inst in enumerate(exp.scenarios):
            for i in range(scans):
                volume = mask.apply(region_volume(exp, r, i), "<rendered>")
                spots = detection.detect(volume, params).spots
                volumes += 1
                positions = np.array([s.position for s in spots]).reshape(-1, 3)
                used: set[int] = set()
                for true in inst.scans[i]:
                    truths += 1
                    if len(positions):
                        gap = np.linalg.norm((positions - true.position) / true.sigma, axis=1)
                        k = int(np.argmin(gap))
                        if gap[k] < 1.0 and k not in used:
                            used.add(k)
                            errors.append(float(np.linalg.norm(positions[k] - true.position)))
                            ratios.append(spots[k].intensity / true.intensity - 1.0)
                            continue
                    missed += 1
                false += len(positions) - len(used)
    q25, q75 = np.percentile(ratios, [25, 75]) if ratios else (np.nan, np.nan)
    return {
        "false_per_volume": false / volumes,
        "missed_percent": 100.0 * missed / max(truths, 1),
        "centre_error_median": statistics.median(errors) if errors else None,
        "intensity_bias_median": statistics.median(ratios) if ratios else None,
        "intensity_iqr": float(q75 - q25),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--regions", type=int, default=2)
    ap.add_argument("--scans", type=int, default=8)
    ap.add_argument("--scenarios", default=",".join(n for n in SCENARIO_NAMES if n != "mixed"))
    args = ap.parse_args()
    background.estimate_background = _omega_median
    detection.estimate_background = _omega_median
    detection.METHODS = (*background.METHODS, "omega_median")
    seeds = [int(s) for s in args.seeds.split(",")]
    names = [s for s in args.scenarios.split(",") if s]
    result = {
        name: {m: run(m, name, seeds, args.regions, args.scans) for m in MODELS} for name in names
    }
    json.dump({"seeds": seeds, "scans": args.scans, "scenarios": result}, sys.stdout, indent=2)
    sys.stdout.write("\n")
    head = f"{'scenario':<22}" + "".join(f"{m:>26}" for m in MODELS)
    lines = [head, "(cells: false spots per volume / missed % / median centre error)", ""]
    for name, row in result.items():
        cells = [
            f"{c['false_per_volume']:>8.2f} /{c['missed_percent']:>5.1f}% /"
            f"{(c['centre_error_median'] or float('nan')):>6.3f}"
            for c in row.values()
        ]
        lines.append(f"{name:<22}" + "".join(f"{c:>26}" for c in cells))
    sys.stderr.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
