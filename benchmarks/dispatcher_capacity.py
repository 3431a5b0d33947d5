"""Dispatcher capacity: jobs/s through the real dispatcher loop when jobs cost nothing.

Run alone (`python benchmarks/dispatcher_capacity.py`) it measures the
in-process layout; under `mpiexec -n N` it measures the MPI links with N-2
trivial workers and a statistics rank. Every frame is registered up front, so
what is timed is scheduling, messaging and bookkeeping. Prints JSON on rank 0.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from mpi4py import MPI

from mpitrack.frames import FrameKey
from mpitrack.registry import MemoryRegistry
from mpitrack.roles.dispatcher import Dispatcher
from mpitrack.roles.stats import serve
from mpitrack.roles.worker import work
from mpitrack.runtime import Layout
from mpitrack.schedule import Job, Scheduler
from mpitrack.transport.base import JobReport
from mpitrack.transport.local import LOCAL_WORKER, LocalLink
from mpitrack.transport.mpi import MPIDispatcherLink, MPIStatsLink, MPIWorkerLink


class TrivialRunner:
    def __init__(self, worker: int) -> None:
        self.worker = worker

    def run(self, job: Job, volume: object = None) -> JobReport:
        return JobReport(self.worker, job, ok=True)


def dispatch(comm: MPI.Comm, layout: Layout, regions: int, scans: int) -> float:
    registry = MemoryRegistry()
    registry.add(FrameKey(r, 0, s) for r in range(regions) for s in range(scans))
    if comm.size == 1:
        link = LocalLink(TrivialRunner(LOCAL_WORKER).run, None)
    else:
        link = MPIDispatcherLink(comm, layout.workers, layout.stats_rank)
    dispatcher = Dispatcher(
        scheduler=Scheduler(range(regions), 0, scans - 1),
        registry=registry,
        link=link,
        windows={r: (0,) for r in range(regions)},
        poll_interval=0.5,
        progress_interval=3600,
    )
    started = time.perf_counter()
    summary = dispatcher.run()
    elapsed = time.perf_counter() - started
    assert summary.jobs_done == regions * scans
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--regions", type=int, default=200)
    parser.add_argument("--scans", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    comm = MPI.COMM_WORLD
    layout = Layout(comm.size)
    timings = []
    for _ in range(args.repeats):
        comm.Barrier()
        if comm.rank == 0:
            timings.append(dispatch(comm, layout, args.regions, args.scans))
        elif comm.rank == layout.stats_rank:
            serve(lambda scan: None, MPIStatsLink(comm))  # type: ignore[arg-type]
        else:
            work(TrivialRunner(comm.rank), MPIWorkerLink(comm))  # type: ignore[arg-type]
    if comm.rank == 0:
        jobs = args.regions * args.scans
        result = {
            "benchmark": "dispatcher_capacity",
            "ranks": comm.size,
            "workers": max(1, len(layout.workers)),
            "layout": "in-process" if comm.size == 1 else "mpi",
            "jobs": jobs,
            "repeats": args.repeats,
            "jobs_per_s_median": round(jobs / statistics.median(timings)),
            "seconds": [round(t, 3) for t in timings],
        }
        json.dump(result, sys.stdout, indent=2)
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
