"""Export speed and memory: `mpitrack export` of ~1,000,000 measurement rows to CSV,
Parquet and HDF5, each in a fresh child process. Prints JSON.

Targets (issue 17): <= 30 s and peak RSS <= 500 MB per export of 1M rows.
The table is synthetic (mpitrack/stats/synthetic.py: tracker-shaped ~1.3 kB
JSONB features written by one INSERT ... SELECT), 20 regions x 460 tracks x
125 scans by default, about 1.0 M rows. Each export runs as
``python -c 'mpitrack.cli.main(["export", ...])'``; its wall time, peak RSS
and CPU time (that child alone, from os.wait4) are measured from here, and
with the embedded server the PostgreSQL CPU time it caused (the postmaster's
reaped-children time grows by the export backend's CPU when it exits). On a
shared machine the wall time follows the load (given in the JSON); the CPU
times say what the export costs.

    python benchmarks/export.py                       # embedded PostgreSQL in a temp dir
    python benchmarks/export.py --database-url URL    # a given server (scratch database)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psutil
from scratch import print_result, scratch_database

from mpitrack import services, store
from mpitrack.stats import synthetic

BENCH_EXPERIMENT = "bench_export"
FORMATS = ("csv", "parquet", "hdf5")
SECONDS_TARGET = 30.0
RSS_TARGET_MB = 500.0


def log(message: str) -> None:
    print(f"[export] {message}", file=sys.stderr, flush=True)


def server_cpu_seconds(postmaster: psutil.Process | None) -> float | None:
    """CPU time of the PostgreSQL server so far: its processes and the reaped ones."""
    if postmaster is None:
        return None
    total = sum(postmaster.cpu_times()[:4])  # user, system, children user, children system
    for child in postmaster.children():
        with contextlib.suppress(psutil.Error):
            total += sum(child.cpu_times()[:2])
    return total


def export_once(url: str, fmt: str, out: Path, postmaster: psutil.Process | None) -> dict:
    """One export in a child process: wall seconds, its peak RSS and CPU, the server's
    CPU, rows, progress lines."""
    argv = [
        "export",
        "--database-url",
        url,
        "--run",
        BENCH_EXPERIMENT,
        "--format",
        fmt,
        "--out",
        str(out),
    ]
    code = f"import sys; from mpitrack.cli import main; sys.exit(main({argv!r}))"
    server_before = server_cpu_seconds(postmaster)
    start = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    # wait4 gives this child's own rusage (RUSAGE_CHILDREN would be the max over all).
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - start
    stdout, stderr = child.stdout.read().decode(), child.stderr.read().decode()  # type: ignore[union-attr]
    child.stdout.close()  # type: ignore[union-attr]
    child.stderr.close()  # type: ignore[union-attr]
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise RuntimeError(f"export {fmt} failed ({child.returncode}): {stderr[-2000:]}")
    time.sleep(1.0)  # the backend exits and is reaped once the client has gone
    server_after = server_cpu_seconds(postmaster)
    return {
        "seconds": seconds,
        "client_cpu_seconds": usage.ru_utime + usage.ru_stime,
        "server_cpu_seconds": None
        if server_before is None or server_after is None
        else server_after - server_before,
        "peak_rss_mb": usage.ru_maxrss / 1024,  # Linux: kilobytes
        "file_mb": out.stat().st_size / 2**20,
        "progress_lines": sum("rows" in line and "INFO" in line for line in stderr.splitlines()),
        "stdout": stdout.strip(),
    }


def postmaster_of(workdir: Path, given_url: str | None) -> psutil.Process | None:
    """The embedded server's postmaster (first line of postmaster.pid), None for a given one."""
    if given_url is not None:
        return None
    pid_file = services.services_dir(workdir) / "postgres" / "postmaster.pid"
    return psutil.Process(int(pid_file.read_text().split()[0]))


def median_of(runs: list[dict], key: str) -> float | None:
    values = [r[key] for r in runs if r[key] is not None]
    return round(statistics.median(values), 2) if values else None


def run(url: str, args: argparse.Namespace, workdir: Path) -> dict:
    result: dict = {"load_average_at_start": os.getloadavg(), "cpus": os.cpu_count()}
    postmaster = postmaster_of(workdir, args.database_url)
    with store.connect(url, BENCH_EXPERIMENT, retries=0) as conn:
        spec = synthetic.SyntheticRun(args.regions, args.tracks, args.scans)
        start = time.perf_counter()
        rows = synthetic.fill(conn, spec)
        size = conn.execute("SELECT pg_total_relation_size('measurements')").fetchone()
        conn.commit()
    result["build"] = {
        "rows": rows,
        "seconds": round(time.perf_counter() - start, 1),
        "table_mb": round(size[0] / 2**20, 1) if size else None,
    }
    log(f"built {rows} rows in {result['build']['seconds']} s")
    result["exports"] = {}
    for fmt in FORMATS:
        runs = []
        for i in range(args.repeats):
            out = workdir / f"export{i}.{fmt}"
            runs.append(export_once(url, fmt, out, postmaster))
            out.unlink()
            log(
                f"{fmt} {i + 1}/{args.repeats}: {runs[-1]['seconds']:.1f} s, "
                f"{runs[-1]['peak_rss_mb']:.0f} MB"
            )
        seconds = statistics.median(r["seconds"] for r in runs)
        rss = max(r["peak_rss_mb"] for r in runs)
        result["exports"][fmt] = {
            "median_seconds": round(seconds, 2),
            "runs_seconds": [round(r["seconds"], 2) for r in runs],
            "median_client_cpu_seconds": median_of(runs, "client_cpu_seconds"),
            "median_server_cpu_seconds": median_of(runs, "server_cpu_seconds"),
            "max_peak_rss_mb": round(rss, 1),
            "rows_per_second": round(rows / seconds),
            "file_mb": round(runs[-1]["file_mb"], 1),
            "progress_lines": runs[-1]["progress_lines"],
            "reported": runs[-1]["stdout"],
            "seconds_ok": seconds <= SECONDS_TARGET,
            "rss_ok": rss <= RSS_TARGET_MB,
        }
    result["targets"] = {"seconds": SECONDS_TARGET, "peak_rss_mb": RSS_TARGET_MB}
    result["load_average_at_end"] = os.getloadavg()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", help="server URL (default: embedded PostgreSQL)")
    parser.add_argument("--regions", type=int, default=20)
    parser.add_argument("--tracks", type=int, default=460)
    parser.add_argument("--scans", type=int, default=125)
    parser.add_argument("--repeats", type=int, default=3, help="exports timed per format")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()

    with scratch_database(
        "mpitrack_bench_export", args.database_url, experiment=BENCH_EXPERIMENT
    ) as (url, workdir):
        result = run(url, args, workdir)
    print_result(result, args.database_url, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
