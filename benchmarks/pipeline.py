"""The whole pipeline under mpiexec: jobs/s, pipeline overhead and latency at 1, 2, 3 workers.

Same simulated data, same servers, same run of this script for every layout:

- throughput: frames all present, `mpiexec -n W+2 mpitrack run` (W workers, a
  dispatcher, a statistics rank); jobs/s from the job log (first dispatch to
  last report), and the pipeline overhead at each W: (wall - summed tracker
  compute / W) / wall, with the summed whole-job time (load + track + commit)
  beside it;
- latency: the simulator writes frames at --fps while the run is live;
  latency of a job = its report time - the modification time of the last
  frame file of its (region, scan) window. p50/p95/p99.

The machine's cores are reported: with 2 cores, 3 workers + dispatcher +
statistics oversubscribe it, and the figures say so. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import numpy as np

from mpitrack import services, store
from mpitrack.config import load_config
from mpitrack.frames import FramePattern
from mpitrack.regions import omega_window

BIN = Path(sys.executable).parent
SCENARIOS = "isolated,drifting,broadening,crossing,appear_vanish,dense"


def simulate(out: Path, regions: int, scans: int, fps: float | None = None) -> subprocess.Popen:
    command = [
        str(BIN / "mpitrack"),
        "-q",
        "simulate",
        "--out",
        str(out),
        "--scenario",
        SCENARIOS,
        "--regions",
        str(regions),
        "--scans",
        str(scans),
        "--seed",
        "11",
        "--overwrite",
    ]
    if fps is not None:
        command += ["--fps", str(fps)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL)


def start_run(
    config: Path, workers: int, database_url: str, redis_url: str, workdir: Path
) -> subprocess.Popen:
    """Start a run; return once its dispatcher is polling (so latency excludes start-up)."""
    env = dict(
        os.environ,
        MPITRACK_DATABASE_URL=database_url,
        MPITRACK_REDIS_URL=redis_url,
        MPITRACK_RUN=f"bench-{uuid.uuid4().hex[:8]}",
        MPITRACK_WORKDIR=str(workdir),
        MPITRACK_RUNTIME__POLL_INTERVAL="0.05",
    )
    command = [str(BIN / "mpiexec"), "-n", str(workers + 2), str(BIN / "mpitrack"), "run"]
    command += ["--config", str(config)]
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    for line in process.stderr:
        if "jobs to run" in line:
            return process
    raise SystemExit(f"mpitrack run exited with {process.wait()} before it started")


def finish(process: subprocess.Popen) -> None:
    assert process.stderr is not None
    process.stderr.read()
    if process.wait(timeout=1800) != 0:
        raise SystemExit(f"mpitrack run failed with exit code {process.returncode}")


def job_log(workdir: Path) -> list[dict]:
    return [json.loads(line) for line in (workdir / "logs" / "jobs.jsonl").read_text().splitlines()]


def throughput(events: list[dict], workers: int) -> dict:
    reports = [e for e in events if e["event"] == "done"]
    start = min(e["t"] for e in events if e["event"] == "dispatch")
    wall = max(e["t"] for e in reports) - start
    compute = sum(e["compute_seconds"] for e in reports)
    job_time = sum(e["seconds"] for e in reports)
    return {
        "jobs": len(reports),
        "wall_s": wall,
        "jobs_per_s": len(reports) / wall,
        "overhead_vs_compute": (wall - compute / workers) / wall,
        "overhead_vs_job_time": (wall - job_time / workers) / wall,
        "tracker_ms_per_job": 1000 * compute / len(reports),
        "job_ms_per_job": 1000 * job_time / len(reports),
    }


def latencies(events: list[dict], config_path: Path) -> list[float]:
    config = load_config(config_path, env={})
    pattern = FramePattern(config.frames.pattern)
    windows = {r.id: omega_window(*r.frames, config.frames.frames_per_scan) for r in config.regions}
    result = []
    for event in events:
        if event["event"] != "done":
            continue
        region, scan = event["region"], event["scan"]
        last_frame = max(
            (config.frames.directory / pattern.format(region, f, scan)).stat().st_mtime
            for f in windows[region]
        )
        result.append(event["t"] - last_frame)
    return result


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--regions", type=int, default=24)
    parser.add_argument("--scans", type=int, default=10)
    parser.add_argument("--workers", default="1,2,3")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--fps", type=float, default=400.0, help="frame files/s in the live runs")
    args = parser.parse_args()
    worker_counts = [int(w) for w in args.workers.split(",")]

    result: dict = {
        "benchmark": "pipeline",
        "cores": len(os.sched_getaffinity(0)),
        "regions": args.regions,
        "scans": args.scans,
        "scenarios": SCENARIOS,
        "repeats": args.repeats,
        "throughput": {},
        "latency": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        with services.resolved_services(base / "servers", None, None) as urls:
            assert urls.database_url and urls.redis_url
            if simulate(base / "batch", args.regions, args.scans).wait() != 0:
                raise SystemExit("simulation failed")
            config = base / "batch" / "experiment.yaml"
            for workers in worker_counts:
                runs = []
                for repeat in range(args.repeats):
                    workdir = base / f"batch-{workers}-{repeat}"
                    database_url = store.create_database(urls.database_url, "mpitrack_pipeline")
                    finish(start_run(config, workers, database_url, urls.redis_url, workdir))
                    runs.append(throughput(job_log(workdir), workers))
                result["throughput"][str(workers)] = {
                    key: round(statistics.median(r[key] for r in runs), 4) for key in runs[0]
                }
            for workers in worker_counts:
                # The live run reads the batch run's config (same seed: same regions)
                # pointed at an empty directory that the simulator then fills at --fps.
                out = base / f"live-{workers}"
                (out / "frames").mkdir(parents=True)
                live_config = out / "experiment.yaml"
                live_config.write_text((base / "batch" / "experiment.yaml").read_text())
                workdir = base / f"live-run-{workers}"
                database_url = store.create_database(urls.database_url, "mpitrack_pipeline")
                tracker = start_run(live_config, workers, database_url, urls.redis_url, workdir)
                if simulate(out, args.regions, args.scans, fps=args.fps).wait() != 0:
                    raise SystemExit("simulation failed")
                finish(tracker)
                values = latencies(job_log(workdir), live_config)
                result["latency"][str(workers)] = {
                    "jobs": len(values),
                    "fps": args.fps,
                    "p50_ms": round(1000 * percentile(values, 50), 1),
                    "p95_ms": round(1000 * percentile(values, 95), 1),
                    "p99_ms": round(1000 * percentile(values, 99), 1),
                }
    one = result["throughput"].get("1")
    if one:
        result["speedup_vs_1_worker"] = {
            w: round(v["jobs_per_s"] / one["jobs_per_s"], 2)
            for w, v in result["throughput"].items()
        }
    json.dump(result, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
