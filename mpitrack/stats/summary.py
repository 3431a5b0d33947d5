"""Per-scan summaries: numbers in, numbers out (no database, no plotting).

A scan's statistics are counts (from `counts.ScanCounts`) plus distributions of
per-spot quantities. Distributions are summarised by robust statistics
(median, quartiles, 5th/95th percentiles) because a few mis-detected blobs
must not move the number a scientist watches; the mean is kept for
completeness. Percentiles use linear interpolation between order statistics,
the same definition as PostgreSQL's ``percentile_cont`` and numpy's default,
so a value can be checked by hand or in SQL.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from mpitrack.stats.counts import ScanCounts

# The percentiles every distribution reports: the columns p05..p95 of the
# scan_distributions table (sql/migrations), so fixed by the schema.
QUANTILES = (0.05, 0.25, 0.50, 0.75, 0.95)
PERCENTILE_NAMES = ("p05", "p25", "p50", "p75", "p95")

# FWHM histogram edges, in voxels, shared by every scan so that a heatmap of
# width against scan compares like with like. 0.25-voxel bins resolve the
# broadening of spots a few voxels wide; anything wider than 16 voxels is in
# the last bin (a spot that wide fills most of a region anyway).
WIDTH_HIST_LO = 0.0
WIDTH_HIST_HI = 16.0
WIDTH_HIST_BINS = 64


def width_quantity(axis: str) -> str:
    """Name of the FWHM distribution along ``axis`` (``width_omega``, ``width_eta``, ...)."""
    return f"width_{axis}"


INTENSITY = "intensity"
MAX_VARIANCE = "max_variance"
AGE = "age"
LIFETIME = "lifetime"


def quantity_names(axes: Sequence[str]) -> tuple[str, ...]:
    """Every distribution of a scan, in report order, for the full axis names (omega first)."""
    return (*(width_quantity(a) for a in axes), INTENSITY, MAX_VARIANCE, AGE, LIFETIME)


@dataclass(frozen=True)
class Distribution:
    """Summary of a sample: size, mean and the `QUANTILES`; None where the sample is empty."""

    n: int
    mean: float | None = None
    p05: float | None = None
    p25: float | None = None
    p50: float | None = None
    p75: float | None = None
    p95: float | None = None

    @classmethod
    def of(cls, values: Iterable[float] | np.ndarray) -> Distribution:
        """Summarise finite values; NaN and infinities (missing features) are left out."""
        a = np.asarray(values, dtype=np.float64).ravel()
        a = a[np.isfinite(a)]
        if a.size == 0:
            return cls(0)
        q = np.quantile(a, QUANTILES)
        return cls(int(a.size), float(a.mean()), *(float(v) for v in q))

    @property
    def iqr(self) -> float | None:
        if self.p25 is None or self.p75 is None:
            return None
        return self.p75 - self.p25

    def percentiles(self) -> tuple[float | None, ...]:
        return (self.p05, self.p25, self.p50, self.p75, self.p95)


@dataclass(frozen=True)
class Histogram:
    """Counts in equal bins over [lo, hi]; values outside are clipped into the end bins."""

    lo: float
    hi: float
    counts: tuple[int, ...]

    @classmethod
    def of(
        cls,
        values: Iterable[float] | np.ndarray,
        lo: float = WIDTH_HIST_LO,
        hi: float = WIDTH_HIST_HI,
        bins: int = WIDTH_HIST_BINS,
    ) -> Histogram:
        if not hi > lo or bins < 1:
            raise ValueError(f"need hi > lo and bins >= 1, got [{lo}, {hi}] with {bins} bins")
        a = np.asarray(values, dtype=np.float64).ravel()
        a = a[np.isfinite(a)]
        index = np.floor((a - lo) / (hi - lo) * bins).astype(np.int64)
        counts = np.bincount(np.clip(index, 0, bins - 1), minlength=bins)
        return cls(float(lo), float(hi), tuple(int(c) for c in counts))

    @property
    def edges(self) -> np.ndarray:
        return np.linspace(self.lo, self.hi, len(self.counts) + 1)


@dataclass(frozen=True)
class FeatureSample:
    """Per-spot values of one scan, as the database query returns them.

    widths: FWHM per axis name (omega first) of the clean spots (detected, not
        overlapping); intensity and max_variance of the same spots.
    ages: scans since each live track's first detection, counting both ends.
    lifetimes: first-to-last detected scan span (both ends) of the tracks that
        died in this scan.
    """

    widths: Mapping[str, np.ndarray]
    intensity: np.ndarray
    max_variance: np.ndarray
    ages: np.ndarray = field(default_factory=lambda: np.zeros(0))
    lifetimes: np.ndarray = field(default_factory=lambda: np.zeros(0))


@dataclass(frozen=True)
class ScanStats:
    """Everything the report shows about one scan.

    Counts are of measurement rows, one per live track: detected + missed =
    live_tracks; overlapping and `clean` partition the detected rows. births:
    tracks with a row in this scan and none in the previous one; deaths: the
    reverse. distributions maps a quantity name (see `quantity_names`) to its
    summary; histograms holds the width histograms.
    """

    scan: int
    regions: int
    live_tracks: int
    detected: int
    missed: int
    overlapping: int
    births: int
    deaths: int
    distributions: Mapping[str, Distribution] = field(default_factory=dict)
    histograms: Mapping[str, Histogram] = field(default_factory=dict)
    compute_seconds: float | None = None

    @property
    def clean(self) -> int:
        """Detected rows that do not overlap: the population of the spot distributions."""
        return self.detected - self.overlapping

    @property
    def overlap_fraction(self) -> float | None:
        return self.overlapping / self.detected if self.detected else None

    @property
    def missed_fraction(self) -> float | None:
        return self.missed / self.live_tracks if self.live_tracks else None

    def distribution(self, quantity: str) -> Distribution:
        return self.distributions.get(quantity, Distribution(0))

    def without_extras(self) -> ScanStats:
        """The part that the CSV carries (no histograms, no timing)."""
        return replace(self, histograms={}, compute_seconds=None)

    def summary(self) -> str:
        """One log line: what a person tailing the log at 3 a.m. wants to see."""
        parts = [
            f"scan {self.scan}: {self.detected} spots, {self.live_tracks} live tracks "
            f"in {self.regions} regions, {self.births} births, {self.deaths} deaths, "
            f"{self.missed} missed, {self.overlapping} overlapping"
        ]
        widths = [
            f"{q.removeprefix('width_')} {d.p50:.2f}"
            for q, d in self.distributions.items()
            if q.startswith("width_") and d.p50 is not None
        ]
        if widths:
            parts.append("median FWHM " + ", ".join(widths))
        return "; ".join(parts)


def scan_stats(
    counts: ScanCounts,
    sample: FeatureSample,
    compute_seconds: float | None = None,
) -> ScanStats:
    """Combine a scan's counts and per-spot values into its statistics."""
    distributions: dict[str, Distribution] = {}
    histograms: dict[str, Histogram] = {}
    for axis, values in sample.widths.items():
        name = width_quantity(axis)
        distributions[name] = Distribution.of(values)
        histograms[name] = Histogram.of(values)
    distributions[INTENSITY] = Distribution.of(sample.intensity)
    distributions[MAX_VARIANCE] = Distribution.of(sample.max_variance)
    distributions[AGE] = Distribution.of(sample.ages)
    distributions[LIFETIME] = Distribution.of(sample.lifetimes)
    return ScanStats(
        scan=counts.scan,
        regions=counts.regions,
        live_tracks=counts.live_tracks,
        detected=counts.detected,
        missed=counts.missed,
        overlapping=counts.overlapping,
        births=counts.births,
        deaths=counts.deaths,
        distributions=distributions,
        histograms=histograms,
        compute_seconds=compute_seconds,
    )


def relative_change(new: float | None, old: float | None) -> float | None:
    """(new - old) / |old|, or None when either is missing or old is 0."""
    if new is None or old is None or old == 0 or not math.isfinite(old):
        return None
    return (new - old) / abs(old)


@dataclass(frozen=True)
class TrackSpans:
    """Every track's detected span: lifetime in scans, and whether it is still alive.

    alive: the track has a row in the newest scan in the table (so its
    lifetime is a lower bound, not a final value).
    """

    lifetimes: np.ndarray
    alive: np.ndarray


@dataclass(frozen=True)
class Trajectory:
    """One track's rows in scan order: positions (n, 3) in voxels, axes as the query asked."""

    region: int
    track: int
    scans: np.ndarray
    positions: np.ndarray
    detected: np.ndarray
    overlapping: np.ndarray
