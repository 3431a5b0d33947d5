"""Tracking accuracy on spots that mpitrack's simulator did not make: MHT beside the baseline.

Every default of detection and tracking was chosen on `mpitrack.sim`; this benchmark
scores them on a generator written apart from it, so that a default which only
suits that simulator shows here. What differs from `mpitrack.sim`:

- region shape 15 x 40 x 40 (the simulator's is 11 x 35 x 35) and 4 spots per region,
  each drifting in the frame plane with its own random velocity (about 0.35 voxel
  per scan per axis), two of them on paths that cross mid-run;
- spot widths drawn from their own ranges; intensity varies by +-10 % per scan;
- its own noise models, one per case:
  ``poisson`` (photon counts on a background of 50),
  ``sparse_counts`` (a counting detector with a background of 3 counts: most voxels
  are 0 to 5),
  ``thresholded`` (Gaussian noise, then every voxel below the detector's threshold
  written as 0 and the background subtracted: zero-background frames),
  ``broad_spots`` (spots 2-3.5 voxels wide in the frame plane, Gaussian noise),
  ``weak_poisson`` (as poisson with 1500 counts a spot instead of 4000: peaks
  of about 7 noise sigmas, where the faint pass finds and separates spots).

Spots are separable Gaussians integrated over each voxel. A true spot is visible
while its centre lies inside the region (every axis within [-0.5, n - 0.5]), the
convention of `mpitrack.sim.truth`: a spot drifting out of the region is tracked
up to its edge. Both trackers get the
same detections (default `DetectParams`); MHT rows are the last ones returned for
each scan, as in the database. Scores come from `mpitrack.evaluate`; false tracks
as in accuracy.py.

Broad spots closer than about twice their width have no dip between them and are
one blob to detection: that case measures how the trackers do when the pair is
not resolved, not a tracking rule.

Prints JSON on stdout (per case the median and min over seeds of HOTA, IDF1 and
MOTA, the mean IDSW and false tracks, for the MHT and the baseline) and a table on
stderr.

Usage: python benchmarks/independent_generator.py [--seeds 0,1,2,3,4,5] [--regions 6]
       [--scans 12] [--cases poisson,...,weak_poisson] [--jobs 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
from accuracy import false_tracks, map_cases
from scipy.special import ndtr

from mpitrack.evaluate import Detection, evaluate
from mpitrack.sim.scenarios import SimParams
from mpitrack.sim.truth import GroundTruth, TruthRecord, TruthRegion
from mpitrack.track.baseline import FrameLinker
from mpitrack.track.detect import DetectParams, detect
from mpitrack.track.mht import MHTParams
from mpitrack.track.result import TrackRow
from mpitrack.track.tracker import RegionTracker

SHAPE = (15, 40, 40)
SPOTS_PER_REGION = 4
AXES = ("eta", "tth")
METRICS = ("HOTA", "IDF1", "MOTA")


@dataclass(frozen=True)
class Case:
    """One noise model: background level, noise kind and the spots' integrated intensity."""

    background: float
    noise: str  # "poisson", "threshold" or "gaussian"
    intensity: float
    broad: bool = False
    read_noise: float = 0.0


CASES = {
    "poisson": Case(50.0, "poisson", 4000.0),
    "sparse_counts": Case(3.0, "poisson", 900.0),
    "thresholded": Case(40.0, "threshold", 2500.0, read_noise=3.0),
    "broad_spots": Case(100.0, "gaussian", 30000.0, broad=True, read_noise=10.0),
    "weak_poisson": Case(50.0, "poisson", 1500.0),
}


def _voxel_fractions(n: int, centre: float, width: float) -> np.ndarray:
    """Share of a unit 1D Gaussian inside each of n voxels."""
    return np.diff(ndtr((np.arange(n + 1) - 0.5 - centre) / width))


def render(spots: list[tuple[np.ndarray, np.ndarray, float]], case: Case, rng) -> np.ndarray:
    """One region volume: the spots (centre, widths, intensity) on the case's background,
    with the case's noise drawn from ``rng``."""
    expected = np.full(SHAPE, case.background)
    for centre, width, intensity in spots:
        p = [_voxel_fractions(SHAPE[k], centre[k], width[k]) for k in range(3)]
        expected += intensity * p[0][:, None, None] * p[1][None, :, None] * p[2][None, None, :]
    if case.noise == "poisson":
        return rng.poisson(expected).astype(np.float32)
    noisy = expected + rng.normal(0.0, case.read_noise, SHAPE)
    if case.noise == "threshold":
        cut = case.background + 4.0 * case.read_noise
        return np.where(noisy > cut, noisy - case.background, 0.0).astype(np.float32)
    return noisy.astype(np.float32)


def draw_paths(case: Case, scans: int, rng) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(start, velocity per scan, widths) per spot; spot 1 crosses spot 0's path mid-run."""
    paths = []
    for _ in range(SPOTS_PER_REGION):
        start = np.array([rng.uniform(4, 10), rng.uniform(8, 32), rng.uniform(8, 32)])
        velocity = np.array([0.0, *rng.normal(0.0, 0.35, 2)])
        if case.broad:
            widths = np.array([1.5, rng.uniform(2.5, 3.5), rng.uniform(2.0, 3.0)])
        else:
            widths = np.array([rng.uniform(0.7, 1.2), rng.uniform(1.0, 2.2), rng.uniform(0.8, 1.6)])
        paths.append((start, velocity, widths))
    meet = paths[0][0] + paths[0][1] * scans / 2
    start = meet + np.array([0.3, 5.0, -5.0])
    paths[1] = (start, (meet - start) / (scans / 2), paths[1][2])
    return paths


