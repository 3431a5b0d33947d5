"""Detector artifacts that are not spots: zingers, hot pixels and masked voxels.

Zingers (cosmic rays, radioactive decays in the sensor) put thousands of
counts into one voxel, or a streak of two or three inside one omega frame, at
new places every scan. Hot pixels (and dead pixels stuck at a marker value
nobody masked) are high in every frame at the same pixel. A real diffraction
spot is neither: the detector's point spread, the crystal's mosaicity and the
beam's divergence spread it over several pixels in its frame, and the
rotation spreads it over neighbouring omega frames, so its brightest voxel
always has bright neighbours.

The rule, for voxels more than max(``threshold_sigma``, ``zinger_ratio``) noise
above the background (the detection cut, and a height no noise voxel reaches;
a single voxel under it is too faint to make a spot, even smoothed):

- support in the frame: the sum of the voxel's 8 neighbours in its omega
  frame without the two highest (a zinger streak of up to three voxels has
  no support left; a spot has), at least 0;
- support along omega: the mean of the same pixel in the previous and the
  next frame (the one that exists at the volume's faces), at least 0;
- a zinger is a voxel with at most two higher neighbours in its frame (the top
  of its neighbourhood, or one of a streak; a voxel on the flank of anything
  smooth has more) that is more than ``zinger_ratio`` times higher than both
  its supports. Pure noise sums to ~0 in both, so a zinger of 300 counts on noise
  of 7 has ratios far above 20. A real spot has bright neighbours: a
  Gaussian of sigma >= 1 pixel has an in-frame ratio below 0.3, one of sigma
  0.5 pixel about 3, and the 30 real ESRF spots of ``si-id11`` (cores of two
  pixels, most of their intensity in one summed omega slice) stay below 4
  even where they have no omega support at all.
- a hot pixel is a pixel whose lowest value over the omega frames is above the
  cut, the top of its neighbourhood in that lowest-value image and more than
  ``zinger_ratio`` times its in-frame support there: high in every frame,
  with dark neighbours. A spot
  covers a pixel in a few frames of the window, not in all of them.

A zinger that lands on a spot's flank has the flank as its support, so the
voxel rule cannot see it; it shows up instead as a small piece of its own after
splitting. A detected piece whose peak's frame holds no more than a streak of
the piece (three voxels) and whose peak is more than ``zinger_ratio`` times
its omega support is a zinger hit too (in a volume of three frames or more);
its voxels in that frame are masked. A real spot has its body around its
peak in the peak's frame (hundreds of pixels for the sharp ESRF spots), and a
faint spot whose cut reaches only a few voxels has omega neighbours near its
peak, so its ratio stays low.

Zinger voxels and hot pixels are then masked. Masked voxels (NaN in the
volume: gaps, dead pixels, ``frames.mask``, and the artifacts above) are
neither background nor spot: the background never uses them, a spot needs
``min_voxels`` measured voxels, and inside a spot they carry the value
interpolated from their measured neighbours (linearly, along the axis where
the measured voxels on both sides are closest), so a gap through a spot
neither cuts it in two nor takes away the intensity it hides.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

STREAK_ALLOWANCE = 2  # the highest in-frame neighbours left out of the support
_IN_FRAME = tuple((di, dj) for di in (-1, 0, 1) for dj in (-1, 0, 1) if (di, dj) != (0, 0))


@dataclass(frozen=True)
class Artifacts:
    """What the artifact rule rejected in one volume.

    voxels: bool volume, the zinger voxels and hot-pixel columns.
    zingers: number of zinger hits (groups of zinger voxels touching in 3D).
    hot_pixels: number of hot pixels (each masked in every frame).
    """

    voxels: np.ndarray
    zingers: int
    hot_pixels: int


def _in_frame(values: np.ndarray, index: tuple[np.ndarray, ...]) -> tuple[np.ndarray, np.ndarray]:
    """In-frame support and streak test of each indexed pixel, from one gather of its 8
    neighbours (neighbours outside the frame count as 0).

    support: the neighbours summed without the STREAK_ALLOWANCE highest, at least 0.
    top: at most STREAK_ALLOWANCE neighbours are higher than the pixel (a zinger is
    the top of its neighbourhood, or one of a streak; a voxel on the flank of
    anything smooth, a spot's tail or a truncated profile, has more).
    values: (..., n1, n2), the indexed pixels positive; index: leading indices, i, j.
    """
    *lead, i, j = index
    pad = [(0, 0)] * (values.ndim - 2) + [(1, 1), (1, 1)]
    padded = np.pad(values, pad)
    neighbours = np.stack([padded[(*lead, i + 1 + di, j + 1 + dj)] for di, dj in _IN_FRAME])
    top = np.count_nonzero(neighbours > values[index], axis=0) <= STREAK_ALLOWANCE
    neighbours.sort(axis=0)
    support = np.maximum(neighbours[: len(_IN_FRAME) - STREAK_ALLOWANCE].sum(axis=0), 0.0)
    return support, top


def _omega_support(excess: np.ndarray, index: tuple[np.ndarray, ...]) -> np.ndarray:
    """Mean of the same pixel in the frames before and after (those that exist), at least 0."""
    w, i, j = index
    last = excess.shape[0] - 1
    before = np.where(w > 0, excess[np.maximum(w - 1, 0), i, j], 0.0)
    after = np.where(w < last, excess[np.minimum(w + 1, last), i, j], 0.0)
    sides = (w > 0).astype(np.float64) + (w < last)
    return np.maximum((before + after) / np.maximum(sides, 1.0), 0.0)


def _pick(index: tuple[np.ndarray, ...], keep: np.ndarray) -> tuple[np.ndarray, ...]:
    return tuple(c[keep] for c in index)


def find_artifacts(excess: np.ndarray, cut: float, ratio: float) -> Artifacts:
    """Zinger voxels and hot pixels of a background-subtracted volume (module rule).

    excess: volume minus background, masked voxels already at 0. cut (> 0): the
    height above which a voxel is tested: the larger of the detection threshold
    and ratio x the noise sigma (a noise voxel is never a zinger, and a single
    voxel below it is too faint to make a spot even after smoothing). ratio:
    ``zinger_ratio`` (> 1).
    """
    shape = excess.shape
    hot = np.zeros(shape[1:], dtype=bool)
    if shape[0] >= 2:
        lowest = np.min(excess, axis=0)
        cand = np.nonzero(lowest > cut)
        if cand[0].size:
            support, top = _in_frame(lowest, cand)
            flagged = top & (lowest[cand] > ratio * support)
            hot[_pick(cand, flagged)] = True
    zinger = np.zeros(shape, dtype=bool)
    cand = np.nonzero((excess > cut) & ~hot[None])
    if cand[0].size:  # isolated along omega first: few voxels of a spot are
        cand = _pick(cand, excess[cand] > ratio * _omega_support(excess, cand))
    if cand[0].size:
        support, top = _in_frame(excess, cand)
        zinger[_pick(cand, top & (excess[cand] > ratio * support))] = True
    n_hot = int(np.count_nonzero(hot))
    if not n_hot and not zinger.any():
        return Artifacts(np.zeros(shape, dtype=bool), 0, 0)
    n_hits = ndimage.label(zinger, np.ones((3, 3, 3), dtype=bool))[1] if zinger.any() else 0
    return Artifacts(zinger | hot[None], int(n_hits), n_hot)


def zinger_pieces(
    labels: np.ndarray, n: int, excess: np.ndarray, ratio: float
) -> tuple[np.ndarray, np.ndarray]:
    """Detected pieces that are zingers on a spot's flank (module rule).

    Returns (per label 1..n, index 0 unused: the piece is a zinger hit; bool
    volume of the voxels to mask: each hit's voxels in its peak's frame).
    """
    hits = np.zeros(n + 1, dtype=bool)
    voxels = np.zeros(labels.shape, dtype=bool)
    if excess.shape[0] < 3:
        return hits, voxels
    for lab, box in enumerate(ndimage.find_objects(labels, max_label=n), start=1):
        if box is None:
            continue
        mine = labels[box] == lab
        inside = np.where(mine, excess[box], -np.inf)
        w, i, j = np.unravel_index(int(np.argmax(inside)), inside.shape)
        if np.count_nonzero(mine[w]) > STREAK_ALLOWANCE + 1:
            continue  # the peak's frame holds more than a streak: a spot's body
        at = (
            np.array([box[0].start + w]),
            np.array([box[1].start + i]),
            np.array([box[2].start + j]),
        )
        if excess[at][0] > ratio * _omega_support(excess, at)[0]:
            hits[lab] = True
            voxels[box[0].start + w, box[1], box[2]] |= mine[w]
    return hits, voxels


def _neighbours_along(measured: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Index of the nearest measured voxel before and after each voxel along one axis.

    -1 where there is none before, n where there is none after.
    """
    n = measured.shape[axis]
    shape = [1, 1, 1]
    shape[axis] = n
    index = np.arange(n).reshape(shape)
    before = np.maximum.accumulate(np.where(measured, index, -1), axis=axis)
    flipped = np.flip(np.where(measured, index, n), axis=axis)
    after = np.flip(np.minimum.accumulate(flipped, axis=axis), axis=axis)
    return before, after


def inpaint(excess: np.ndarray, measured: np.ndarray) -> np.ndarray:
    """Masked voxels filled from their measured neighbours; a new array.

    Each masked voxel is interpolated linearly between the nearest measured
    voxels on either side along the axis where they are closest (across a gap
    column, between a dead pixel's neighbours, along omega for a zinger).
    Linear interpolation has no maximum inside the hole, so a gap through a
    spot never carves a saddle that would split it. A voxel with measured
    voxels on one side only (a mask at the volume's face) takes the nearest
    one's value; one with none along any axis reads as background (0).
    """
    out = excess.copy()
    holes = np.nonzero(~measured)
    if holes[0].size == 0:
        return out
    best_span = np.full(holes[0].size, np.inf)
    value = np.zeros(holes[0].size)
    nearest = np.full(holes[0].size, np.inf)
    nearest_value = np.zeros(holes[0].size)
    for axis in range(3):
        n = excess.shape[axis]
        before_all, after_all = _neighbours_along(measured, axis)
        before, after, pos = before_all[holes], after_all[holes], holes[axis]
        v_before = excess[tuple(np.clip(before, 0, n - 1) if k == axis else c
                                for k, c in enumerate(holes))]  # fmt: skip
        v_after = excess[tuple(np.clip(after, 0, n - 1) if k == axis else c
                               for k, c in enumerate(holes))]  # fmt: skip
        span = np.where((before >= 0) & (after < n), after - before, np.inf)
        better = span < best_span
        t = (pos - before) / np.maximum(after - before, 1)
        value = np.where(better, v_before + t * (v_after - v_before), value)
        best_span = np.where(better, span, best_span)
        gap_before = np.where(before >= 0, pos - before, np.inf)
        gap_after = np.where(after < n, after - pos, np.inf)
        reach = np.minimum(gap_before, gap_after)
        nearer = reach < nearest
        one_side = np.where(gap_before <= gap_after, v_before, v_after)
        nearest_value = np.where(nearer, one_side, nearest_value)
        nearest = np.where(nearer, reach, nearest)
    out[holes] = np.where(
        np.isfinite(best_span), value, np.where(np.isfinite(nearest), nearest_value, 0.0)
    )
    return out
