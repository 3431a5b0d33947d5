"""The report's figures, drawn with matplotlib's object API on the Agg canvas.

matplotlib is optional (the ``plots`` extra), so it is imported here only,
when a figure is drawn. No pyplot: Figure objects are independent, hold no
global state and are freed when dropped, which matters in a statistics
process that redraws the same figures for days. Every figure is written to
a temporary name and renamed, so a browser refreshing the report never
loads half a PNG.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mpitrack.stats.summary import INTENSITY, MAX_VARIANCE, ScanStats, TrackSpans, Trajectory

# Figure resolution (dots per inch) of every PNG in the report.
DPI = 100
# Opacity of the 5th-95th and of the interquartile percentile bands.
_BAND_OUTER = 0.15
_BAND_INNER = 0.35


def _figure(width: float, height: float, rows: int = 1, cols: int = 1, **kw: Any):
    """A figure with fixed margins in inches (constrained layout would double the drawing time)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI)
    fig.subplots_adjust(
        left=0.95 / width,
        right=1 - 0.2 / width,
        bottom=0.5 / height,
        top=1 - 0.4 / height,
        hspace=0.12 if kw.get("sharex") else 0.35,
    )
    axes = fig.subplots(rows, cols, squeeze=False, **kw)
    return fig, axes


def _save(fig: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as handle:
        fig.savefig(handle, format="png", dpi=DPI)
    os.replace(tmp, path)


def _series(stats: Sequence[ScanStats], quantity: str, field: str) -> np.ndarray:
    values = [getattr(s.distribution(quantity), field) for s in stats]
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


def _marker(stats: Sequence[ScanStats]) -> str:
    return "o" if len(stats) <= 40 else ""


def _banded(ax: Any, stats: Sequence[ScanStats], quantity: str, colour: str) -> None:
    scans = np.array([s.scan for s in stats])
    p05, p25, p50, p75, p95 = (
        _series(stats, quantity, f) for f in ("p05", "p25", "p50", "p75", "p95")
    )
    ax.fill_between(scans, p05, p95, color=colour, alpha=_BAND_OUTER, lw=0, label="5-95 %")
    ax.fill_between(scans, p25, p75, color=colour, alpha=_BAND_INNER, lw=0, label="IQR")
    ax.plot(scans, p50, color=colour, marker=_marker(stats), ms=3, label="median")
    ax.grid(alpha=0.3)


def plot_widths(path: Path, stats: Sequence[ScanStats], widths: Sequence[str]) -> None:
    """FWHM per axis against scan: median with IQR and 5-95 % bands."""
    fig, axes = _figure(10, 2.4 * len(widths), len(widths), 1, sharex=True)
    colours = ("tab:blue", "tab:orange", "tab:green", "tab:purple")
    for i, q in enumerate(widths):
        ax = axes[i, 0]
        _banded(ax, stats, q, colours[i % len(colours)])
        ax.set_ylabel(f"FWHM {q.removeprefix('width_')}\n(voxels)")
        ax.legend(loc="upper left", fontsize="small", ncols=3)
    axes[-1, 0].set_xlabel("scan")
    fig.suptitle("Spot widths (clean spots: detected, not overlapping)")
    _save(fig, path)


def plot_intensity(path: Path, stats: Sequence[ScanStats]) -> None:
    """Integrated intensity and largest principal-axis variance against scan."""
    fig, axes = _figure(10, 4.8, 2, 1, sharex=True)
    for ax, q, colour, label in (
        (axes[0, 0], INTENSITY, "tab:red", "integrated\nintensity"),
        (axes[1, 0], MAX_VARIANCE, "tab:brown", "largest principal\nvariance (voxel²)"),
    ):
        _banded(ax, stats, q, colour)
        ax.set_ylabel(label)
        low, high = _series(stats, q, "p05"), _series(stats, q, "p95")
        if np.isfinite(low).any() and np.nanmin(low) > 0 and np.nanmax(high) > 10 * np.nanmin(low):
            ax.set_yscale("log")  # only when the spread covers more than a decade
        ax.legend(loc="upper left", fontsize="small", ncols=3)
    axes[-1, 0].set_xlabel("scan")
    fig.suptitle("Intensity and shape")
    _save(fig, path)


def plot_counts(path: Path, stats: Sequence[ScanStats]) -> None:
    """Spots and live tracks (top); births, deaths, overlaps, misses (bottom)."""
    scans = np.array([s.scan for s in stats])
    m = _marker(stats)
    fig, axes = _figure(10, 4.8, 2, 1, sharex=True)
    top, bottom = axes[0, 0], axes[1, 0]
    top.plot(scans, [s.live_tracks for s in stats], marker=m, ms=3, label="live tracks")
    top.plot(scans, [s.detected for s in stats], marker=m, ms=3, label="spots detected")
    top.set_ylabel("count")
    top.set_ylim(bottom=0)
    for field, colour in (
        ("births", "tab:green"),
        ("deaths", "tab:red"),
        ("overlapping", "tab:purple"),
        ("missed", "tab:gray"),
    ):
        bottom.plot(
            scans, [getattr(s, field) for s in stats], marker=m, ms=3, color=colour, label=field
        )
    bottom.set_ylabel("count")
    bottom.set_ylim(bottom=0)
    bottom.set_xlabel("scan")
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", fontsize="small", ncols=4)
    fig.suptitle("Counts per scan")
    _save(fig, path)


def plot_width_heatmap(path: Path, stats: Sequence[ScanStats], widths: Sequence[str]) -> None:
    """Per axis: the fraction of a scan's clean spots in each FWHM bin (same edges every scan)."""
    fig, axes = _figure(10, 2.4 * len(widths), len(widths), 1, sharex=True)
    scans = np.array([s.scan for s in stats])
    x_edges = np.append(scans - 0.5, scans[-1] + 0.5) if scans.size else np.array([0, 1])
    for i, q in enumerate(widths):
        ax = axes[i, 0]
        hists = [s.histograms.get(q) for s in stats]
        reference = next((h for h in hists if h is not None), None)
        if reference is None:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
            continue
        grid = np.full((len(reference.counts), len(stats)), np.nan)
        for j, h in enumerate(hists):
            if h is None or (h.lo, h.hi, len(h.counts)) != (
                reference.lo,
                reference.hi,
                len(reference.counts),
            ):
                continue  # another binning: left blank rather than misdrawn
            total = sum(h.counts)
            if total:
                grid[:, j] = np.asarray(h.counts) / total
        filled = np.nonzero(np.nansum(grid, axis=1) > 0)[0]
        mesh = ax.pcolormesh(x_edges, reference.edges, grid, cmap="viridis", shading="flat")
        if filled.size:
            edges = reference.edges
            top = min(edges[filled[-1] + 1] + 2 * (edges[1] - edges[0]), edges[-1])
            ax.set_ylim(edges[max(filled[0] - 2, 0)], top)
        ax.set_ylabel(f"FWHM {q.removeprefix('width_')}\n(voxels)")
        fig.colorbar(mesh, ax=ax, label="fraction of spots", pad=0.01)
    axes[-1, 0].set_xlabel("scan")
    fig.suptitle("Width distribution per scan")
    _save(fig, path)


def plot_lifetimes(path: Path, spans: TrackSpans) -> None:
    """Histogram of track lifetimes (scans from first to last detection), ended vs still alive."""
    fig, axes = _figure(10, 3.2)
    ax = axes[0, 0]
    lifetimes = spans.lifetimes
    if lifetimes.size:
        top = int(lifetimes.max())
        bins = np.arange(0.5, top + 1.5, max(1, int(np.ceil(top / 60))))
        if bins.size < 2:
            bins = np.array([0.5, top + 0.5])
        ax.hist(
            [lifetimes[~spans.alive], lifetimes[spans.alive]],
            bins=bins,
            stacked=True,
            color=["tab:red", "tab:blue"],
            edgecolor="white",
            linewidth=0.5,
            label=[f"ended ({int((~spans.alive).sum())})", f"alive ({int(spans.alive.sum())})"],
        )
        ax.legend(loc="upper left", fontsize="small")
    else:
        ax.text(0.5, 0.5, "no tracks yet", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("lifetime (scans from first to last detection)")
    ax.set_ylabel("tracks")
    ax.grid(alpha=0.3)
    fig.suptitle("Track lifetimes")
    _save(fig, path)


def plot_region(
    path: Path,
    region: int,
    tracks: Sequence[Trajectory],
    axes_names: Sequence[str],
    title: str = "",
) -> None:
    """A region's track positions against scan, one panel per axis.

    Filled dots are detections, hollow dots predictions (missed), and a red
    ring marks an overlapping detection (a spot shared with another track).
    """
    from matplotlib.collections import LineCollection

    fig, axes = _figure(5, 1.6 * len(axes_names) + 0.6, len(axes_names), 1, sharex=True)
    # A few collections per panel instead of several lines per track: drawing
    # cost stays flat as regions gain tracks.
    palette = np.array([f"C{i % 10}" for i in range(max(len(tracks), 1))], dtype=object)
    scans = np.concatenate([t.scans for t in tracks]) if tracks else np.zeros(0)
    colour = (
        np.concatenate([np.repeat(palette[i], t.scans.size) for i, t in enumerate(tracks)])
        if tracks
        else np.zeros(0, dtype=object)
    )
    detected = np.concatenate([t.detected for t in tracks]) if tracks else np.zeros(0, bool)
    overlap = np.concatenate([t.overlapping for t in tracks]) if tracks else np.zeros(0, bool)
    for k, name in enumerate(axes_names):
        ax = axes[k, 0]
        y = np.concatenate([t.positions[:, k] for t in tracks]) if tracks else np.zeros(0)
        segments = [np.column_stack([t.scans, t.positions[:, k]]) for t in tracks]
        ax.add_collection(LineCollection(segments, colors=list(palette[: len(tracks)]), lw=1))
        ax.scatter(scans[detected], y[detected], s=9, c=list(colour[detected]), zorder=3)
        miss = ~detected
        if miss.any():
            ax.scatter(
                scans[miss],
                y[miss],
                s=14,
                facecolors="white",
                edgecolors=list(colour[miss]),
                zorder=3,
            )
        if overlap.any():
            ax.scatter(
                scans[overlap],
                y[overlap],
                s=60,
                facecolors="none",
                edgecolors="red",
                linewidths=1.5,
                zorder=4,
            )
        ax.autoscale_view()
        ax.set_ylabel(name, fontsize="small")
        ax.tick_params(labelsize="small")
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("scan", fontsize="small")
    n_overlap = sum(int(t.overlapping.sum()) for t in tracks)
    fig.suptitle(
        f"region {region}{f' ({title})' if title else ''}: {len(tracks)} tracks, "
        f"{n_overlap} overlaps",
        fontsize="small",
    )
    _save(fig, path)
