"""A region's frames from disk to images: load the volume, detect as the tracker did, render.

Detection runs again with the run's own settings, so the outlines on a sheet
are exactly the spots the tracker was offered (detection is deterministic).
That costs a few milliseconds per volume, about as much as reading it; the
alternative, storing every label volume at tracking time, would cost far more
disk and a change in the workers for an image nobody may ever look at.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mpitrack.frames import FrameError, FrameMasks, FramePattern, load_volume
from mpitrack.regions import windows_of
from mpitrack.stats.spotrows import Cell, SpotRow
from mpitrack.stats.strip_png import compose_strip
from mpitrack.stats.strips import Sheet, render_sheet
from mpitrack.track.detect import DetectParams, detect

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FrameSource:
    """Where a run's region frames are and how detection ran on them.

    windows: every region's omega window (frame numbers in window order).
    shape: the expected frame shape (None: any consistent shape).
    masks: frames.mask, applied as the workers apply it, so that detection
        here finds the spots the tracker was offered.
    axes: the two frame axes' names.
    """

    directory: Path
    pattern: FramePattern
    windows: Mapping[int, tuple[int, ...]]
    shape: tuple[int, int] | None = None
    detection: DetectParams = field(default_factory=DetectParams)
    masks: FrameMasks = field(default_factory=FrameMasks)
    axes: tuple[str, str] = ("eta", "tth")

    @classmethod
    def from_config(cls, config) -> FrameSource:
        """The source of a `mpitrack.config.Config`."""
        return cls(
            directory=Path(config.frames.directory),
            pattern=FramePattern(config.frames.pattern),
            windows=windows_of(config),
            shape=config.frames.shape,
            detection=config.detection,
            masks=FrameMasks.from_config(config.frames.mask),
            axes=tuple(config.frames.axes),
        )

    def sheet(self, region: int, scan: int, scale: int) -> Sheet:
        """The sheet of (region, scan).

        Raises `mpitrack.frames.FrameError` (naming the file) when a frame or
        the mask file is missing or unusable, KeyError for a region the config
        does not have.
        """
        window = self.windows.get(region)
        if window is None:
            raise KeyError(f"region {region} is not in the config")
        volume = load_volume(
            self.directory,
            self.pattern,
            region,
            scan,
            window,
            self.shape,
            self.masks.for_region(region),
        )
        found = detect(volume, self.detection, self.axes)
        background = found.background
        return render_sheet(volume, found.labels, background.level, background.noise, scale)


def region_strip(
    source: FrameSource,
    region: int,
    rows: Sequence[SpotRow],
    first_open: int,
    crop: int,
    scale: int,
    title: str,
) -> np.ndarray:
    """The palette image `mpitrack show` writes: every track of ``rows`` across their scans.

    Scans at or after ``first_open`` are marked open (may still be revised). A
    scan whose frames cannot be read shows grey boxes and is logged.
    """
    scans = sorted({r.scan for r in rows})
    tracks = sorted({r.track for r in rows})
    sheets: dict[int, Sheet | None] = {}
    for scan in scans:
        try:
            sheets[scan] = source.sheet(region, scan, scale)
        except FrameError as exc:
            log.warning("region %d scan %d: no image: %s", region, scan, exc)
            sheets[scan] = None
    cells = {(r.track, r.scan): Cell(r, open=r.scan >= first_open) for r in rows}
    return compose_strip(title, tracks, scans, cells, sheets, crop, scale)
