"""Raw detector frames: geometry, regions from the experiment, and the cutter that
turns full detector frames (HDF5 stacks or .npy files) into per-region frames.

See docs/detector.md. The cutter reads every raw frame once and writes the
region frames the rest of mpitrack already consumes, so the runtime changes
only in what rank 0 polls.
"""

from __future__ import annotations

from mpitrack.errors import UsageError


class DetectorError(UsageError):
    """A raw-data problem a person must fix (a missing panel, a wrong dataset path)."""


class RawFrameError(Exception):
    """A raw frame that could not be read this time; str() names the file and reason."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")
