"""Jobs/s and job latency: separate-process mode (Redis) against MPI mode, same data, same run.

Both modes run the same experiment with the same number of workers, each
into a fresh database, several times; the figures come from the
dispatcher's job log (``<workdir>/logs/jobs.jsonl``), so they are defined the
same way in both modes:

- jobs_per_s: jobs / (last report - first dispatch);
- latency: report time - dispatch time of each job (queue + load + track +
  commit + the trip back), median and 90th percentile;
- wall_s: the whole command(s), process start-up included.

Start-up is outside the jobs/s and latency figures in both modes: MPI's rank 0
hands out its first job when a started worker asks, and here the dispatcher
is started once every worker has joined the consumer group.

Process mode runs twice: with the dispatcher's default job slots (one per
region, at most 64: jobs wait on the stream, so workers never wait for the
dispatcher but latency includes the queue) and with ``--slots`` equal to the
number of workers (what MPI mode does: a job is handed out only when a worker
is free).

Prints one JSON object (medians over the repeats). Servers: embedded ones
under a temporary directory unless MPITRACK_DATABASE_URL / MPITRACK_REDIS_URL
are set.

    .venv/bin/python benchmarks/process_vs_mpi.py --regions 8 --scans 10 --workers 2 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mpitrack import services, store

BIN = Path(sys.executable).parent
MPITRACK = str(BIN / "mpitrack")
MPIEXEC = str(BIN / "mpiexec")


def job_figures(workdir: Path) -> dict[str, float]:
    events = [
        json.loads(line)
        for line in (workdir / "logs" / "jobs.jsonl").read_text().split("\n")
        if line
    ]
    dispatched: dict[tuple[int, int], float] = {}
    latencies: list[float] = []
    first = last = None
    for event in events:
        key = (event["region"], event["scan"])
        if event["event"] == "dispatch":
            dispatched[key] = event["t"]
            first = event["t"] if first is None else first
        else:
            latencies.append(event["t"] - dispatched.pop(key))
            last = event["t"]
    assert first is not None and last is not None, "no job ran"
    latencies.sort()
    return {
        "jobs": len(latencies),
        "jobs_per_s": len(latencies) / (last - first),
        "latency_median_ms": 1000 * statistics.median(latencies),
        "latency_p90_ms": 1000 * latencies[int(0.9 * (len(latencies) - 1))],
    }


def run_mpi(config: Path, env: dict[str, str], workers: int) -> float:
    started = time.perf_counter()
    subprocess.run(
        [MPIEXEC, "-n", str(workers + 2), MPITRACK, "-q", "run", "--config", str(config)],
        env=env,
        check=True,
        timeout=1800,
    )
    return time.perf_counter() - started


def wait_until_ready(logs: list[Path], timeout: float = 300) -> None:
    """Every worker has logged that it is ready (connected, about to read jobs)."""
    deadline = time.monotonic() + timeout
    while not all(log.exists() and "ready for run" in log.read_text() for log in logs):
        if time.monotonic() > deadline:
            raise RuntimeError(f"workers did not start in {timeout} s")
        time.sleep(0.02)


def run_processes(
    config: Path, env: dict[str, str], workers: int, slots: int | None = None
) -> float:
    started = time.perf_counter()
    roles = ["listen", *["work"] * workers, "stats", "dispatch"]
    extra = {"dispatch": ["--slots", str(slots)]} if slots else {}
    logs = Path(env["MPITRACK_WORKDIR"]) / "process-logs"
    logs.mkdir(parents=True, exist_ok=True)
    procs: list[subprocess.Popen] = []
    try:
        for i, role in enumerate(roles):
            if role == "dispatch":
                # Like MPI mode, where rank 0 sends a job only to a worker that
                # asked: start the dispatcher once every worker waits for jobs.
                wait_until_ready(
                    [logs / f"{j}-work.log" for j, r in enumerate(roles) if r == "work"]
                )
            with (logs / f"{i}-{role}.log").open("w") as out:
                command = [MPITRACK, role, "--config", str(config), *extra.get(role, [])]
                procs.append(subprocess.Popen(command, env=env, stderr=out))
        codes = [proc.wait(timeout=1800) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    if any(codes):
        raise RuntimeError(f"exit codes {dict(zip(roles, codes, strict=True))}")
    return time.perf_counter() - started


def main() -> int:
    # SIGTERM unwinds like Ctrl-C, so the embedded servers and files are cleaned up.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--regions", type=int, default=8)
    parser.add_argument("--scans", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--scenario", default="isolated,drifting,crossing,appear_vanish")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="mpitrack-bench-") as tmp:
        base = Path(tmp)
        subprocess.run(
            [MPITRACK, "-q", "simulate", "--out", str(base / "exp"), "--scenario", args.scenario,
             "--regions", str(args.regions), "--scans", str(args.scans), "--seed", "1"],
            check=True,
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        config = base / "exp" / "experiment.yaml"
        with services.resolved_services(
            base / "services",
            os.environ.get("MPITRACK_DATABASE_URL"),
            os.environ.get("MPITRACK_REDIS_URL"),
        ) as urls:
            assert urls.database_url is not None and urls.redis_url is not None
            modes = {
                "mpi": run_mpi,
                "process": run_processes,
                "process_slots_eq_workers": lambda c, e, w: run_processes(c, e, w, slots=w),
            }
            results: dict[str, list[dict[str, float]]] = {mode: [] for mode in modes}
            for repeat in range(args.repeats):
                for mode, runner in modes.items():
                    url = store.create_database(urls.database_url, "bench")
                    workdir = base / f"{mode}-{repeat}"
                    env = dict(
                        os.environ,
                        MPITRACK_DATABASE_URL=url,
                        MPITRACK_REDIS_URL=urls.redis_url,
                        MPITRACK_RUN=f"bench-{mode.replace('_', '-')}-{repeat}",
                        MPITRACK_WORKDIR=str(workdir),
                        MPITRACK_RUNTIME__POLL_INTERVAL="0.05",
                    )
                    try:
                        wall = runner(config, env, args.workers)
                        figures = job_figures(workdir)
                    finally:
                        store.drop_database(urls.database_url, url)
                    figures["wall_s"] = wall
                    results[mode].append(figures)
                    print(f"{mode} #{repeat + 1}: {json.dumps(figures)}", file=sys.stderr)

    def medians(runs: list[dict[str, float]]) -> dict[str, float]:
        return {key: round(statistics.median(r[key] for r in runs), 3) for key in runs[0]}

    summary = {
        "benchmark": "process_vs_mpi",
        "regions": args.regions,
        "scans": args.scans,
        "workers": args.workers,
        "repeats": args.repeats,
        **{mode: medians(runs) for mode, runs in results.items()},
    }
    summary["process_over_mpi_jobs_per_s"] = round(
        summary["process"]["jobs_per_s"] / summary["mpi"]["jobs_per_s"], 3
    )
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
