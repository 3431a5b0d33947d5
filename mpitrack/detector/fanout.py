"""In-memory fan-out: rank 0 gathers each region's cut frames into its volume; the
worker checks a volume that came with its job as it would check frame files.

Cutting into files costs one small-file creation per region and frame (and the
workers read them back): at 200 regions per raw frame that, not the raw read,
limited ingest. With ``detector.cut_files: false`` the cutter puts each region's
cut straight into its (region, scan) volume here, and the dispatcher sends the
volume with the job (transport/mpi.py: a buffer send, no pickling).

Memory is bounded: the cutter starts no frame of a scan ``memory_scans`` or
more past the oldest scan that still has a volume here (being filled or not
yet dispatched), so at most ``memory_scans`` scans of volumes are held (their
size: ``scan_bytes``), plus the volumes on their way to workers (one per
worker) and the cutter's two raw frames. Nothing here survives a crash, and
nothing needs to: a (region, scan) is only ever committed from a volume that
was cut whole from the raw files, and a re-run reads the raw frames of every
scan not yet committed again (docs/detector.md).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from mpitrack.frames import FrameError, FrameMask, refuse_all_masked, refuse_infinite

#: Whether (region, scan) is still to be tracked in this run (Scheduler.needs).
Needed = Callable[[int, int], bool]


@dataclass
class _Filling:
    volume: np.ndarray  # (len(window), n_eta, n_tth) float32
    missing: set[int] = field(default_factory=set)  # frames not cut yet


class VolumeBuffer:
    """Cut frames into per-(region, scan) volumes, in window order, until dispatched."""

    def __init__(
        self,
        windows: Mapping[int, Sequence[int]],
        shapes: Mapping[int, tuple[int, int]],
        memory_scans: int = 2,
    ) -> None:
        missing = sorted(set(windows) - set(shapes))
        if missing:
            raise ValueError(f"regions {missing} have no frame shape")
        if memory_scans < 1:
            raise ValueError(f"memory_scans {memory_scans} must be >= 1")
        self.windows = {r: tuple(w) for r, w in windows.items()}
        self.shapes = {r: tuple(shapes[r]) for r in windows}
        self.memory_scans = memory_scans
        self._slot = {r: {f: i for i, f in enumerate(w)} for r, w in self.windows.items()}
        self._held: dict[tuple[int, int], _Filling] = {}

    @property
    def scan_bytes(self) -> int:
        """Bytes of one scan's volumes (every region): the unit of the memory bound."""
        return sum(
            len(w) * self.shapes[r][0] * self.shapes[r][1] * 4 for r, w in self.windows.items()
        )

    @property
    def nbytes(self) -> int:
        return sum(f.volume.nbytes for f in self._held.values())

    def oldest_scan(self) -> int | None:
        """The oldest scan with a volume held (being filled or waiting for dispatch)."""
        return min((scan for _, scan in self._held), default=None)

    def may_start(self, scan: int) -> bool:
        """Whether frames of ``scan`` may be cut without passing the memory bound."""
        oldest = self.oldest_scan()
        return oldest is None or scan < oldest + self.memory_scans

    def put(self, region: int, frame: int, scan: int, cut: np.ndarray) -> bool:
        """Store one cut frame; True when it completes the (region, scan) volume."""
        filling = self._held.get((region, scan))
        if filling is None:
            window = self.windows[region]
            volume = np.empty((len(window), *self.shapes[region]), dtype=np.float32)
            filling = self._held[(region, scan)] = _Filling(volume, set(window))
        if cut.shape != self.shapes[region]:
            raise ValueError(
                f"region {region} frame {frame} scan {scan}: cut of shape {cut.shape}, "
                f"expected {self.shapes[region]}"
            )
        filling.volume[self._slot[region][frame]] = cut
        filling.missing.discard(frame)
        return not filling.missing

    def take(self, region: int, scan: int) -> np.ndarray:
        """The complete volume of (region, scan), handed over (no longer held here).

        Raises LookupError when it is not complete: a job is made ready only by
        the frames put here, so that is a bug, never a reason to read files.
        """
        filling = self._held.get((region, scan))
        if filling is None or filling.missing:
            state = "absent" if filling is None else f"missing frames {sorted(filling.missing)}"
            raise LookupError(
                f"region {region} scan {scan}: no complete volume in memory ({state})"
            )
        del self._held[(region, scan)]
        return filling.volume

    def drop_unneeded(self, needed: Needed) -> int:
        """Forget volumes the run no longer wants (a stopped region, a drained run)."""
        gone = [key for key in self._held if not needed(*key)]
        for key in gone:
            del self._held[key]
        return len(gone)


def received_volume(
    volume: np.ndarray,
    region: int,
    scan: int,
    window: Sequence[int],
    mask: FrameMask,
    expected_shape: Sequence[int] | None = None,
) -> np.ndarray:
    """A volume sent by rank 0, checked and masked exactly as `load_volume` treats the
    same cuts read from files (so both paths give identical rows).

    Errors are FrameError naming the region, frame and scan (there is no file).
    """

    def where(frame: int) -> str:
        return f"region {region} frame {frame} scan {scan} (cut in memory)"

    if volume.ndim != 3 or volume.shape[0] != len(window):
        raise FrameError(
            where(window[0]), f"volume of shape {volume.shape} for a window of {len(window)} frames"
        )
    frames = []
    for frame, cut in zip(window, volume, strict=True):
        if expected_shape is not None and cut.shape != tuple(expected_shape):
            raise FrameError(
                where(frame), f"shape {cut.shape} differs from expected {tuple(expected_shape)}"
            )
        arr = mask.apply(cut, where(frame))
        refuse_infinite(arr, where(frame))
        frames.append(arr)
    out = np.stack(frames)
    refuse_all_masked(out, where(window[0]), region, scan)
    return out
