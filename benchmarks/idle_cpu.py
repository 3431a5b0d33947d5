"""CPU used by waiting MPI ranks: mpitrack's backoff polling against a plain blocking receive.

MPICH's blocking receive busy-polls, so a rank waiting in comm.recv burns a
whole core; on a node with more ranks than cores that steals the workers'
time. This runs `mpiexec -n 4 mpitrack run --follow --idle-timeout T` on an
empty frame directory (every rank waits the whole time) and, in the same run,
a 4-rank script whose ranks wait in a blocking comm.recv for the same time.
Prints JSON: CPU seconds and percent of wall time per rank for both.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

BIN = Path(sys.executable).parent

BLOCKING = """
import sys, time
from mpi4py import MPI
comm = MPI.COMM_WORLD
seconds = float(sys.argv[1])
wall0, cpu0 = time.monotonic(), time.process_time()
if comm.rank == 0:
    time.sleep(seconds)
    for dest in range(1, comm.size):
        comm.send(None, dest=dest)
else:
    comm.recv(source=0)
wall, cpu = time.monotonic() - wall0, time.process_time() - cpu0
print(f"rank {comm.rank} used {cpu:.2f} s CPU in {wall:.1f} s", flush=True)
"""

CONFIG = """run: idle-bench
workdir: work
frames: {directory: frames, frames_per_scan: 1440, shape: [35, 35]}
scans: {first: 0, last: 3}
regions: [{id: 0, frames: [0, 10]}, {id: 1, frames: [20, 30]}]
"""

LINE = re.compile(r"rank (\d+) (?:\((\w+)\) )?used ([\d.]+) s CPU in ([\d.]+) s")


def parse(text: str) -> list[dict]:
    ranks = []
    for match in LINE.finditer(text):
        rank, role, cpu, wall = match.groups()
        ranks.append(
            {
                "rank": int(rank),
                "role": role or ("sender" if rank == "0" else "receiver"),
                "cpu_s": float(cpu),
                "wall_s": float(wall),
                "cpu_percent": round(100 * float(cpu) / float(wall), 1),
            }
        )
    return sorted(ranks, key=lambda r: r["rank"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--ranks", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        (base / "frames").mkdir()
        (base / "x.yaml").write_text(CONFIG)
        (base / "blocking.py").write_text(BLOCKING)
        mpiexec = str(BIN / "mpiexec")
        run = subprocess.run(
            [
                mpiexec,
                "-n",
                str(args.ranks),
                str(BIN / "mpitrack"),
                "run",
                "--config",
                str(base / "x.yaml"),
                "--follow",
                "--idle-timeout",
                str(args.seconds),
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        blocking = subprocess.run(
            [
                mpiexec,
                "-n",
                str(args.ranks),
                sys.executable,
                str(base / "blocking.py"),
                str(args.seconds),
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
    result = {
        "benchmark": "idle_cpu",
        "ranks": args.ranks,
        "cores": len(__import__("os").sched_getaffinity(0)),
        "idle_seconds": args.seconds,
        "mpitrack_waiting_ranks": parse(run.stderr),
        "blocking_recv_ranks": parse(blocking.stdout),
    }
    json.dump(result, sys.stdout, indent=2)
    print()
    return 0 if run.returncode == 0 and blocking.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
