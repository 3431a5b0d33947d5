"""A CHESS-scale run on this machine: `mpiexec -n W+2 mpitrack run` over R regions x S scans
(per-scan subdirectories), with the ranks' memory and CPU sampled while it runs. Prints JSON.

Reports (issue 14):
- jobs/s (first dispatch to last report, from the job log) and the tracker's
  share of the wall time (summed ``compute_seconds`` / (wall x W));
- each worker's RSS against the number of distinct regions it has run, at
  1,000 and at the end (the target: RSS at 10,000 regions within 2x of RSS at
  1,000), and the cached trackers' bound (``runtime.tracker_cache``);
- the dispatcher's and the statistics rank's CPU share (CPU seconds / wall)
  and PostgreSQL's CPU seconds per job (every server process, from /proc);
- database bytes per 1,000,000 measurement rows (table + indexes + TOAST);
- a projection for 1,000,000 jobs on a 16-core node, its assumptions stated
  in the JSON. No 16-core machine was available: the projection is arithmetic
  on the per-job CPU costs measured here, not a measurement.

    python benchmarks/scale.py --data DIR          # an existing `mpitrack simulate` output
    python benchmarks/scale.py --regions 1000 --scans 5   # simulate into a temp dir first
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from mpitrack import services, store

BIN = Path(sys.executable).parent
SCENARIOS = "isolated,drifting,broadening,crossing,appear_vanish,dense"
PATTERN = "scan_{scan}/region_{region}_frame_{frame}_scan_{scan}.npy"
TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def simulate(out: Path, regions: int, scans: int) -> None:
    command = [str(BIN / "mpitrack"), "-q", "simulate", "--out", str(out)]
    command += ["--scenario", SCENARIOS, "--regions", str(regions), "--scans", str(scans)]
    command += ["--seed", "11", "--pattern", PATTERN, "--overwrite"]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)


def cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_bytes(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    except OSError:
        return None


def descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        parent = todo.pop()
        try:
            children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
        except OSError:
            continue
        for child in map(int, children):
            out.append(child)
            todo.append(child)
    return out


def mpi_rank(pid: int) -> int | None:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    for item in environ:
        if item.startswith(b"PMI_RANK="):
            return int(item.split(b"=", 1)[1])
    return None


def postgres_pids(data_dir: Path) -> list[int]:
    """The embedded server's processes: its postmaster (postmaster.pid) and its children."""
    pid_file = data_dir / "postmaster.pid"
    if not pid_file.is_file():
        return []
    postmaster = int(pid_file.read_text().splitlines()[0])
    return [postmaster, *descendants(postmaster)]


@dataclass
class Sampler:
    """Samples the ranks' RSS and CPU, the server's CPU, and how many regions each
    worker has run (from the job log), every ``interval`` seconds, in a thread."""

    launcher: int
    job_log: Path
    postgres_dir: Path | None
    interval: float
    ranks: dict[int, int] = field(default_factory=dict)  # rank -> pid
    samples: list[dict] = field(default_factory=list)
    pg_cpu: dict[int, float] = field(default_factory=dict)  # pid -> last CPU seconds seen
    _regions: dict[int, set[int]] = field(default_factory=dict)
    _offset: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self._loop, daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def _read_log(self) -> None:
        if not self.job_log.is_file():
            return
        with self.job_log.open("rb") as fh:
            fh.seek(self._offset)
            data = fh.read()
        end = data.rfind(b"\n") + 1
        self._offset += end
        for line in data[:end].splitlines():
            event = json.loads(line)
            if event.get("event") == "done":
                self._regions.setdefault(int(event["worker"]), set()).add(int(event["region"]))

    def sample(self) -> None:
        for pid in descendants(self.launcher):
            rank = mpi_rank(pid)
            if rank is not None and rank not in self.ranks:
                self.ranks[rank] = pid
        if self.postgres_dir is not None:
            for pid in postgres_pids(self.postgres_dir):
                seconds = cpu_seconds(pid)
                if seconds is not None:
                    self.pg_cpu[pid] = seconds
        self._read_log()
        self.samples.append(
            {
                "t": time.time(),
                "rss": {r: rss_bytes(p) for r, p in self.ranks.items()},
                "cpu": {r: cpu_seconds(p) for r, p in self.ranks.items()},
                "regions": {w: len(s) for w, s in self._regions.items()},
            }
        )


