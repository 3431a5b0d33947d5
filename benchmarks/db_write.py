"""Measurement rows/s into PostgreSQL: the job-commit path against a naive
one-INSERT-per-row path and the raw COPY ceiling, on the same server in the same run.

Paths: ``per_job_commit`` is what a worker does (`store.JobWriter.commit` of one
job on an autocommit connection: one statement, one transaction, one round
trip); ``per_job_transaction`` the same call inside BEGIN/COMMIT (three round
trips); ``per_job_pipeline`` those three in one round trip (pipeline mode);
``group_commit`` --group jobs per transaction (what a worker committing the
jobs it finished in the last few ms would do); ``batched`` --jobs-per-commit
jobs per transaction; ``naive`` one INSERT per row; ``raw_copy`` the ceiling.
Issue 14's target: per_job_commit >= 0.5 x raw_copy rows/s for ~10-row jobs.

Rows carry about ten JSONB features, shaped as the tracker writes them. Prints
JSON with the median of --repeats runs of each path, and their ratios.

    python benchmarks/db_write.py                      # embedded PostgreSQL in a temp dir
    python benchmarks/db_write.py --database-url URL   # a given server (a scratch database is made)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psycopg

from mpitrack import services, store
from mpitrack.config import DatabaseConfig
from mpitrack.track.checkpoint import FORMAT_VERSION
from mpitrack.track.result import TrackRow

# The experiment (database schema) the benchmark writes.
BENCH_EXPERIMENT = "bench"
# Commits wait for the disk as a worker's do by default (database.synchronous_commit).
SYNCHRONOUS_COMMIT = DatabaseConfig().synchronous_commit


def writer_for(conn: psycopg.Connection) -> store.JobWriter:
    return store.JobWriter(conn, synchronous_commit=SYNCHRONOUS_COMMIT)


def fresh_database(server_url: str) -> str:
    url = store.create_database(server_url, "mpitrack_bench")
    with store.connect(url, BENCH_EXPERIMENT, retries=0) as conn:
        store.apply_schema(conn)
    return url


def features(rng: np.random.Generator) -> dict:
    p = rng.uniform(0, 35, 3)
    s = rng.uniform(0.8, 2.5, 3)
    cov = np.diag(s**2).tolist()
    axes = ("omega", "eta", "tth")
    return {
        "position": dict(zip(axes, p.round(4).tolist(), strict=True)),
        "intensity": float(rng.uniform(1e3, 1e5)),
        "peak": float(rng.uniform(100, 1e4)),
        "n_voxels": int(rng.integers(10, 300)),
        "sigma": dict(zip(axes, s.round(4).tolist(), strict=True)),
        "fwhm": dict(zip(axes, (2.3548 * s).round(4).tolist(), strict=True)),
        "bbox": {a: [int(v) - 3, int(v) + 3] for a, v in zip(axes, p, strict=True)},
        "covariance": cov,
        "principal_variances": sorted((s**2).round(4).tolist(), reverse=True),
        "touches_boundary": dict.fromkeys(axes, False),
    }


def make_jobs(n_regions: int, scan: int, tracks: int, seed: int) -> list[store.JobResult]:
    rng = np.random.default_rng(seed)
    return [
        store.JobResult(
            region_id=region,
            scan=scan,
            first_open_scan=scan,
            rows=[TrackRow(t, scan, True, False, features(rng)) for t in range(1, tracks + 1)],
            checkpoint=bytes(2000),
            format_version=FORMAT_VERSION,
        )
        for region in range(n_regions)
    ]


def batched(url: str, scans: list[list[store.JobResult]], jobs_per_commit: int) -> float:
    """`JobWriter.commit` of ``jobs_per_commit`` jobs at a time over an autocommit
    connection, as a worker's `PostgresJobStore` opens it."""
    with store.connect(url, BENCH_EXPERIMENT, retries=0, autocommit=True) as conn:
        store.ensure_regions(conn, [(j.region_id, "") for j in scans[0]])
        writer = writer_for(conn)
        started = time.perf_counter()
        for jobs in scans:
            for i in range(0, len(jobs), jobs_per_commit):
                writer.commit(jobs[i : i + jobs_per_commit])
        return time.perf_counter() - started


