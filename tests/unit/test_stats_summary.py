"""Pure statistics: distributions, histograms, CSV round trip, alerts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mpitrack.stats import csvfile, glance
from mpitrack.stats.counts import ScanCounts
from mpitrack.stats.summary import (
    Distribution,
    FeatureSample,
    Histogram,
    ScanStats,
    quantity_names,
    scan_stats,
)

AXES = ("omega", "eta", "tth")


def test_distribution_known_answers():
    # Linear interpolation between order statistics (percentile_cont):
    # values 1, 2, 4: position q*(n-1).
    d = Distribution.of([4.0, 1.0, 2.0])
    assert d.n == 3
    assert d.mean == pytest.approx(7 / 3)
    assert d.p50 == 2.0
    assert d.p25 == pytest.approx(1.5)
    assert d.p75 == pytest.approx(3.0)
    assert d.p05 == pytest.approx(1.1)
    assert d.p95 == pytest.approx(3.8)
    assert d.iqr == pytest.approx(1.5)


def test_distribution_ignores_missing_values_and_handles_empty():
    d = Distribution.of([np.nan, 3.0, np.inf])
    assert (d.n, d.p05, d.p50, d.p95) == (1, 3.0, 3.0, 3.0)
    empty = Distribution.of([])
    assert empty.n == 0 and empty.p50 is None and empty.iqr is None


def test_histogram_fixed_edges_clip_outliers():
    h = Histogram.of([-1.0, 0.1, 0.3, 0.3, 3.99, 100.0], lo=0.0, hi=4.0, bins=4)
    assert h.counts == (4, 0, 0, 2)
    assert list(h.edges) == [0.0, 1.0, 2.0, 3.0, 4.0]
    with pytest.raises(ValueError):
        Histogram.of([1.0], lo=1.0, hi=1.0)


def _sample(scale: float = 1.0) -> FeatureSample:
    return FeatureSample(
        widths={
            "omega": np.array([1.0, 2.0, 4.0]) * scale,
            "eta": np.array([3.0, 3.0, 3.0]),
            "tth": np.array([2.0, np.nan, 6.0]),
        },
        intensity=np.array([100.0, 200.0, 300.0]),
        max_variance=np.array([1.0, 2.0, 3.0]),
        ages=np.array([1.0, 5.0, 5.0, 5.0]),
        lifetimes=np.array([], dtype=float),
    )


def _stats(scan: int, scale: float = 1.0, **counts: int) -> ScanStats:
    base = dict(regions=2, live_tracks=4, detected=4, missed=0, overlapping=0, births=0, deaths=0)
    base.update(counts)
    return scan_stats(ScanCounts(scan, **base), _sample(scale), compute_seconds=0.01)


def test_scan_stats_combines_counts_and_distributions():
    s = _stats(7, detected=3, missed=1, overlapping=1)
    assert s.clean == 2
    assert s.overlap_fraction == pytest.approx(1 / 3)
    assert s.missed_fraction == pytest.approx(0.25)
    assert s.distribution("width_omega").p50 == 2.0
    assert s.distribution("width_tth").n == 2
    assert s.distribution("age").p50 == 5.0
    assert s.distribution("lifetime").n == 0
    assert s.histograms["width_eta"].counts[12] == 3  # 3.0 voxels in 0.25-voxel bins
    assert set(quantity_names(AXES)) <= set(s.distributions)
    assert "median FWHM omega 2.00" in s.summary()


def test_csv_round_trip_is_exact(tmp_path: Path):
    stats = [_stats(0), _stats(1, scale=1.1, births=2, deaths=1), _stats(2, detected=0)]
    stats[2] = ScanStats(2, 0, 0, 0, 0, 0, 0, 5, distributions={})
    path = tmp_path / "scan_stats.csv"
    csvfile.write_csv(path, stats, quantity_names(AXES))
    back = csvfile.read_csv(path)
    expected = [s.without_extras() for s in stats]
    # An empty scan comes back with explicit empty distributions.
    expected[2] = ScanStats(
        2, 0, 0, 0, 0, 0, 0, 5, distributions={q: Distribution(0) for q in quantity_names(AXES)}
    )
    assert back == expected
    header = path.read_text().splitlines()[0].split(",")
    assert header[:3] == ["scan", "regions", "live_tracks"]
    assert "width_tth_iqr" in header


def test_csv_reader_rejects_inconsistent_derived_column(tmp_path: Path):
    path = tmp_path / "s.csv"
    csvfile.write_csv(path, [_stats(0, overlapping=1)], quantity_names(AXES))
    lines = path.read_text().splitlines()
    cells = lines[1].split(",")
    cells[6] = "0.9"  # overlap_fraction
    path.write_text("\n".join([lines[0], ",".join(cells)]) + "\n")
    with pytest.raises(ValueError, match="overlap_fraction"):
        csvfile.read_csv(path)


WIDTHS = ("width_omega", "width_eta", "width_tth")


def test_alerts_quiet_run_says_ok():
    stats = [_stats(s) for s in range(6)]
    out = glance.alerts(stats, WIDTHS)
    assert [a.level for a in out] == ["ok"]


def test_alerts_name_broadening_track_loss_misses_and_overlaps():
    stats = [_stats(s) for s in range(5)]
    stats.append(_stats(5, scale=1.5, live_tracks=3, missed=1, deaths=1, detected=2, overlapping=1))
    text = " | ".join(a.text for a in glance.alerts(stats, WIDTHS))
    assert "broadening along omega" in text and "+50%" in text
    assert "eta" not in text.split("broadening")[1].split("|")[0]
    assert "Tracks being lost" in text
    assert "1 tracks ended in scan 5" in text
    assert "Missed detections: 1 of 3" in text
    assert "4 live tracks" not in text and "down 25% from 4" in text
    assert "Overlaps: 1 of 2" in text
    assert all(a.level == "alert" for a in glance.alerts(stats, WIDTHS))


def test_alerts_need_more_than_the_baseline_to_call_broadening():
    stats = [_stats(0), _stats(1, scale=2.0)]  # both within the baseline scans
    assert all("Spots broadening" not in a.text for a in glance.alerts(stats, WIDTHS))
