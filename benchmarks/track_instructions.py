"""Instructions per tracker step, counted by valgrind; prints JSON.

Wall-clock step times on a shared VM drift by a third within minutes, more
than most changes to the tracker move them. An instruction count does not
drift: this runs track_speed.py's scenes (spots from the ground truth, the
MHT alone) under ``valgrind --tool=cachegrind --cache-sim=no`` for
``--short`` and ``--long`` scans and reports

    (I(long) - I(short)) / (long - short)

in millions: the instructions of one step, without the imports, the
first scans and the making of the spots (both runs make the long run's).
Instructions are not time (a cache miss costs more than an add), but for
the tracker's Python and small numpy calls the two move together. Compare
two versions by running this with PYTHONPATH set to each.

Usage: python benchmarks/track_instructions.py [--scenarios clutter70,overlap20]
       [--short 20] [--long 70]
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

_I_REFS = re.compile(r"I\s+refs:\s+([\d,]+)")


def run_steps(scenario: str, scans: int, made: int) -> None:
    """The child process: make ``made`` scans of a track_speed scene, step through ``scans``."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import numpy as np
    import track_speed

    from mpitrack.track.detect import DetectParams
    from mpitrack.track.mht import MHTParams
    from mpitrack.track.tracker import RegionTracker

    rng = np.random.default_rng(0)
    scenes = [track_speed.truth_spots(scenario, scan, rng) for scan in range(made)]
    tracker = RegionTracker(DetectParams(), MHTParams())
    for scan in range(scans):
        tracker.step_spots(scan, scenes[scan], voxels=math.prod(track_speed.SHAPE))


def count(valgrind: str, scenario: str, scans: int, made: int) -> subprocess.Popen[str]:
    """Start one counted run; its stderr carries valgrind's summary."""
    cmd = [
        valgrind,
        "--tool=cachegrind",
        "--cache-sim=no",
        "--cachegrind-out-file=/dev/null",
        sys.executable,
        __file__,
        "--child",
        scenario,
        str(scans),
        str(made),
    ]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def instructions(proc: subprocess.Popen[str], what: str) -> int:
    _, err = proc.communicate()
    found = _I_REFS.search(err)
    if proc.returncode != 0 or found is None:
        raise RuntimeError(f"valgrind run {what} failed (exit {proc.returncode}): {err[-2000:]}")
    return int(found.group(1).replace(",", ""))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenarios", default="clutter70,overlap20,isolated5")
    ap.add_argument("--short", type=int, default=20, help="scans of the baseline run")
    ap.add_argument("--long", type=int, default=70, help="scans of the measured run")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)  # scenario, scans, made
    args = ap.parse_args()
    if args.child:
        run_steps(args.child[0], int(args.child[1]), int(args.child[2]))
        return 0
    if not 0 < args.short < args.long:
        ap.error("need 0 < --short < --long")
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        print("track_instructions: valgrind is not installed (apt-get install valgrind)")
        return 2
    out: dict[str, Any] = {"short_scans": args.short, "long_scans": args.long}
    for scenario in args.scenarios.split(","):
        # the two runs at once: one per core
        short = count(valgrind, scenario, args.short, args.long)
        long = count(valgrind, scenario, args.long, args.long)
        n_short = instructions(short, f"{scenario}/{args.short}")
        n_long = instructions(long, f"{scenario}/{args.long}")
        out[scenario] = {
            "minstr_per_step": round((n_long - n_short) / (args.long - args.short) / 1e6, 2)
        }
    json.dump(out, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
