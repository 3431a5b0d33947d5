"""The report directory: index.html, its figures and scan_stats.csv, written from stored statistics.

Two users: the statistics role, which refreshes the report as scans complete
(from the per-scan statistics it already holds, so a refresh never recomputes
old scans), and `mpitrack report`, which recomputes every scan from the
final rows and writes the final report. Every file is replaced atomically.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from mpitrack.stats import glance, html, query, spot_html
from mpitrack.stats.csvfile import write_csv
from mpitrack.stats.png import write_bytes
from mpitrack.stats.sheets import FrameSource
from mpitrack.stats.spots import SpotOptions, SpotReport
from mpitrack.stats.storage import save_scan_stats
from mpitrack.stats.summary import ScanStats, quantity_names, width_quantity
from mpitrack.storage.base import ReportReads
from mpitrack.storage.postgres import PostgresStatsStore

log = logging.getLogger(__name__)

CSV_NAME = "scan_stats.csv"
INDEX_NAME = "index.html"


@dataclass(frozen=True)
class ReportOptions:
    """What the report needs besides the statistics.

    axes: the feature axis names, omega first (``("omega", *frames.axes)``).
    max_region_plots: trajectory figures drawn at most; the regions with the
        most overlaps and misses in the newest scans come first.
    spots: how the per-region spot pages are drawn (None: no spot pages).
    """

    run: str = "run"
    axes: tuple[str, ...] = query.DEFAULT_AXES
    region_descriptions: Mapping[int, str] = field(default_factory=dict)
    max_region_plots: int = 16
    refresh_seconds: int = 30
    thresholds: glance.Thresholds = field(default_factory=glance.Thresholds)
    spots: SpotOptions | None = None

    @property
    def widths(self) -> tuple[str, ...]:
        return tuple(width_quantity(a) for a in self.axes)

    @property
    def quantities(self) -> tuple[str, ...]:
        return quantity_names(self.axes)


def options_from_config(config) -> ReportOptions:
    """ReportOptions for a `mpitrack.config.Config` (typed loosely to keep config optional)."""
    spots = None
    detector = getattr(config, "detector", None)
    if config.report.spots and detector is not None and not detector.cut_files:
        log.info(
            "report: no spot pages: detector frames are cut in memory (detector.cut_files: "
            "false), so there are no region frames to draw; set it true to keep them"
        )
    elif config.report.spots:
        spots = SpotOptions(
            source=FrameSource.from_config(config),
            n_scan=config.tracking.n_scan,
            budget_seconds=config.report.spot_seconds,
            job_log=Path(config.workdir) / "logs" / "jobs.jsonl",
        )
    return ReportOptions(
        run=config.run,
        axes=("omega", *config.frames.axes),
        region_descriptions={r.id: r.description for r in config.regions},
        spots=spots,
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
        self.spots: SpotReport | None = None
        if options.spots is not None:
            self.spots = SpotReport(
                out_dir, options.spots, options.run, options.axes, options.region_descriptions
            )
        self.plots = _plots_available()
        if not self.plots:
            log.warning(
                "matplotlib is not installed (pip install 'mpitrack[plots]'): "
                "the report will have tables but no figures"
            )

    def write(
        self, reads: ReportReads, stats: Mapping[int, ScanStats], final: bool
    ) -> dict[str, float]:
        """Write the CSV, the figures and index.html; return seconds per part.

        reads: where the figures' rows come from (track spans, trajectories).
        """
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
        spots = ""
        if self.spots is not None and ordered:
            start = time.perf_counter()
            spots, spot_timings = self.spots.update(reads, ordered[0].scan, ordered[-1].scan, final)
            timings["spots"] = time.perf_counter() - start
            timings.update({f"spots_{k}": v for k, v in spot_timings.items()})
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
            spans = reads.track_spans()
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
            region_figures = self._region_figures(reads, ordered[-1].scan)
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
            spots=spots,
            extra_css=spot_html.STRIP_CSS if spots else "",
        )
        timed("html", lambda: _write_text(self.out_dir / INDEX_NAME, html.render(page)))
        return timings

    def _region_figures(self, reads: ReportReads, last_scan: int) -> list[html.Figure]:
        from mpitrack.stats import plots

        opts = self.options
        chosen = reads.busy_regions(last_scan, opts.max_region_plots)
        (self.out_dir / "regions").mkdir(exist_ok=True)
        figures = []
        for region in sorted(chosen):
            name = f"regions/region_{region}.png"
            description = opts.region_descriptions.get(region, "")
            tracks = reads.trajectories(region, opts.axes)
            plots.plot_region(self.out_dir / name, region, tracks, opts.axes, description)
            figures.append(html.Figure(name, f"region {region}"))
        return figures


def _write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


#: Scans that `compute_scans` reads per statement: about 100,000 rows at 1,000
#: regions x 10 tracks, a bounded amount of memory whatever the run's length.
SCANS_PER_READ = 10


def compute_scans(
    conn: psycopg.Connection,
    scans: Iterable[int],
    axes: Sequence[str],
    save: bool = True,
    scans_per_read: int = SCANS_PER_READ,
) -> dict[int, ScanStats]:
    """Compute (and store, in one transaction) the statistics of ``scans``: runs of
    consecutive scans are read ``scans_per_read`` at a time
    (`query.compute_scan_range`, one snapshot each)."""
    out: dict[int, ScanStats] = {}
    pending = sorted(set(scans))
    i = 0
    while i < len(pending):
        j = i
        while (
            j + 1 < len(pending) and pending[j + 1] == pending[j] + 1 and j + 1 - i < scans_per_read
        ):
            j += 1
        out.update(query.compute_scan_range(conn, pending[i], pending[j], axes))
        i = j + 1
    if save:
        with conn.transaction():  # one commit (and one WAL flush) for every scan
            for stats in out.values():
                save_scan_stats(conn, stats)
    return dict(sorted(out.items()))


def build_report(
    conn: psycopg.Connection, out_dir: Path, options: ReportOptions
) -> tuple[dict[int, ScanStats], dict[str, float]]:
    """The offline report: recompute every scan from the stored rows, then write it, final."""
    start = time.perf_counter()
    span = query.scan_range(conn)
    scans = range(span[0], span[1] + 1) if span else range(0)
    stats = compute_scans(conn, scans, options.axes)
    timings = {"statistics": time.perf_counter() - start}
    timings.update(
        ReportWriter(out_dir, options).write(PostgresStatsStore(conn), stats, final=True)
    )
    return stats, timings
