"""Omega windows of regions.

A region covers an inclusive window of omega frames. The rotation is cyclic, so a
window may run through the end of the scan and continue at frame 0: with F frames
per scan, ``[F-3, 2]`` is F-3, F-2, F-1, 0, 1, 2. Window order (not frame-number
order) is the order of the region volume's axis 0, which keeps a wrapping window
contiguous for detection and tracking.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mpitrack.config import Config


def omega_window(start: int, end: int, frames_per_scan: int) -> tuple[int, ...]:
    """Frames of the inclusive window ``[start, end]`` in window order.

    ``start > end`` wraps through frame 0. ``start == end`` is a one-frame window
    (a full-circle window is written ``[k, k-1]``, e.g. ``[0, F-1]``), so a window
    can never hold more than ``frames_per_scan`` frames.
    """
    if frames_per_scan < 1:
        raise ValueError(f"frames_per_scan must be >= 1, got {frames_per_scan}")
    for name, value in (("start", start), ("end", end)):
        if not 0 <= value < frames_per_scan:
            raise ValueError(
                f"omega window {name}={value} is outside 0..{frames_per_scan - 1} "
                f"(frames_per_scan={frames_per_scan})"
            )
    if start <= end:
        return tuple(range(start, end + 1))
    return tuple(range(start, frames_per_scan)) + tuple(range(end + 1))


def windows_of(config: Config) -> dict[int, tuple[int, ...]]:
    """Every region's omega window (its frame numbers, in window order)."""
    n = config.frames.frames_per_scan
    return {r.id: omega_window(r.frames[0], r.frames[1], n) for r in config.regions}
