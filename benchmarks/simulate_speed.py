"""How fast `mpitrack simulate` writes frames (35 x 35 float32, atomic .npy writes).

Prints one JSON object: frames/s of the whole simulation (render + noise +
atomic write; best of --repeats, threaded and serial writes), of serial
atomic writes alone, and of plain np.save (not atomic) for scale.
Target: >= 2,000 frames/s to local disk.

    python benchmarks/simulate_speed.py [--regions 40] [--scans 10] [--dir /local/tmp]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from mpitrack.sim import ExperimentSpec, plan, write_experiment
from mpitrack.sim.writer import WRITE_THREADS, NpyWriter


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--regions", type=int, default=40)
    ap.add_argument("--scans", type=int, default=10)
    ap.add_argument("--scenario", default="mixed")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dir", type=Path, default=None, help="where to write (default: a temp dir)")
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="mpitrack-simbench-", dir=args.dir))
    try:
        runs = {"threaded": [], "serial": []}
        plan_s = 0.0
        n = 0
        for rep in range(args.repeats):
            for mode, threads in (("threaded", WRITE_THREADS), ("serial", 1)):
                spec = ExperimentSpec(
                    out_dir=base / f"{mode}{rep}",
                    scenarios=(args.scenario,),
                    regions=args.regions,
                    scans=args.scans,
                )
                t0 = time.perf_counter()
                exp = plan(spec)
                plan_s = time.perf_counter() - t0
                summary = write_experiment(exp, progress_interval=1e9, threads=threads)
                runs[mode].append(summary.frames_per_second)
                n = summary.frames_written

        frame = np.random.default_rng(0).random((35, 35), dtype=np.float32)
        writer = NpyWriter((35, 35))
        (base / "w").mkdir()
        t0 = time.perf_counter()
        for i in range(n):
            writer.write(base / "w" / f"f{i}.npy", frame)
        write_only = n / (time.perf_counter() - t0)

        (base / "s").mkdir()
        t0 = time.perf_counter()
        for i in range(n):
            np.save(base / "s" / f"f{i}.npy", frame)
        np_save = n / (time.perf_counter() - t0)
        best = max(runs["threaded"])

        print(
            json.dumps(
                {
                    "benchmark": "simulate_speed",
                    "frame_shape": [35, 35],
                    "dtype": "float32",
                    "frames": n,
                    "regions": args.regions,
                    "scans": args.scans,
                    "scenario": args.scenario,
                    "plan_seconds": round(plan_s, 4),
                    "simulate_frames_per_s": round(best, 1),
                    "simulate_frames_per_s_runs": [round(x, 1) for x in runs["threaded"]],
                    "simulate_serial_frames_per_s_runs": [round(x, 1) for x in runs["serial"]],
                    "write_threads": WRITE_THREADS,
                    "atomic_write_only_serial_frames_per_s": round(write_only, 1),
                    "np_save_frames_per_s": round(np_save, 1),
                    "target_frames_per_s": 2000,
                    "meets_target": best >= 2000,
                    "load_average": [round(x, 2) for x in os.getloadavg()],
                    "directory": str(base),
                    "filesystem_device": os.stat(base).st_dev,
                    "python": platform.python_version(),
                    "cpu_count": os.cpu_count(),
                }
            )
        )
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
