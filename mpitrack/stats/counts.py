"""Per-scan counts: live tracks, detections, misses, overlaps, births, deaths.

Computed from the database when a scan is complete for every region. Rows of
the newest scans may still be revised by the MHT (its N-scan window), so the
counts describe the best hypothesis at the time; the statistics role
recomputes the scans of that window as later scans complete, and `mpitrack
report` recomputes everything from the final rows.

Births and deaths compare this scan's rows with the previous scan's: a track
missed in a scan still has a (predicted) row there, so "a row in this scan and
none in the previous one" is exactly a new track, and the reverse a track the
tracker ended. The queries are in `query.py`; this module only counts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ScanCounts:
    """Counts for one scan. deaths: tracks with a row in the previous scan and none in this one."""

    scan: int
    regions: int
    live_tracks: int
    detected: int
    missed: int
    overlapping: int
    births: int
    deaths: int

    def summary(self) -> str:
        return (
            f"scan {self.scan}: {self.live_tracks} live tracks in {self.regions} regions, "
            f"{self.detected} detected, {self.missed} missed, {self.overlapping} overlapping, "
            f"{self.births} births, {self.deaths} deaths"
        )


def count_rows(
    scan: int,
    region_ids: np.ndarray,
    detected: np.ndarray,
    overlapping: np.ndarray,
    continued: np.ndarray,
    deaths: int,
) -> ScanCounts:
    """Counts from one scan's rows (one entry per row); continued: the track has a row in scan-1."""
    detected = np.asarray(detected, dtype=bool)
    return ScanCounts(
        scan=scan,
        regions=int(np.unique(np.asarray(region_ids)).size),
        live_tracks=int(detected.size),
        detected=int(detected.sum()),
        missed=int((~detected).sum()),
        overlapping=int((detected & np.asarray(overlapping, dtype=bool)).sum()),
        births=int((~np.asarray(continued, dtype=bool)).sum()),
        deaths=int(deaths),
    )
