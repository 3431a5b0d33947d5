"""The report directory: index.html, its figures and scan_stats.csv, written from stored statistics.

Two users: the statistics role, which refreshes the report as scans complete
(from the per-scan statistics it already holds, so a refresh never recomputes
old scans), and `mpitrack report`, which recomputes every scan from the
final rows and writes the final report. Every file is replaced atomically.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from mpitrack.stats import glance, html, query
from mpitrack.stats.csvfile import write_csv
from mpitrack.stats.storage import save_scan_stats
from mpitrack.stats.summary import ScanStats, quantity_names, width_quantity

log = logging.getLogger(__name__)

CSV_NAME = "scan_stats.csv"
INDEX_NAME = "index.html"


@dataclass(frozen=True)
class ReportOptions:
    """What the report needs besides the statistics.

    axes: the feature axis names, omega first (``("omega", *frames.axes)``).
    max_region_plots: trajectory figures drawn at most; the regions with the
        most overlaps and misses in the newest scans come first.
    """

    run: str = "run"
    axes: tuple[str, ...] = query.DEFAULT_AXES
    region_descriptions: Mapping[int, str] = field(default_factory=dict)
    max_region_plots: int = 16
    refresh_seconds: int = 30
    thresholds: glance.Thresholds = field(default_factory=glance.Thresholds)

    @property
    def widths(self) -> tuple[str, ...]:
        return tuple(width_quantity(a) for a in self.axes)

    @property
    def quantities(self) -> tuple[str, ...]:
        return quantity_names(self.axes)


def options_from_config(config) -> ReportOptions:
    """ReportOptions for a `mpitrack.config.Config` (typed loosely to keep config optional)."""
    return ReportOptions(
        run=config.run,
        axes=("omega", *config.frames.axes),
        region_descriptions={r.id: r.description for r in config.regions},
    )


def _plots_available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


class ReportWriter:
    """Writes one report directory; ``write`` may be called again and again (live refresh)."""

    def __init__(self, out_dir: Path, options: ReportOptions) -> None:
        self.out_dir = Path(out_dir)
        self.options = options
        self.version = 0
        self.plots = _plots_available()
        if not self.plots:
            log.warning(
                "matplotlib is not installed (pip install 'mpitrack[plots]'): "
                "the report will have tables but no figures"
            )

    def write(
        self, conn: psycopg.Connection, stats: Mapping[int, ScanStats], final: bool
    ) -> dict[str, float]:
        """Write the CSV, the figures and index.html; return seconds per part."""
        timings: dict[str, float] = {}
        ordered = [stats[k] for k in sorted(stats)]
        opts = self.options
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.version += 1

        def timed(name: str, action: Callable[[], object]) -> None:
            start = time.perf_counter()
            action()
            timings[name] = time.perf_counter() - start

        timed("csv", lambda: write_csv(self.out_dir / CSV_NAME, ordered, opts.quantities))
        figures: list[html.Figure] = []
        region_figures: list[html.Figure] = []
        notes: list[str] = []
        if self.plots and ordered:
            from mpitrack.stats import plots

            out = self.out_dir
            timed("widths", lambda: plots.plot_widths(out / "widths.png", ordered, opts.widths))
            timed(
                "heatmap",
                lambda: plots.plot_width_heatmap(out / "width_heatmap.png", ordered, opts.widths),
            )
            timed("intensity", lambda: plots.plot_intensity(out / "intensity.png", ordered))
            timed("counts", lambda: plots.plot_counts(out / "counts.png", ordered))
            spans = query.track_spans(conn)
            timed("lifetimes", lambda: plots.plot_lifetimes(out / "lifetimes.png", spans))
            figures = [
                html.Figure(
                    "widths.png",
                    "Spot widths",
                    "FWHM per axis of the clean spots (detected, not overlapping): median line, "
                    "inner band the interquartile range, outer band the 5th-95th percentiles.",
                ),
                html.Figure(
                    "width_heatmap.png",
                    "Width distribution",
                    "Share of each scan's clean spots per FWHM bin; the bins are the same "
                    "for every scan, so a band moving up is broadening.",
                ),
                html.Figure(
                    "counts.png",
                    "Counts",
                    "Live tracks and detected spots; births, deaths, overlapping detections and "
                    "missed detections per scan.",
                ),
                html.Figure(
                    "intensity.png",
                    "Intensity and shape",
                    "Integrated intensity and the largest principal-axis variance of the clean "
                    "spots (median and bands as above).",
                ),
                html.Figure(
                    "lifetimes.png",
                    "Track lifetimes",
                    f"{spans.lifetimes.size} tracks; lifetime = scans from first to last "
                    "detection. Alive tracks (still in the newest scan) are lower bounds.",
                ),
            ]
            start = time.perf_counter()
            region_figures = self._region_figures(conn, ordered[-1].scan)
            timings["regions"] = time.perf_counter() - start
        elif not self.plots:
            notes.append("Figures need matplotlib: pip install 'mpitrack[plots]'.")
        page = html.Page(
            run=opts.run,
            final=final,
            generated=dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z"),
            stats=ordered,
            widths=opts.widths,
            alerts=glance.alerts(ordered, opts.widths, opts.thresholds),
            thresholds=glance.describe(opts.thresholds),
            figures=figures,
            region_figures=region_figures,
            refresh_seconds=opts.refresh_seconds,
            version=self.version,
            csv_file=CSV_NAME,
            notes=notes,
        )
        timed("html", lambda: _write_text(self.out_dir / INDEX_NAME, html.render(page)))
        return timings

    def _region_figures(self, conn: psycopg.Connection, last_scan: int) -> list[html.Figure]:
        from mpitrack.stats import plots

        opts = self.options
        chosen = query.busy_regions(conn, last_scan, opts.max_region_plots)
        (self.out_dir / "regions").mkdir(exist_ok=True)
        figures = []
        for region in sorted(chosen):
            name = f"regions/region_{region}.png"
            description = opts.region_descriptions.get(region, "")
            tracks = query.trajectories(conn, region, opts.axes)
            plots.plot_region(self.out_dir / name, region, tracks, opts.axes, description)
            figures.append(html.Figure(name, f"region {region}"))
        return figures


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def compute_scans(
    conn: psycopg.Connection, scans: Iterable[int], axes: Sequence[str], save: bool = True
) -> dict[int, ScanStats]:
    """Compute (and store) the statistics of ``scans``; one snapshot per scan."""
    out: dict[int, ScanStats] = {}
    for scan in scans:
        stats = query.compute_scan(conn, scan, axes)
        if save:
            save_scan_stats(conn, stats)
        out[scan] = stats
    return out


def build_report(
    conn: psycopg.Connection, out_dir: Path, options: ReportOptions
) -> tuple[dict[int, ScanStats], dict[str, float]]:
    """The offline report: recompute every scan from the stored rows, then write it, final."""
    start = time.perf_counter()
    span = query.scan_range(conn)
    scans = range(span[0], span[1] + 1) if span else range(0)
    stats = compute_scans(conn, scans, options.axes)
    timings = {"statistics": time.perf_counter() - start}
    timings.update(ReportWriter(out_dir, options).write(conn, stats, final=True))
    return stats, timings
