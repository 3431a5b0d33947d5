"""Tracker speed and checkpoint size per (region, scan) step; prints JSON.

Scenarios on an 11 x 35 x 35 region volume:
- ``isolated5``: 5 slowly drifting spots;
- ``overlap20``: 20 spots in 10 pairs that repeatedly merge into one blob
  and separate again (frequent overlaps);
- ``clutter70``: overlap20 plus 50 clutter spots per scan (faint, compact,
  at new random places every scan: what zingers, noise or a structured
  background leave after detection), the worst case for hypothesis growth.

Each is timed two ways: ``step_spots`` with spots built from the ground
truth (the MHT alone) and ``step`` on a synthetic noisy volume (detection +
MHT), when detection is available. Reported: median per-step time over scans
5..25 ("early") and 480..500 ("late"), medians over several runs, and the
checkpoint size at scans 10 and 500.

Usage: python benchmarks/track_speed.py [--runs 3] [--scans 500]
       [--scenarios isolated5,overlap20,clutter70]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from typing import Any

import numpy as np

from mpitrack.roles.worker import settle_heap
from mpitrack.track.mht import MHTParams
from mpitrack.track.spot import Spot
from mpitrack.track.tracker import RegionTracker

SHAPE = (11, 35, 35)
SIGMA = np.array([0.9, 1.2, 1.2])
AMPLITUDE = 200.0
NOISE = 2.0
CLUTTER = 50  # clutter spots per scan in clutter70
CLUTTER_SIGMA = np.array([0.6, 0.6, 0.6])


def clutter(scan: int) -> list[tuple[np.ndarray, float]]:
    """Centres and intensities of one scan's clutter spots (new places every scan)."""
    rng = np.random.default_rng([17, scan])
    lo, hi = np.array([1.0, 1.0, 1.0]), np.array(SHAPE, dtype=float) - 2.0
    vol = (2 * math.pi) ** 1.5 * float(np.prod(CLUTTER_SIGMA))
    return [
        (rng.uniform(lo, hi), 0.4 * AMPLITUDE * vol * rng.uniform(0.5, 1.5)) for _ in range(CLUTTER)
    ]


def truth(scenario: str, scan: int) -> list[tuple[np.ndarray, float]]:
    """Centres and integrated intensities of the true spots at a scan."""
    out = []
    vol = (2 * math.pi) ** 1.5 * float(np.prod(SIGMA))
    if scenario == "isolated5":
        for k in range(5):
            c = np.array([5.0, 5.0 + 6.0 * k, 8.0 + 0.02 * ((scan + 7 * k) % 400)])
            out.append((c, AMPLITUDE * vol * (1.0 + 0.2 * k)))
    else:
        for k in range(10):
            cx, cy = 5.0 + 8.0 * (k % 4), 6.0 + 11.0 * (k // 4)
            d = 3.0 * math.cos(2 * math.pi * (scan + 3 * k) / 12.0)
            for sgn, scale in ((1, 1.0), (-1, 1.3)):
                c = np.array([5.0, cx + 0.0, cy + sgn * d])
                out.append((c, AMPLITUDE * vol * scale))
    return out


def volume(scenario: str, scan: int, rng: np.random.Generator) -> np.ndarray:
    grid = np.indices(SHAPE, dtype=float)
    vol = 10.0 + rng.normal(0.0, NOISE, SHAPE)
    extra = clutter(scan) if scenario == "clutter70" else []
    for sigma, items in ((SIGMA, truth(scenario, scan)), (CLUTTER_SIGMA, extra)):
        v = (2 * math.pi) ** 1.5 * float(np.prod(sigma))
        for c, inten in items:
            r2 = sum(((grid[a] - c[a]) / sigma[a]) ** 2 for a in range(3))
            vol += inten / v * np.exp(-0.5 * r2)
    return vol


def truth_spots(scenario: str, scan: int, rng: np.random.Generator) -> list[Spot]:
    """Spots as detection would give them: overlapping pairs merge into one blob."""
    spots: list[Spot] = []
    items = truth(scenario, scan)
    used = [False] * len(items)
    for a, (c, inten) in enumerate(items):
        if used[a]:
            continue
        group = [(c, inten)]
        for b in range(a + 1, len(items)):
            if not used[b] and np.linalg.norm(items[b][0] - c) < 2.0:
                group.append(items[b])
                used[b] = True
        tot = sum(i for _, i in group)
        pos = sum(cc * i for cc, i in group) / tot
        cov = np.diag(SIGMA**2) + sum(i * np.outer(cc - pos, cc - pos) for cc, i in group) / tot
        pos = pos + rng.normal(0.0, 0.05, 3)
        feats = {"intensity": float(tot), "position": {"omega": float(pos[0])}}
        spots.append(Spot(pos, float(tot), cov, float(tot) / 30.0, 40, feats))
    if scenario == "clutter70":
        for c, inten in clutter(scan):
            feats = {"intensity": float(inten), "position": {"omega": float(c[0])}}
            cov = np.diag(CLUTTER_SIGMA**2)
            spots.append(Spot(c, float(inten), cov, float(inten) / 10.0, 5, feats))
    return spots


def run_once(scenario: str, mode: str, scans: int, seed: int) -> dict[str, Any]:
    from mpitrack.track.detect import DetectParams

    rng = np.random.default_rng(seed)
    tr = RegionTracker(DetectParams(), MHTParams())
    times: list[float] = []
    sizes: dict[int, int] = {}
    ids: set[int] = set()
    for s in range(scans + 1):
        if mode == "step":
            vol = volume(scenario, s, rng)
            t0 = time.process_time()
            res = tr.step(s, vol)
        else:
            spots = truth_spots(scenario, s, rng)
            t0 = time.process_time()
            res = tr.step_spots(s, spots, voxels=math.prod(SHAPE))
        times.append(time.process_time() - t0)
        ids.update(r.track_id for r in res.rows)
        if s in (10, scans):
            sizes[s] = len(tr.to_checkpoint())
    late = times[max(0, scans - 20) : scans + 1]
    return {
        "early_ms": 1e3 * statistics.median(times[5:26]),
        "late_ms": 1e3 * statistics.median(late),
        "max_ms": 1e3 * max(times[5:]),
        "ckpt_early": sizes[10],
        "ckpt_late": sizes[scans],
        "live_tracks_last": len({r.track_id for r in res.rows if r.scan == scans}),
        "track_ids_used": len(ids),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--scans", type=int, default=500)
    ap.add_argument("--modes", default="step_spots,step")
    ap.add_argument("--scenarios", default="isolated5,overlap20,clutter70")
    args = ap.parse_args()
    try:
        from mpitrack.track.detect import detect_spots  # noqa: F401

        have_detect = True
    except ImportError:
        have_detect = False
    out: dict[str, Any] = {"volume_shape": list(SHAPE), "scans": args.scans, "runs": args.runs}
    settle_heap()  # as a worker does before its first job
    for scenario in args.scenarios.split(","):
        for mode in args.modes.split(","):
            if mode == "step" and not have_detect:
                out[f"{scenario}/{mode}"] = "detection not available"
                continue
            runs = [run_once(scenario, mode, args.scans, seed) for seed in range(args.runs)]
            out[f"{scenario}/{mode}"] = {
                key: statistics.median(r[key] for r in runs) for key in runs[0]
            }
    json.dump(out, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
