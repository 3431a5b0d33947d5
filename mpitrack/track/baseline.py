"""A deliberately simple baseline tracker: frame-to-frame linking with a distance gate.

It answers "how much does the MHT buy us?": the same detections
(detect_spots) are linked scan to scan by a single Hungarian assignment
(scipy.optimize.linear_sum_assignment) on the Euclidean distance between a
track's last detected position and each new spot, pairs further apart than
``max_distance`` voxels being forbidden. No motion model, no overlap
reasoning (``overlapping`` is always false), no revision of past decisions:
a track missed for more than ``max_missed`` consecutive scans ends, and
every unmatched spot starts a new track.

It implements the same `SpotTracker` interface as the MHT (step_spots ->
StepResult, with rows of the tracker's form: TrackRow with
features["position"]), so the same evaluation and benchmarks drive both.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from mpitrack.track.result import StepResult, TrackRow
from mpitrack.track.spot import Spot

log = logging.getLogger(__name__)

_FORBIDDEN = 1e9


@dataclass(frozen=True)
class LinkerParams:
    """max_distance: gate in voxels; max_missed: scans a track may miss and still continue."""

    max_distance: float = 4.0
    max_missed: int = 1

    def __post_init__(self) -> None:
        if self.max_distance <= 0:
            raise ValueError(f"max_distance must be > 0, got {self.max_distance}")
        if self.max_missed < 0:
            raise ValueError(f"max_missed must be >= 0, got {self.max_missed}")


@dataclass
class _Track:
    track_id: int
    position: np.ndarray
    missed: int = 0


class FrameLinker:
    """Links the spots of successive scans of one region into tracks."""

    def __init__(self, params: LinkerParams | None = None, axes: Sequence[str] = ("eta", "tth")):
        self.params = params or LinkerParams()
        self.names = ("omega", *axes)
        self._tracks: list[_Track] = []
        self._next_id = 0

    def step_spots(self, scan: int, spots: Sequence[Spot] | None) -> StepResult:
        """Rows (detected only) of one scan, one per spot; nothing is ever revised.

        An unusable scan (None) gives no rows and counts as no miss.
        """
        if spots is None:
            return StepResult(scan, scan, ())
        positions = np.array([np.asarray(s.position, dtype=float) for s in spots]).reshape(-1, 3)
        assigned: dict[int, _Track] = {}
        if self._tracks and len(spots):
            last = np.array([t.position for t in self._tracks])
            dist = np.linalg.norm(last[:, None, :] - positions[None, :, :], axis=2)
            cost = np.where(dist <= self.params.max_distance, dist, _FORBIDDEN)
            rows, cols = linear_sum_assignment(cost)
            for r, c in zip(rows, cols, strict=True):
                if cost[r, c] < _FORBIDDEN:
                    assigned[int(c)] = self._tracks[int(r)]
        matched = {id(t) for t in assigned.values()}
        survivors = []
        for track in self._tracks:
            if id(track) in matched:
                track.missed = 0
                survivors.append(track)
            else:
                track.missed += 1
                if track.missed <= self.params.max_missed:
                    survivors.append(track)
        out = []
        for i, spot in enumerate(spots):
            track = assigned.get(i)
            if track is None:
                track = _Track(self._next_id, positions[i].copy())
                self._next_id += 1
                survivors.append(track)
            track.position = positions[i].copy()
            features: dict[str, Any] = dict(spot.features)
            features["position"] = {
                n: float(x) for n, x in zip(self.names, positions[i], strict=True)
            }
            out.append(TrackRow(track.track_id, scan, True, False, features))
        self._tracks = survivors
        out.sort(key=lambda row: row.track_id)
        return StepResult(scan, scan, tuple(out))


def export_row(region_id: int, row: TrackRow) -> dict[str, Any]:
    """A row in the export-file form that `mpitrack evaluate --input` reads."""
    return {
        "region_id": region_id,
        "track_id": row.track_id,
        "scan_number": row.scan,
        "detected": row.detected,
        "overlapping": row.overlapping,
        "features": row.features,
    }


def track_region(
    volumes: Iterator[tuple[int, np.ndarray]],
    detect: Any,
    params: LinkerParams | None = None,
    axes: Sequence[str] = ("eta", "tth"),
) -> Iterator[TrackRow]:
    """Rows for (scan, volume) pairs of one region; detect(volume) -> list[Spot]."""
    linker = FrameLinker(params, axes)
    for scan, volume in volumes:
        yield from linker.step_spots(scan, detect(volume)).rows
