"""Time spot detection on the volume size the tracker's budget is set for.

The whole tracker step (detection + MHT) must take <= 5 ms for an 11x35x35
region volume with 5 spots and <= 50 ms with 20 spots; detection should use
well under half of that. This script builds float32 volumes with 5 and 20
anisotropic Gaussian spots on a noisy background (fixed seeds), runs
`detect_spots` repeatedly and prints one JSON object: per case the median,
10th and 90th percentile of the wall time in milliseconds, the median
thread CPU time (less disturbed by other processes on a shared machine), and
how many of the true spots were found (within 0.5 voxel), so a speed-up that
breaks detection shows here too. Misses in the 20-spot case are pairs closer
than the split criterion can separate (merged, one centre between the two).

    .venv/bin/python benchmarks/detect_speed.py [--repeats 200] [--volumes 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np

from mpitrack.track.detect import DetectParams, detect_spots

SHAPE = (11, 35, 35)


def make_case(n_spots: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A noisy volume with n_spots Gaussians on a jittered grid, and the true centres."""
    rng = np.random.default_rng(seed)
    rows = 5 if n_spots > 8 else 3
    cols = -(-n_spots // rows)
    cells = rng.permutation(rows * cols)[:n_spots]
    centres = np.array(
        [
            (
                rng.uniform(2.5, SHAPE[0] - 3.5),
                3.5 + (SHAPE[1] - 7) * (c // cols + 0.5) / rows + rng.uniform(-1, 1),
                3.5 + (SHAPE[2] - 7) * (c % cols + 0.5) / cols + rng.uniform(-1, 1),
            )
            for c in cells
        ]
    )
    sigmas = rng.uniform([0.8, 1.0, 1.0], [1.5, 1.8, 1.8], size=(n_spots, 3))
    amps = rng.uniform(15.0, 150.0, n_spots)
    grid = np.indices(SHAPE, dtype=np.float64)
    volume = 100.0 + rng.normal(scale=2.0, size=SHAPE)
    for centre, sigma, amp in zip(centres, sigmas, amps, strict=True):
        r2 = sum(((grid[k] - centre[k]) / sigma[k]) ** 2 for k in range(3))
        volume += 2.0 * amp * np.exp(-r2 / 2.0)
    return volume.astype(np.float32), centres


def time_case(n_spots: int, n_volumes: int, repeats: int, params: DetectParams) -> dict:
    times: list[float] = []
    cpu: list[float] = []
    found = truth = 0
    for v in range(n_volumes):
        volume, centres = make_case(n_spots, seed=1000 * n_spots + v)
        spots = detect_spots(volume, params)  # warm-up, and the accuracy check
        positions = np.array([s.position for s in spots]).reshape(-1, 3)
        for c in centres:
            truth += 1
            if positions.size and np.min(np.linalg.norm(positions - c, axis=1)) < 0.5:
                found += 1
        for _ in range(repeats):
            t0, c0 = time.perf_counter(), time.thread_time()
            detect_spots(volume, params)
            times.append(time.perf_counter() - t0)
            cpu.append(time.thread_time() - c0)
    ms = np.array(times) * 1e3
    cpu_ms = np.array(cpu) * 1e3
    return {
        "n_spots": n_spots,
        "volumes": n_volumes,
        "runs": int(ms.size),
        "median_ms": round(float(np.median(ms)), 3),
        "p10_ms": round(float(np.percentile(ms, 10)), 3),
        "p90_ms": round(float(np.percentile(ms, 90)), 3),
        "cpu_median_ms": round(float(np.median(cpu_ms)), 3),
        "true_spots_found": found,
        "true_spots": truth,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200, help="timed runs per volume")
    parser.add_argument("--volumes", type=int, default=5, help="volumes (seeds) per case")
    args = parser.parse_args()
    params = DetectParams()
    result = {
        "benchmark": "detect_speed",
        "shape": list(SHAPE),
        "dtype": "float32",
        "params": params.__dict__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "cpu_count": os.cpu_count(),
        "cases": [time_case(n, args.volumes, args.repeats, params) for n in (5, 20)],
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