def rss_at_regions(samples: list[dict], rank: int, regions: int) -> int | None:
    """The rank's largest RSS sampled up to the first sample where it had run ``regions``."""
    best = None
    for sample in samples:
        rss = sample["rss"].get(rank)
        if rss is not None:
            best = rss if best is None else max(best, rss)
        if sample["regions"].get(rank, 0) >= regions:
            return best
    return None


def last_cpu(samples: list[dict], rank: int) -> float:
    values = [s["cpu"].get(rank) for s in samples if s["cpu"].get(rank) is not None]
    return values[-1] - values[0] if len(values) > 1 else 0.0


def run(args: argparse.Namespace, data: Path, base: Path) -> dict:
    config = data / "experiment.yaml"
    with services.resolved_services(base / "servers", None, None) as urls:
        assert urls.database_url and urls.redis_url
        database_url = store.create_database(urls.database_url, "mpitrack_scale")
        experiment = f"scale-{uuid.uuid4().hex[:8]}"
        workdir = base / "run"
        env = dict(
            os.environ,
            MPITRACK_DATABASE_URL=database_url,
            MPITRACK_REDIS_URL=urls.redis_url,
            MPITRACK_RUN=experiment,
            MPITRACK_WORKDIR=str(workdir),
            MPITRACK_RUNTIME__POLL_INTERVAL="0.2",
        )
        if args.last_scan is not None:
            env["MPITRACK_SCANS__LAST"] = str(args.last_scan)
        if args.tracker_cache is not None:
            env["MPITRACK_RUNTIME__TRACKER_CACHE"] = str(args.tracker_cache)
        command = [str(BIN / "mpiexec"), "-n", str(args.workers + 2), str(BIN / "mpitrack")]
        command += ["-q", "run", "--config", str(config), "--idle-timeout", "5"]
        pg_dir = next((p for p in (base / "servers").rglob("postmaster.pid")), None)
        started = time.time()
        process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
        sampler = Sampler(
            process.pid,
            workdir / "logs" / "jobs.jsonl",
            None if pg_dir is None else pg_dir.parent,
            args.sample_interval,
        )
        sampler.sample()
        pg_before = dict(sampler.pg_cpu)
        thread = sampler.start()
        assert process.stderr is not None
        errors = process.stderr.read()
        code = process.wait()
        sampler.stop()
        thread.join()
        sampler.sample()
        finished = time.time()
        if code != 0:
            raise SystemExit(f"mpitrack run failed with exit code {code}: {errors[-2000:]}")
        events = [json.loads(line) for line in sampler.job_log.read_text().splitlines()]
        with store.connect(database_url, experiment, retries=0) as conn:
            row = conn.execute(
                "SELECT count(*), pg_total_relation_size('measurements'), "
                "pg_relation_size('measurements'), pg_database_size(current_database()) "
                "FROM measurements"
            ).fetchone()
            conn.commit()
        assert row is not None
        rows, table_bytes, heap_bytes, database_bytes = (int(v) for v in row)
        pg_cpu = sum(v - pg_before.get(pid, 0.0) for pid, v in sampler.pg_cpu.items())
    return summarise(args, events, sampler, finished - started, rows, pg_cpu) | {
        "database": {
            "measurement_rows": rows,
            "bytes_per_million_rows": {
                "measurements_with_indexes": round(table_bytes / rows * 1e6),
                "measurements_heap": round(heap_bytes / rows * 1e6),
                "whole_database": round(database_bytes / rows * 1e6),
            },
        }
    }


