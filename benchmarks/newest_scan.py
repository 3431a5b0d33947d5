"""Births and misses per scan as the database shows them at the end of a run; prints JSON.

A batch run ends on its last scan and a live report always shows the newest
one, whose rows nothing later has revised yet. This benchmark tracks a
simulated experiment in-process exactly as the workers do (detection +
`RegionTracker.step`, rows of each step replacing the open window), then
counts per scan, over all regions:

- ``births``: tracks whose first detected row is in that scan, against the
  truth's spots that first appear in that scan;
- ``missed``: rows with ``detected = false``;
- ``truth_visible``: true spots inside their region in that scan.

``newest_excess`` = (births - truth births) + missed at the last scan, as a
fraction of the truth's visible spots there: what the newest scan gets wrong.

Usage: python benchmarks/newest_scan.py [--regions 300] [--scans 8] [--seed 3]
       [--scenario mixed]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from mpitrack.sim.render import render_volume
from mpitrack.sim.writer import ExperimentSpec, config_dict, plan
from mpitrack.track.detect import DetectParams
from mpitrack.track.mht import MHTParams
from mpitrack.track.result import TrackRow, apply_step
from mpitrack.track.tracker import RegionTracker


def run(scenario: str, regions: int, scans: int, seed: int) -> dict[str, Any]:
    spec = ExperimentSpec(
        out_dir=Path("."), scenarios=(scenario,), regions=regions, scans=scans, seed=seed
    )
    exp = plan(spec)
    detect_params = DetectParams(**config_dict(exp)["detection"])
    axes = (spec.params.axes[0], spec.params.axes[1])
    births: Counter[int] = Counter()
    missed: Counter[int] = Counter()
    t0 = time.perf_counter()
    for r, inst in enumerate(exp.scenarios):
        tracker = RegionTracker(detect_params, MHTParams(), axes)
        rows: dict[tuple[int, int], TrackRow] = {}
        for i in range(scans):
            rng = np.random.default_rng([seed, r, spec.first_scan + i, 1])
            volume = render_volume(spec.params, inst.scans[i], rng)
            apply_step(rows, tracker.step(spec.first_scan + i, volume))
        first: dict[int, int] = {}
        for (track, scan), row in rows.items():
            if row.detected:
                first[track] = min(first.get(track, scan), scan)
            else:
                missed[scan] += 1
        births.update(first.values())
    seconds = time.perf_counter() - t0
    truth_first: dict[tuple[int, int], int] = {}
    visible: Counter[int] = Counter()
    for rec in exp.truth.records:
        if rec.visible:
            visible[rec.scan] += 1
            key = (rec.region_id, rec.track_id)
            truth_first[key] = min(truth_first.get(key, rec.scan), rec.scan)
    truth_births = Counter(truth_first.values())
    per_scan = [
        {
            "scan": spec.first_scan + i,
            "births": births[spec.first_scan + i],
            "truth_births": truth_births[spec.first_scan + i],
            "missed": missed[spec.first_scan + i],
            "truth_visible": visible[spec.first_scan + i],
        }
        for i in range(scans)
    ]
    last = per_scan[-1]
    excess = (last["births"] - last["truth_births"]) + last["missed"]
    return {
        "scenario": scenario,
        "regions": regions,
        "scans": scans,
        "seed": seed,
        "seconds": seconds,
        "per_scan": per_scan,
        "newest_excess": excess,
        "newest_excess_fraction": excess / max(last["truth_visible"], 1),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--regions", type=int, default=300)
    ap.add_argument("--scans", type=int, default=8)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--scenario", default="mixed")
    args = ap.parse_args()
    out = run(args.scenario, args.regions, args.scans, args.seed)
    json.dump(out, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
