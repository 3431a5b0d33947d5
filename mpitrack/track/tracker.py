"""One region's tracker: detection + MHT + checkpoint, the unit a worker runs per job.

`SpotTracker` is what every tracker of detected spots offers (the MHT's
`RegionTracker` and the baseline's `FrameLinker`), so evaluation and
benchmarks drive them alike.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np

from mpitrack.track.checkpoint import decode_state, encode_state
from mpitrack.track.detect import detect
from mpitrack.track.mht import MHT, MHTParams
from mpitrack.track.result import StepResult
from mpitrack.track.spot import Spot


class SpotTracker(Protocol):
    """A tracker of one region fed with detected spots, scan by scan.

    spots None: the scan's data were unusable. The result's rows cover scans
    first_open_scan..scan; a tracker that never revises sets
    first_open_scan = scan.
    """

    def step_spots(self, scan: int, spots: list[Spot] | None) -> StepResult: ...


@dataclass(frozen=True)
class Rejected:
    """What detection refused in one volume (see detect.py): counted in the job log."""

    zingers: int = 0
    hot_pixels: int = 0
    masked_voxels: int = 0

    def counts(self) -> dict[str, int]:
        return asdict(self)


class RegionTracker:
    """Tracks the spots of one region across scans.

    step() consumes the region's volume for the next scan; step_spots() skips
    detection (tests, baselines). Scans must increase; a gap is fine (the
    filters predict over it). A volume of None means the scan's frames were
    unusable: every live track is predicted through it (detected=False) and
    the scan counts neither as a miss nor as a chance to start tracks.
    """

    def __init__(
        self,
        detect_params: Any,
        mht_params: MHTParams,
        axes: tuple[str, str] | list[str] = ("eta", "tth"),
        _mht: MHT | None = None,
    ) -> None:
        self.detect_params = detect_params
        self.mht_params = mht_params
        self.axes = (str(axes[0]), str(axes[1]))
        self._mht = _mht if _mht is not None else MHT(mht_params, self.axes)
        self.rejected = Rejected()

    @property
    def last_scan(self) -> int | None:
        """The last scan stepped, None before the first."""
        return self._mht.state.last_scan

    def _check_scan(self, scan: int) -> None:
        last = self.last_scan
        if last is not None and int(scan) <= last:
            raise ValueError(f"scan {scan} is not after the region's last scan {last}")

    def step(self, scan: int, volume: np.ndarray | None) -> StepResult:
        """Detect spots in the volume (n_omega, n_1, n_2) and advance the MHT.

        `rejected` then holds what detection refused in this volume.
        """
        self._check_scan(scan)
        self.rejected = Rejected()
        if volume is None:
            return self._mht.step(scan, None)
        volume = np.asarray(volume)
        found = detect(volume, self.detect_params, self.axes)
        self.rejected = Rejected(found.zingers, found.hot_pixels, found.masked_voxels)
        return self._mht.step(scan, list(found.spots), voxels=volume.size)

    def step_spots(
        self, scan: int, spots: list[Spot] | None, voxels: int | None = None
    ) -> StepResult:
        """Advance the MHT with already detected spots (None: an unusable scan).

        voxels: the size of the volume they were found in, for the clutter
        estimate (`step` passes it; without it the configured density is used).
        """
        self._check_scan(scan)
        return self._mht.step(scan, None if spots is None else list(spots), voxels)

    def leaf_counts(self) -> dict[int, int]:
        """Hypotheses per track tree (diagnostics)."""
        return self._mht.leaf_counts()

    def to_checkpoint(self) -> bytes:
        """The full tracker state as versioned bytes (checkpoint.py)."""
        return encode_state(self._mht.state)

    @classmethod
    def from_checkpoint(
        cls,
        data: bytes,
        detect_params: Any,
        mht_params: MHTParams,
        axes: tuple[str, str] | list[str] = ("eta", "tth"),
    ) -> RegionTracker:
        """Restore a tracker; raises CheckpointVersionError for another format version."""
        state = decode_state(data)
        axes_t = (str(axes[0]), str(axes[1]))
        return cls(detect_params, mht_params, axes_t, _mht=MHT(mht_params, axes_t, state))