def summarise(
    args: argparse.Namespace,
    events: list[dict],
    sampler: Sampler,
    process_wall: float,
    rows: int,
    pg_cpu: float,
) -> dict:
    reports = [e for e in events if e["event"] == "done"]
    start = min(e["t"] for e in events if e["event"] == "dispatch")
    wall = max(e["t"] for e in reports) - start
    compute = sum(e.get("compute_seconds") or 0.0 for e in reports)
    job_time = sum(e["seconds"] for e in reports)
    jobs = len(reports)
    ranks = sorted(sampler.ranks)
    workers = ranks[1:-1]
    dispatcher_cpu = last_cpu(sampler.samples, 0)
    stats_cpu = last_cpu(sampler.samples, ranks[-1])
    worker_cpu = sum(last_cpu(sampler.samples, r) for r in workers)
    memory = {}
    for rank in workers:
        regions_run = max((s["regions"].get(rank, 0) for s in sampler.samples), default=0)
        at_1000 = rss_at_regions(sampler.samples, rank, min(1000, regions_run))
        at_end = max((s["rss"].get(rank) or 0) for s in sampler.samples)
        memory[str(rank)] = {
            "regions_run": regions_run,
            "rss_mb_at_1000_regions": None if at_1000 is None else round(at_1000 / 2**20, 1),
            "rss_mb_at_end": round(at_end / 2**20, 1),
            "end_over_1000": None if not at_1000 else round(at_end / at_1000, 2),
            "rss_mb_by_regions": [
                [s["regions"].get(rank, 0), round((s["rss"].get(rank) or 0) / 2**20, 1)]
                for s in sampler.samples[:: max(1, len(sampler.samples) // 20)]
            ],
        }
    per_job_cpu = {
        "worker": worker_cpu / jobs,
        "dispatcher": dispatcher_cpu / jobs,
        "statistics": stats_cpu / jobs,
        "postgres": pg_cpu / jobs,
    }
    cores, workers_16 = 16, 14
    # Every job costs its worker's CPU (tracking, loading, committing) and the
    # server's CPU for its commit; dispatcher and statistics are one rank each.
    per_job_total = per_job_cpu["worker"] + per_job_cpu["postgres"]
    projected_wall = 1_000_000 * per_job_total / (cores - 2)
    return {
        "benchmark": "scale",
        "cores": len(os.sched_getaffinity(0)),
        # What was run (with --data, the data's regions and scans, not the defaults).
        "regions": len({e["region"] for e in reports}),
        "scans": len({e["scan"] for e in reports}),
        "workers": len(workers),
        "jobs": jobs,
        "measurement_rows": rows,
        "wall_s": round(wall, 1),
        "process_wall_s": round(process_wall, 1),
        "jobs_per_s": round(jobs / wall, 1),
        "tracker_share_of_wall": round(compute / (wall * len(workers)), 3),
        "wall_over_tracker_compute": round(wall * len(workers) / compute, 3),
        "tracker_ms_per_job": round(1000 * compute / jobs, 2),
        "job_ms_per_job": round(1000 * job_time / jobs, 2),
        "worker_memory": memory,
        "cpu_share_of_wall": {
            "dispatcher": round(dispatcher_cpu / wall, 3),
            "statistics": round(stats_cpu / wall, 3),
            "workers": round(worker_cpu / wall, 3),
            "postgres": round(pg_cpu / wall, 3),
        },
        "cpu_ms_per_job": {k: round(1000 * v, 3) for k, v in per_job_cpu.items()},
        "projection_1m_jobs_16_cores": {
            "wall_s": round(projected_wall),
            "minutes": round(projected_wall / 60, 1),
            "dispatcher_cpu_s": round(1_000_000 * per_job_cpu["dispatcher"]),
            "assumptions": [
                "measured here on a shared 2-core machine; no 16-core node was available",
                f"{workers_16} worker ranks + dispatcher + statistics on 16 cores; PostgreSQL "
                "shares the workers' cores (its CPU per job is added to theirs)",
                "per-job CPU (worker + PostgreSQL) stays what it was here: same frame size "
                "and spots per region, no contention for memory bandwidth, disk or locks",
                "the dispatcher keeps up if its CPU for 1M jobs is below the projected wall",
            ],
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="an existing simulate output (else simulated)")
    parser.add_argument("--regions", type=int, default=10_000)
    parser.add_argument("--scans", type=int, default=5)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--tracker-cache", type=int, help="runtime.tracker_cache for the run")
    parser.add_argument("--last-scan", type=int, help="track the data's scans up to this one only")
    parser.add_argument("--sample-interval", type=float, default=1.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mpitrack-scale-") as tmp:
        base = Path(tmp)
        data = args.data
        if data is None:
            data = base / "data"
            simulate(data, args.regions, args.scans)
        result = run(args, data.resolve(), base)
    json.dump(result, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
