"""Spot strips speed and size: the strips of 1,000 regions for one scan, the index at 10,000.

Targets (issue 18): building the strips of 1,000 regions x 1 scan <= 20 s;
the report's index page <= 2 MB at 10,000 regions.

Setup (not timed): a simulated experiment (``--regions`` regions of the
``mixed`` scenarios, 11 x 35 x 35 voxels, two scans) is written to disk and
tracked in-process by a worker's job runner into PostgreSQL (embedded unless
``--database-url``), so rows, frames and detection are the real ones. Timed:

- ``first_scan``: `SpotReport.update` for scan 0 on an empty report directory:
  per region, its rows read, one volume loaded and detected again, its sheet
  drawn and written, its page and state written; then the region list;
- ``next_scan``: the same after scan 1 is committed: the steady state of a
  live run (rows of the rewritten window, one new sheet per region);
- ``phases_ms``: per volume, over the first 100 regions: load, detect,
  render, PNG encode (median);
- ``index_bytes_10000_regions``: index.html with the gallery of 10,000
  regions (synthetic scores; the gallery shows a fixed number of them, the
  list of all regions is paginated at 500 a page).

    python benchmarks/strips.py [--regions 1000] [--database-url URL] [--json FILE]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from pathlib import Path

from scratch import print_result, scratch_database

from mpitrack import store
from mpitrack.config import load_config
from mpitrack.frames import FramePattern, load_volume
from mpitrack.schedule import Job
from mpitrack.sim.writer import ExperimentSpec, simulate
from mpitrack.stats import html, spot_html
from mpitrack.stats.lookfirst import RegionMetrics, looks
from mpitrack.stats.png import encode_indexed
from mpitrack.stats.report import options_from_config
from mpitrack.stats.spots import SpotReport
from mpitrack.stats.strips import PALETTE, SheetLayout, render_sheet
from mpitrack.storage.postgres import PostgresStatsStore
from mpitrack.track.detect import detect
from mpitrack.wiring import job_runner, prepare_database


def log(message: str) -> None:
    print(f"[strips] {message}", file=sys.stderr, flush=True)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed_update(report: SpotReport, reads, newest: int) -> dict:
    wall, cpu = time.perf_counter(), cpu_seconds()
    _, parts = report.update(reads, 0, newest, final=False)
    wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
    return {
        "seconds": round(wall, 2),
        "cpu_seconds": round(cpu, 2),
        "regions": int(parts["regions"]),
        "ms_per_region": round(1000 * wall / max(parts["regions"], 1), 2),
        "parts_seconds": {k: round(v, 2) for k, v in parts.items() if k != "regions"},
    }


def phases(config, regions: int) -> dict:
    source = options_from_config(config).spots.source
    pattern = FramePattern(source.pattern)
    times: dict[str, list[float]] = {"load": [], "detect": [], "render": [], "encode": []}
    for region in range(min(regions, 100)):
        t0 = time.perf_counter()
        volume = load_volume(
            source.directory, pattern, region, 0, source.windows[region], source.shape
        )
        t1 = time.perf_counter()
        found = detect(volume, source.detection, source.axes)
        t2 = time.perf_counter()
        sheet = render_sheet(volume, found.labels, found.background.level, found.background.noise)
        t3 = time.perf_counter()
        encode_indexed(sheet.pixels, PALETTE)
        t4 = time.perf_counter()
        for name, seconds in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            times[name].append(seconds)
    return {name: round(1000 * statistics.median(v), 2) for name, v in times.items()}


def index_bytes(regions: int) -> dict:
    metrics = {
        r: RegionMetrics(r, 3, 0, 199, r % 17, r % 5, r % 7, r % 3, (r % 11) / 10, "eta")
        for r in range(regions)
    }
    layout = SheetLayout(11, 35, 35, 3)
    thumbs = {r: spot_html.Thumb(f"spots/sheets/{r}/199.png", layout) for r in metrics}
    descriptions = {r: f"scenario=mixed region {r}" for r in metrics}
    gallery = spot_html.gallery(looks(metrics), descriptions, thumbs, regions, "spots/")
    page = html.Page(
        run="bench",
        final=True,
        generated="now",
        stats=[],
        widths=("width_omega", "width_eta", "width_tth"),
        alerts=[],
        thresholds="",
        figures=[],
        spots=gallery,
        extra_css=spot_html.STRIP_CSS,
    )
    per = spot_html.REGIONS_PER_LIST_PAGE
    ordered = [metrics[r] for r in sorted(metrics)]
    listing = spot_html.list_page("bench", 1, regions // per, ordered[:per], descriptions)
    return {
        "index_bytes_10000_regions": len(html.render(page).encode()),
        "list_page_bytes": len(listing.encode()),
        "list_pages": (regions + per - 1) // per,
    }


def run(url: str, args: argparse.Namespace, workdir: Path) -> dict:
    log(f"simulating {args.regions} regions x 2 scans")
    spec = ExperimentSpec(
        out_dir=workdir / "experiment", scenarios=("mixed",), regions=args.regions, scans=2
    )
    summary = simulate(spec, progress_interval=1e9)
    config = load_config(summary.config, env={}, overrides={"database.url": url})
    committed = prepare_database(config, url)
    runner = job_runner(config, url, worker=1)
    report_dir = workdir / "report"
    options = options_from_config(config)
    result: dict = {"regions": args.regions, "volume_shape": [11, 35, 35]}
    with store.connect(url, config.run, retries=0) as conn:
        reads = PostgresStatsStore(conn)
        from dataclasses import replace

        spot_options = replace(options.spots, budget_seconds=1e9)
        report = SpotReport(report_dir, spot_options, config.run, options.axes, {})
        for scan, name in ((0, "first_scan"), (1, "next_scan")):
            log(f"tracking scan {scan}")
            for region in range(args.regions):
                report_ = runner.run(Job(region, scan, committed.get(region)))
                assert report_.ok, report_
                committed[region] = scan
            log(f"drawing the strips of scan {scan}")
            result[name] = timed_update(report, reads, scan)
    runner.close()
    sheets = list((report_dir / "spots" / "sheets").rglob("*.png"))
    result["sheet_bytes_mean"] = round(statistics.mean(p.stat().st_size for p in sheets))
    pages = list((report_dir / "spots").glob("region_*.html"))
    result["region_page_bytes_mean"] = round(statistics.mean(p.stat().st_size for p in pages))
    result["phases_ms"] = phases(config, args.regions)
    result.update(index_bytes(10_000))
    result["targets"] = {"strips_1000_regions_seconds": 20, "index_bytes_10000_regions": 2_000_000}
    result["cpus"] = os.cpu_count()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", help="server URL (default: embedded PostgreSQL)")
    parser.add_argument("--regions", type=int, default=1000)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()
    with scratch_database("mpitrack_bench_strips", args.database_url, keep=args.keep) as (
        url,
        workdir,
    ):
        result = run(url, args, workdir)
    print_result(result, args.database_url, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
