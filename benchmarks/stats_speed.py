"""Statistics speed: one scan's statistics on a table of ~1,000,000 measurement rows, and the
full report (recompute every scan, draw every figure) for 100 scans. Prints JSON.

Targets (issue 7): one scan <= 1 s; the full report for 100 scans <= 30 s (issue 14:
<= 10 s in either row order). all_scans_statistics_seconds compares, in the same
run, every scan's statistics read per scan (the live role) and in ranges (the report).
The table is synthetic (mpitrack/stats/synthetic.py: one INSERT ... SELECT over
generate_series, tracker-shaped ~1.3 kB JSONB features), 1000 regions x 12
tracks x 100 scans by default, about 1.05 M rows. The JSON also carries the
EXPLAIN ANALYZE plans of the per-scan queries and the indexes they use.

    python benchmarks/stats_speed.py                       # embedded PostgreSQL in a temp dir
    python benchmarks/stats_speed.py --database-url URL    # a given server (scratch database)
    python benchmarks/stats_speed.py --keep                # keep the server dir for a re-run
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
from pathlib import Path

import psycopg
from scratch import print_result, scratch_database

from mpitrack import store
from mpitrack.stats import query, report, synthetic
from mpitrack.stats.storage import save_scan_stats

AXES = ("omega", "eta", "tth")

# The experiment (database schema) the benchmark writes.
BENCH_EXPERIMENT = "bench"


def log(message: str) -> None:
    print(f"[stats_speed] {message}", file=sys.stderr, flush=True)


def explain(conn: psycopg.Connection, sql: str, params: dict) -> list[str]:
    rows = conn.execute(f"EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {sql}", params).fetchall()
    conn.commit()
    return [r[0] for r in rows]


def plans(conn: psycopg.Connection, scan: int) -> dict[str, list[str]]:
    params = {"scan": scan, "axis0": "omega", "axis1": "eta", "axis2": "tth"}
    return {
        "scan_rows": explain(conn, query.scan_rows_sql(3), params),
        "deaths": explain(conn, query.DEATHS_SQL, params),
    }


def indexes_used(plan: list[str]) -> list[str]:
    found = set()
    for line in plan:
        found.update(re.findall(r"(?:Index|Index Only) Scan (?:Backward )?using (\w+)", line))
        found.update(re.findall(r"Bitmap Index Scan on (\w+)", line))
    return sorted(found)


def median_seconds(action, repeats: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def run(url: str, args: argparse.Namespace, workdir: Path) -> dict:
    result: dict = {}
    with store.connect(url, BENCH_EXPERIMENT, retries=0) as conn:
        spec = synthetic.SyntheticRun(args.regions, args.tracks, args.scans, layout=args.layout)
        start = time.perf_counter()
        rows = synthetic.fill(conn, spec)
        result["build"] = {
            "rows": rows,
            "layout": args.layout,
            "seconds": round(time.perf_counter() - start, 2),
        }
        log(f"built {rows} rows in {result['build']['seconds']} s")
        size = conn.execute("SELECT pg_total_relation_size('measurements')").fetchone()
        per_scan = conn.execute(
            "SELECT count(*) FROM measurements WHERE scan_number = %s", (args.scans // 2,)
        ).fetchone()
        conn.commit()
        result["build"]["table_mb"] = round(size[0] / 2**20, 1)
        result["build"]["rows_in_measured_scan"] = per_scan[0]

        scans = [args.scans // 2 + i for i in range(args.repeats)]
        it = iter(scans * 2)
        med, times = median_seconds(
            lambda: query.compute_scan(conn, next(it), AXES), 2 * len(scans)
        )
        result["one_scan_seconds"] = {"median": round(med, 4), "runs": [round(t, 4) for t in times]}
        it = iter(scans)

        def compute_and_store() -> None:
            save_scan_stats(conn, query.compute_scan(conn, next(it), AXES))

        med, times = median_seconds(compute_and_store, len(scans))
        result["one_scan_stored_seconds"] = {
            "median": round(med, 4),
            "runs": [round(t, 4) for t in times],
        }
        log(f"one scan: median {med:.3f} s")
        p = plans(conn, args.scans // 2)
        result["explain"] = {
            name: {"indexes": indexes_used(plan), "plan": plan} for name, plan in p.items()
        }

        # Every scan's statistics, read per scan (the live role's way) against read in
        # ranges (the offline report's way), in the same run.
        every = range(args.scans)
        per_scan, _ = median_seconds(
            lambda: [query.compute_scan(conn, s, AXES) for s in every], args.report_repeats
        )
        ranged, _ = median_seconds(
            lambda: report.compute_scans(conn, every, AXES, save=False), args.report_repeats
        )
        result["all_scans_statistics_seconds"] = {
            "per_scan": round(per_scan, 2),
            "ranged": round(ranged, 2),
            "ranged_over_per_scan": round(ranged / per_scan, 3),
        }
        log(f"all scans: per scan {per_scan:.1f} s, in ranges {ranged:.1f} s")

        options = report.ReportOptions(run="bench", axes=AXES, max_region_plots=args.max_regions)
        report_times = []
        parts = []
        for i in range(args.report_repeats):
            start = time.perf_counter()
            _, timings = report.build_report(conn, workdir / f"report{i}", options)
            report_times.append(time.perf_counter() - start)
            log(f"full report {i + 1}/{args.report_repeats}: {report_times[-1]:.1f} s")
            parts.append(timings)
        result["full_report_seconds"] = {
            "median": round(statistics.median(report_times), 2),
            "runs": [round(t, 2) for t in report_times],
            "scans": args.scans,
            "parts_of_last_run": {k: round(v, 3) for k, v in parts[-1].items()},
        }
    result["targets"] = {
        "one_scan_seconds": 1.0,
        "full_report_seconds": 30.0,
        "one_scan_ok": result["one_scan_stored_seconds"]["median"] <= 1.0,
        "full_report_ok": result["full_report_seconds"]["median"] <= 30.0,
    }
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", help="server URL (default: embedded PostgreSQL)")
    parser.add_argument("--regions", type=int, default=1000)
    parser.add_argument("--tracks", type=int, default=12)
    parser.add_argument("--scans", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5, help="scans timed (one run each)")
    parser.add_argument("--report-repeats", type=int, default=3)
    parser.add_argument(
        "--layout",
        choices=("scan", "track"),
        default="scan",
        help="row order on disk: scan (as a run commits them) or track (worst case)",
    )
    parser.add_argument("--max-regions", type=int, default=16)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()

    with scratch_database(
        "mpitrack_bench_stats", args.database_url, experiment=BENCH_EXPERIMENT, keep=args.keep
    ) as (url, workdir):
        result = run(url, args, workdir)
    print_result(result, args.database_url, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
