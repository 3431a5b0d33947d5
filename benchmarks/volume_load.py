"""Loading a job's volume: `frames.load_volume` (with the worker's link check) against a
plain ``np.load`` loop + ``np.stack``, on the same files in the same run. Prints JSON.

Files: --regions regions x --frames frames of --shape float32 (the simulator's
35 x 35 by default) in a per-scan subdirectory, as `mpitrack simulate --pattern
scan_{scan}/...` writes them; each volume is loaded --repeats times per path
(paths interleaved, the page cache warm, as on a worker reading fresh frames).
With strace on the PATH, the system calls of one volume load are counted too.

    python benchmarks/volume_load.py
    python benchmarks/volume_load.py --shape 195,487     # a bigger region
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from mpitrack.frames import FramePattern, load_volume, refuse_outside_links

PATTERN = "scan_{scan}/region_{region}_frame_{frame}_scan_{scan}.npy"


def write(base: Path, regions: int, frames: int, shape: tuple[int, int]) -> FramePattern:
    pattern = FramePattern(PATTERN)
    rng = np.random.default_rng(0)
    (base / "scan_0").mkdir(parents=True)
    for region in range(regions):
        for frame in range(frames):
            data = rng.poisson(50, shape).astype(np.float32)
            np.save(base / pattern.format(region=region, frame=frame, scan=0), data)
    return pattern


def mpitrack_load(base: Path, pattern: FramePattern, region: int, window: list[int]) -> np.ndarray:
    refuse_outside_links(base, pattern, region, 0, window)
    return load_volume(base, pattern, region, 0, window)


def plain_load(base: Path, pattern: FramePattern, region: int, window: list[int]) -> np.ndarray:
    return np.stack([np.load(base / pattern.format(region, f, 0)) for f in window])


def count_syscalls(base: Path, path: str, frames: int) -> int | None:
    """System calls of one volume load by ``path`` (strace -c), less Python's start-up
    (the same script with the load left out)."""
    if shutil.which("strace") is None:
        return None
    script = (
        "import sys; sys.path.insert(0, {here!r}); import volume_load as v; "
        "from pathlib import Path; p = v.FramePattern(v.PATTERN); "
        "w = list(range({frames})); f = v.{fn}; f(Path({base!r}), p, 1, w); "
        "import os; os.write(2, b'MARK'); {call}"
    )

    def calls(call: str) -> int:
        code = script.format(
            here=str(Path(__file__).parent), frames=frames, fn=path, base=str(base), call=call
        )
        out = subprocess.run(
            ["strace", "-f", "-e", "trace=all", sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
        ).stderr
        after = out[out.index("MARK") :]
        return sum(1 for line in after.splitlines()[1:] if "(" in line and "+++" not in line)

    return calls(f"f(Path({str(base)!r}), p, 0, w)") - calls("pass")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--regions", type=int, default=200)
    parser.add_argument("--frames", type=int, default=11)
    parser.add_argument("--shape", default="35,35", help="frame shape N1,N2")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    shape = tuple(int(v) for v in args.shape.split(","))
    window = list(range(args.frames))
    with tempfile.TemporaryDirectory(prefix="mpitrack-volume-load-") as tmp:
        base = Path(tmp)
        pattern = write(base, args.regions, args.frames, shape)
        paths = {"load_volume": mpitrack_load, "np_load_loop": plain_load}
        for region in range(args.regions):  # warm the page cache; check both agree
            a = mpitrack_load(base, pattern, region, window)
            b = plain_load(base, pattern, region, window)
            assert np.array_equal(a, b), f"region {region}: the two loads differ"
        runs: dict[str, list[float]] = {name: [] for name in paths}
        for _ in range(args.repeats):
            for name, load in paths.items():
                started = time.perf_counter()
                for region in range(args.regions):
                    load(base, pattern, region, window)
                runs[name].append((time.perf_counter() - started) / args.regions)
        syscalls = {
            name: count_syscalls(base, fn, args.frames)
            for name, fn in (("load_volume", "mpitrack_load"), ("np_load_loop", "plain_load"))
        }
    ms = {name: 1000 * statistics.median(values) for name, values in runs.items()}
    result = {
        "benchmark": "volume_load",
        "frames_per_volume": args.frames,
        "frame_shape": list(shape),
        "dtype": "float32",
        "volumes": args.regions,
        "repeats": args.repeats,
        "ms_per_volume": {name: round(v, 4) for name, v in ms.items()},
        "load_volume_over_np_load_loop": round(ms["load_volume"] / ms["np_load_loop"], 3),
        "syscalls_per_volume": syscalls,
        "runs_ms": {name: [round(1000 * v, 4) for v in values] for name, values in runs.items()},
    }
    json.dump(result, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
