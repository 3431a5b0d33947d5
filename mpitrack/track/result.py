"""The contract between the tracker and storage.

A tracker step returns the current best answer for every scan that is still
open to revision (the MHT's N-scan window), not only for the newest scan.
Storage replaces the region's stored rows for scans ``first_open_scan ..
scan`` with ``rows`` in the same transaction as the checkpoint, so the
database always follows the current best global hypothesis and re-committing
the same result changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TrackRow:
    """One track in one scan.

    features always holds ``position``: the track's estimated centre for this
    scan as ``{"omega": .., <axis1>: .., <axis2>: ..}`` in region-local voxel
    units (measured centre when detected alone, the track's own estimate when
    overlapping, the prediction when missed). Detected rows also carry the
    measured spot's features (see features.py).
    """

    track_id: int
    scan: int
    detected: bool
    overlapping: bool
    features: dict[str, Any]


@dataclass(frozen=True)
class StepResult:
    """What one (region, scan) step decided.

    rows: every track row for scans first_open_scan..scan (inclusive) under the
        current best hypothesis; scans before first_open_scan are final and not
        repeated.
    """

    scan: int
    first_open_scan: int
    rows: tuple[TrackRow, ...]


def apply_step(rows: dict[tuple[int, int], TrackRow], result: StepResult) -> None:
    """What storage does with a step, on a dict keyed (track_id, scan).

    The rows of scans first_open_scan..scan are replaced by the step's rows,
    so the dict holds every scan's last answer, as the database does.
    """
    for key in [k for k in rows if k[1] >= result.first_open_scan]:
        del rows[key]
    rows.update({(r.track_id, r.scan): r for r in result.rows})