def per_job_transaction(url: str, scans: list[list[store.JobResult]]) -> float:
    """The same call per job inside BEGIN ... COMMIT: three round trips."""
    with store.connect(url, BENCH_EXPERIMENT, retries=0) as conn:
        store.ensure_regions(conn, [(j.region_id, "") for j in scans[0]])
        writer_for(conn)
        started = time.perf_counter()
        for jobs in scans:
            for job in jobs:
                with conn.transaction():
                    conn.execute(store.COMMIT_JOB_SQL, store.commit_params(job))
        return time.perf_counter() - started


def per_job_pipeline(url: str, scans: list[list[store.JobResult]]) -> float:
    """The same call per job, BEGIN, call and COMMIT sent in one round trip by
    psycopg's pipeline mode."""
    with store.connect(url, BENCH_EXPERIMENT, retries=0) as conn:
        store.ensure_regions(conn, [(j.region_id, "") for j in scans[0]])
        writer_for(conn)
        started = time.perf_counter()
        for jobs in scans:
            for job in jobs:
                with conn.pipeline(), conn.transaction():
                    cur = conn.execute(store.COMMIT_JOB_SQL, store.commit_params(job))
                cur.fetchone()
        return time.perf_counter() - started


def naive(url: str, scans: list[list[store.JobResult]]) -> float:
    """One INSERT per row (and per track row), one transaction per job: what a first draft does."""
    with store.connect(url, BENCH_EXPERIMENT, retries=0) as conn:
        store.ensure_regions(conn, [(j.region_id, "") for j in scans[0]])
        writer_for(conn)
        started = time.perf_counter()
        for jobs in scans:
            for job in jobs:
                with conn.transaction():
                    for row in job.rows:
                        conn.execute(
                            "INSERT INTO tracks (region_id, track_id, first_detected_scan, "
                            "last_detected_scan) VALUES (%s, %s, %s, %s) ON CONFLICT "
                            "(region_id, track_id) DO UPDATE SET last_detected_scan = "
                            "excluded.last_detected_scan",
                            (job.region_id, row.track_id, row.scan, row.scan),
                        )
                        conn.execute(
                            "INSERT INTO measurements (region_id, track_id, scan_number, detected, "
                            "overlapping, features) VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT "
                            "DO NOTHING",
                            (
                                job.region_id,
                                row.track_id,
                                row.scan,
                                row.detected,
                                row.overlapping,
                                json.dumps(row.features),
                            ),
                        )
                    conn.execute(
                        "INSERT INTO tracker_checkpoints (region_id, scan_number, format_version, "
                        "state) VALUES (%s, %s, %s, %s) ON CONFLICT (region_id) DO UPDATE SET "
                        "scan_number = excluded.scan_number, state = excluded.state",
                        (job.region_id, job.scan, job.format_version, job.checkpoint),
                    )
        return time.perf_counter() - started


def raw_copy(url: str, scans: list[list[store.JobResult]]) -> float:
    """The ceiling: one COPY of the same rows into an unindexed table, one transaction."""
    with store.connect(url, BENCH_EXPERIMENT, retries=0) as conn:
        conn.execute(
            "CREATE UNLOGGED TABLE IF NOT EXISTS raw_copy (region_id int, track_id int, "
            "scan_number int, detected bool, overlapping bool, features jsonb)"
        )
        conn.execute("TRUNCATE raw_copy")
        conn.commit()
        started = time.perf_counter()
        with conn.transaction(), conn.cursor() as cur, cur.copy("COPY raw_copy FROM STDIN") as copy:
            for jobs in scans:
                for job in jobs:
                    for row in job.rows:
                        copy.write_row(
                            (
                                job.region_id,
                                row.track_id,
                                row.scan,
                                row.detected,
                                row.overlapping,
                                json.dumps(row.features),
                            )
                        )
        return time.perf_counter() - started