def _row(row: TrackRow, region: int) -> Detection:
    pos = row.features["position"]
    return Detection(
        region, row.scan, row.track_id, tuple(float(pos[k]) for k in ("omega", *AXES)),
        row.overlapping,
    )  # fmt: skip


def run_case(name: str, seed: int, regions: int, scans: int) -> dict[str, Any]:
    """One (case, seed): both trackers on the same detections of every region, both scored."""
    case = CASES[name]
    rng = np.random.default_rng([seed, sorted(CASES).index(name)])
    params = DetectParams()
    truth_regions, records = [], []
    rows: dict[str, list[Detection]] = {"mht": [], "baseline": []}
    for r in range(regions):
        truth_regions.append(TruthRegion(r, name, (0, SHAPE[0])))
        paths = draw_paths(case, scans, rng)
        tracker = RegionTracker(params, MHTParams(), AXES)
        linker = FrameLinker(axes=AXES)
        final: dict[tuple[int, int], TrackRow] = {}
        for scan in range(scans):
            spots = []
            for tid, (start, velocity, widths) in enumerate(paths):
                centre = start + velocity * scan
                intensity = case.intensity * rng.uniform(0.9, 1.1)
                visible = all(-0.5 <= centre[k] <= SHAPE[k] - 0.5 for k in range(3))
                records.append(
                    TruthRecord(
                        r, scan, tid, tuple(float(c) for c in centre), intensity,
                        tuple(float(w) for w in widths), False, visible,
                    )
                )  # fmt: skip
                spots.append((centre, widths, intensity))
            found = detect(render(spots, case, rng), params, AXES).spots
            result = tracker.step_spots(scan, found, int(np.prod(SHAPE)))
            for key in [k for k in final if k[0] >= result.first_open_scan]:
                del final[key]
            final.update({(row.scan, row.track_id): row for row in result.rows})
            rows["baseline"] += [
                _row(x, r) for x in linker.step_spots(scan, found).rows if x.detected
            ]
        rows["mht"] += [_row(x, r) for x in final.values() if x.detected]
    # GroundTruth is only the scoring container here: evaluate reads its regions and
    # records, not the simulator parameters it carries.
    truth = GroundTruth(name, seed, SimParams(), 0, scans - 1, tuple(truth_regions), tuple(records))
    visible: dict[tuple[int, int], list] = defaultdict(list)
    for rec in records:
        if rec.visible:
            visible[(rec.region_id, rec.scan)].append(rec.position)
    visible_arrays = {k: np.array(v) for k, v in visible.items()}
    out: dict[str, Any] = {"case": name, "seed": seed}
    for tracker_name, tracked in rows.items():
        scores = evaluate(truth, tracked)["overall"]
        out[tracker_name] = {
            **{k: scores[k] for k in (*METRICS, "IDSW")},
            "false_tracks": false_tracks(visible_arrays, tracked),
        }
    return out


def summarise(cases: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for tracker in ("mht", "baseline"):
        values = [c[tracker] for c in cases]
        out[tracker] = {
            **{
                k: {
                    "median": statistics.median(v[k] for v in values),
                    "min": min(v[k] for v in values),
                }
                for k in METRICS
            },
            "IDSW_mean": statistics.mean(v["IDSW"] for v in values),
            "false_tracks_mean": statistics.mean(v["false_tracks"] for v in values),
        }
    return out


def table(result: dict[str, Any]) -> str:
    lines = [f"{'case':<15}{'':<9}{'HOTA':>7}{'IDF1':>7}{'MOTA':>7}{'IDSW':>7}{'false':>7}"]
    for name, s in result.items():
        for tracker in ("mht", "baseline"):
            m = s[tracker]
            lines.append(
                f"{name:<15}{tracker:<9}"
                + "".join(f"{m[k]['median']:>7.3f}" for k in METRICS)
                + f"{m['IDSW_mean']:>7.1f}{m['false_tracks_mean']:>7.1f}"
            )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2,3,4,5")
    ap.add_argument("--regions", type=int, default=6, help="regions per case and seed")
    ap.add_argument("--scans", type=int, default=12)
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--jobs", type=int, default=1, help="worker processes")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    names = [c for c in args.cases.split(",") if c.strip()]
    unknown = sorted(set(names) - set(CASES))
    if unknown:
        ap.error(f"unknown case(s) {', '.join(unknown)}; known: {', '.join(CASES)}")
    work = [(n, s, args.regions, args.scans) for n in names for s in seeds]
    t0 = time.perf_counter()
    done = map_cases(run_case, work, args.jobs)
    per_case = {n: summarise([c for c in done if c["case"] == n]) for n in names}
    result = {
        "seeds": seeds,
        "regions_per_case": args.regions,
        "scans": args.scans,
        "cases": per_case,
        "seconds": time.perf_counter() - t0,
    }
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    sys.stderr.write(table(per_case) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