def commit_ms_at_size(server: str, preloaded_scans: int, regions: int, tracks: int) -> float:
    """Milliseconds per one-job commit once the table holds preloaded_scans scans of rows."""
    url = fresh_database(server)
    try:
        with store.connect(url, BENCH_EXPERIMENT, retries=0, autocommit=True) as conn:
            store.ensure_regions(conn, [(r, "") for r in range(regions)])
            writer = writer_for(conn)
            for scan in range(preloaded_scans):
                writer.commit(make_jobs(regions, scan, tracks, seed=scan))
            conn.execute("ANALYZE")
            conn.commit()
            jobs = make_jobs(regions, preloaded_scans, tracks, seed=preloaded_scans)
            started = time.perf_counter()
            for job in jobs:
                writer.commit([job])
            return 1000 * (time.perf_counter() - started) / len(jobs)
    finally:
        store.drop_database(server, url)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", help="server to use (default: embedded PostgreSQL)")
    parser.add_argument("--regions", type=int, default=100)
    parser.add_argument("--tracks", type=int, default=10, help="rows per job")
    parser.add_argument("--scans", type=int, default=20)
    parser.add_argument("--jobs-per-commit", type=int, default=100)
    parser.add_argument("--group", type=int, default=4, help="jobs per group commit")
    parser.add_argument("--naive-scans", type=int, default=3, help="the naive path is slow")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    scans = [make_jobs(args.regions, s, args.tracks, seed=s) for s in range(args.scans)]
    rows = args.regions * args.tracks * args.scans
    naive_rows = args.regions * args.tracks * args.naive_scans
    with (
        tempfile.TemporaryDirectory() as tmp,
        services.resolved_services(Path(tmp), args.database_url, None, need_redis=False) as urls,
    ):
        server = urls.database_url
        assert server is not None
        timings: dict[str, list[float]] = {
            "batched": [],
            "per_job_commit": [],
            "per_job_transaction": [],
            "per_job_pipeline": [],
            "group_commit": [],
            "naive": [],
            "raw_copy": [],
        }
        for _ in range(args.repeats):
            for name in timings:
                url = fresh_database(server)
                try:
                    if name == "batched":
                        seconds = batched(url, scans, args.jobs_per_commit)
                    elif name == "per_job_commit":
                        seconds = batched(url, scans, 1)
                    elif name == "per_job_transaction":
                        seconds = per_job_transaction(url, scans)
                    elif name == "per_job_pipeline":
                        seconds = per_job_pipeline(url, scans)
                    elif name == "group_commit":
                        seconds = batched(url, scans, args.group)
                    elif name == "naive":
                        seconds = naive(url, scans[: args.naive_scans])
                    else:
                        seconds = raw_copy(url, scans)
                finally:
                    store.drop_database(server, url)
                timings[name].append(seconds)
        growth = {
            str(scans * args.regions * args.tracks): round(
                statistics.median(
                    commit_ms_at_size(server, scans, args.regions, args.tracks)
                    for _ in range(args.repeats)
                ),
                2,
            )
            for scans in (10, 100)
        }
    rate = {
        name: (naive_rows if name == "naive" else rows) / statistics.median(values)
        for name, values in timings.items()
    }
    result = {
        "benchmark": "db_write",
        "rows": rows,
        "features_per_row": len(features(np.random.default_rng(0))),
        "rows_per_job": args.tracks,
        "jobs_per_commit": args.jobs_per_commit,
        "group": args.group,
        "synchronous_commit": SYNCHRONOUS_COMMIT,
        "repeats": args.repeats,
        "rows_per_s": {name: round(value) for name, value in rate.items()},
        "batched_over_naive": round(rate["batched"] / rate["naive"], 1),
        "per_job_commit_over_naive": round(rate["per_job_commit"] / rate["naive"], 1),
        "batched_over_raw_copy": round(rate["batched"] / rate["raw_copy"], 3),
        "per_job_commit_over_raw_copy": round(rate["per_job_commit"] / rate["raw_copy"], 3),
        "group_commit_over_raw_copy": round(rate["group_commit"] / rate["raw_copy"], 3),
        "per_job_transaction_over_raw_copy": round(
            rate["per_job_transaction"] / rate["raw_copy"], 3
        ),
        "per_job_pipeline_over_raw_copy": round(rate["per_job_pipeline"] / rate["raw_copy"], 3),
        "per_job_commit_ms_by_table_rows": growth,
        "seconds": {name: [round(v, 3) for v in values] for name, values in timings.items()},
    }
    json.dump(result, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
