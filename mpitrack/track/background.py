"""Background level and noise of one region volume, defined for every finite volume.

Detection measures every spot against this model, so it has to hold on data
nobody tuned it for: smooth or sloped backgrounds, powder rings and diffuse
scattering, a level that changes with omega, photon-counting data that are
mostly zeros, noise-free or thresholded volumes whose background is exactly
flat, and volumes with masked voxels. docs/detection.md has the measurements.

Models (``detection.background``):

``profiles`` (default)
    A robust plane in (omega, axis1, axis2) plus, per omega frame, a profile
    along each frame axis: ``B = plane + c[w, j] + r[w, i]``. Diffuse
    intensity that is constant or slowly varying along one frame axis is
    exactly this: a powder ring is a band at one 2theta running along eta,
    diffuse scattering and air scatter vary along 2theta, and each frame has
    its own profiles, so a level (or a ring) that changes with omega is
    followed too. Each profile value is the clipped mean of its line pooled
    over the frames within OMEGA_POOL of its own (spots are local in both
    frame axes, so a line holds few of their voxels, and the clip drops
    them), and is kept only where it differs from the plane by more than
    SIGNIFICANCE standard errors, so a flat or sloped background is fitted as
    tightly as by the plane alone. The fit starts from per-frame line medians
    (a ring 5 sigma high lies outside a 3-sigma clip around a flat level) and
    takes PROFILE_ROUNDS rounds, each clipped around the last model; a line
    with fewer than MIN_LINE_VOXELS usable voxels keeps no profile.
``plane``
    The robust plane alone.
``median``
    One level for the whole volume.

Noise is 1.4826 x the MAD of the voxels left after clipping (3 sigma).
Detection's second pass (spots and margins excluded) refits plane and
profiles once and keeps the first pass's noise.

Degenerate volumes, each with one rule:

- Masked voxels (NaN; see artifacts.py) never enter an estimate. With no
  usable voxel there is no background (level 0, noise 0): no spots.
- Exactly flat background (`exact_floor`): the minimum holds at least
  FLOOR_SHARE of the voxels and no other value more than REPEAT_SHARE
  (noise-free data on a zero background, detector data thresholded so that
  every pixel under a cut is stored as 0), whatever part of the volume the
  spots cover: the level is that floor and the noise 0.
- MAD = 0 otherwise (photon-counting data, mostly 0 with some 1 and 2): level
  and noise are the mean and standard deviation of the voxels within 5 noise
  of the level, iterated to convergence (`median_mad`); the 5-sigma clip keeps
  the real upper tail of such skewed noise. Fitted models keep that noise:
  their residuals are no longer discrete, so their MAD would be too small.
- Zero noise: detection floors it (detect.ZERO_NOISE_FLOOR), so that rounding
  dust is never a spot.
- Fewer than 8 usable voxels for a clipped estimate, or subnormal values whose
  spread rounds to 0: the estimate keeps what it had instead of averaging
  over nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

MAD_TO_SIGMA = 1.4826
CLIP_SIGMA = 3.0
CLIP_SIGMA_SPARSE = 5.0
CLIP_ITERATIONS = 3
MIN_LINE_VOXELS = 8
PROFILE_ROUNDS = 2
OMEGA_POOL = 2
SIGNIFICANCE = 3.0
FLOOR_ITERATIONS = 20
FLOOR_SHARE = 0.25
REPEAT_SHARE = 0.05
_MIN_VOXELS = 8

METHODS: tuple[str, ...] = ("profiles", "plane", "median")


@dataclass(frozen=True)
class Background:
    """The background model of one volume.

    level: background value, a float (median) or an array broadcastable to the
        volume (plane, profiles).
    noise: noise sigma of the raw volume (MAD-based, clipped; see the module rules).
    is_background: voxels used for the final estimate (measured, not clipped as signal).
    clip_sigma: the clip width the estimate ended with (3, or 5 for sparse or flat data).
    plane: the ``profiles`` model's plane (the level without its line profiles), which
        a refinement of the estimate keeps; None for the other models.
    """

    level: float | np.ndarray
    noise: float
    is_background: np.ndarray
    clip_sigma: float = CLIP_SIGMA
    plane: np.ndarray | None = field(default=None, repr=False)


def median(values: np.ndarray) -> float:
    """Median by one partition (the upper median for an even count; values non-empty).

    np.median also partitions to look for NaN and averages the two middle
    values; the data are finite and the gap between the two middle values of
    thousands of voxels is far below the noise, so this is the same estimate
    at about half the cost.
    """
    k = values.size // 2
    return float(np.partition(values, k)[k])


def median_mad(values: np.ndarray) -> tuple[float, float, float]:
    """Level, noise sigma and clip width (in sigmas) of a non-empty set of values.

    Normally the median, 1.4826 * MAD and a 3-sigma clip. When the MAD is 0
    (more than half the values sit exactly at the median), the flat-floor rule
    of the module docstring applies. Both level and noise are finite; the noise
    is 0 only when every value is equal.
    """
    med = median(values)
    dev = np.abs(values - med)
    mad = median(dev)
    if mad > 0:
        return med, MAD_TO_SIGMA * mad, CLIP_SIGMA
    level, noise = float(np.mean(values)), float(np.std(values))
    for _ in range(FLOOR_ITERATIONS):
        near = values[np.abs(values - level) <= CLIP_SIGMA_SPARSE * noise]
        if near.size == 0:  # only where subnormal values round the spread to 0
            break
        new_level, new_noise = float(np.mean(near)), float(np.std(near))
        if new_level == level and new_noise == noise:
            break
        level, noise = new_level, new_noise
    return level, noise, CLIP_SIGMA_SPARSE


def exact_floor(values: np.ndarray) -> float | None:
    """The volume's minimum when it is an exactly flat background, else None (see the rules).

    Exactly flat: the minimum holds at least FLOOR_SHARE of the values and no other
    value more than REPEAT_SHARE. Noise-free spots on a zero background, or
    thresholded detector data, whatever part of the volume the spots cover;
    counting data repeat their other small values too (Poisson mean 1: 37 %
    zeros, 37 % ones), so they never pass.
    """
    low = float(np.min(values))
    at_floor = values == low
    n_floor = int(np.count_nonzero(at_floor))
    if n_floor < FLOOR_SHARE * values.size:
        return None
    rest = values[~at_floor]
    if rest.size:
        _, counts = np.unique(rest, return_counts=True)
        if counts.max() > REPEAT_SHARE * values.size:
            return None
    return low


def estimate_background(
    volume: np.ndarray,
    method: str = "profiles",
    *,
    measured: np.ndarray | None = None,
    exclude: np.ndarray | None = None,
    start: Background | None = None,
) -> Background:
    """Background model and noise sigma of a 3D volume (see the module docstring).

    measured: voxels that hold a measurement (None = all); the others are
        never used, whatever their value.
    exclude: voxels known to be signal (detected spots with their margins):
        detection re-estimates with them excluded, because a dense region's
        faint spot tails otherwise lift the level by a tenth of a sigma or
        more, which integrates into a visible intensity bias.
    start: an earlier estimate (detection's first pass) whose noise and clip
        width start the clipping, instead of a fresh robust start.

    Without ``start``, the robust start comes from every 4th usable voxel (a
    volume of 4096 voxels or more), clipped |x - level| <= 3 noise (5 for
    sparse or flat data) up to three times until level and noise move by less
    than 2 % of the noise: enough for a threshold, at a quarter of the work.
    """
    if method not in METHODS:
        raise ValueError(f"unknown background method {method!r}; use one of {METHODS}")
    flat = volume.ravel()
    usable = np.ones(flat.size, dtype=bool) if measured is None else measured.ravel().copy()
    if exclude is not None:
        allowed = usable & ~np.asarray(exclude, dtype=bool).ravel()
        if np.count_nonzero(allowed) >= _MIN_VOXELS:
            usable = allowed  # else (almost) everything is signal: use every measured voxel
    if not usable.any():
        return Background(0.0, 0.0, np.zeros(volume.shape, dtype=bool), CLIP_SIGMA)
    floor = exact_floor(flat[usable])
    if floor is not None:
        keep = usable & (flat == floor)
        return Background(floor, 0.0, keep.reshape(volume.shape), CLIP_SIGMA_SPARSE)
    if method == "profiles" and start is not None and start.plane is not None and start.noise > 0:
        return _refine_profiles(volume, usable.reshape(volume.shape), start)
    level, noise, clip = _global_level(flat[usable], start)
    if method == "median":
        keep = usable & (np.abs(flat - level) <= clip * noise)
        return Background(level, noise, keep.reshape(volume.shape), clip)
    if method == "plane":
        return _plane(volume, usable, level, noise, clip)
    return _profiles(volume, usable.reshape(volume.shape), level, noise, clip)


def _global_level(pool: np.ndarray, start: Background | None) -> tuple[float, float, float]:
    """Clipped level, noise and clip width of the usable voxels (see estimate_background)."""
    if start is not None and start.noise > 0:
        level, noise, clip = float(np.mean(start.level)), start.noise, start.clip_sigma
        iterations = 1
    else:
        if pool.size >= 4096:
            pool = pool[::4]
        level, noise, clip = median_mad(pool)
        iterations = CLIP_ITERATIONS
    for _ in range(iterations):
        if noise <= 0:
            break
        kept = pool[np.abs(pool - level) <= clip * noise]
        if kept.size < _MIN_VOXELS:
            break
        new_level, new_noise, clip = median_mad(kept)
        converged = max(abs(new_level - level), abs(new_noise - noise)) <= 0.02 * noise
        level, noise = new_level, new_noise
        if converged:
            break
    return level, noise, clip


def _plane(
    volume: np.ndarray, usable: np.ndarray, level: float, noise: float, clip: float
) -> Background:
    """A least-squares plane in (omega, axis1, axis2) on the clipped voxels, re-clipped."""
    flat = volume.ravel()
    keep = usable & (np.abs(flat - level) <= clip * noise)
    coords = np.indices(volume.shape, dtype=np.float64).reshape(3, -1)
    design = np.vstack([np.ones(flat.size), coords]).T
    plane = np.full(flat.size, level)
    discrete = clip == CLIP_SIGMA_SPARSE
    for _ in range(CLIP_ITERATIONS):
        if np.count_nonzero(keep) < _MIN_VOXELS:
            break
        coef, *_ = np.linalg.lstsq(design[keep], flat[keep], rcond=None)
        plane = design @ coef
        resid = flat - plane
        offset, new_noise, new_clip = median_mad(resid[keep])
        if discrete:
            offset, new_noise = 0.0, noise  # see _profiles
        else:
            clip = new_clip
        if new_noise <= 0:
            break
        noise = new_noise
        new_keep = usable & (np.abs(resid - offset) <= clip * noise)
        if np.array_equal(new_keep, keep):
            break
        keep = new_keep
    return Background(plane.reshape(volume.shape), noise, keep.reshape(volume.shape), clip)


def _pool_omega(sums: np.ndarray) -> np.ndarray:
    """Running sums over the frames within OMEGA_POOL of each frame (truncated at the ends)."""
    out = sums.copy()
    for k in range(1, min(OMEGA_POOL, sums.shape[0] - 1) + 1):
        out[k:] += sums[:-k]
        out[:-k] += sums[k:]
    return out


def _line_means(values: np.ndarray, weight: np.ndarray, axis: int, noise: float) -> np.ndarray:
    """Significant weighted means along one frame axis, pooled over nearby frames.

    Each line's mean is pooled over the frames within OMEGA_POOL of its own;
    it is kept where it differs from 0 by more than SIGNIFICANCE standard
    errors (noise / sqrt(voxels)) and is 0 elsewhere, lines with fewer than
    MIN_LINE_VOXELS voxels included.
    """
    count = _pool_omega(weight.sum(axis=axis, keepdims=True))
    total = _pool_omega(np.where(weight, values, 0.0).sum(axis=axis, keepdims=True))
    mean = total / np.maximum(count, 1)
    error = noise / np.sqrt(np.maximum(count, 1))
    significant = (count >= MIN_LINE_VOXELS) & (np.abs(mean) > SIGNIFICANCE * error)
    return np.where(significant, mean, 0.0)


def _fit_plane(data: np.ndarray, keep: np.ndarray, fallback: float) -> np.ndarray:
    """Least-squares plane in (omega, axis1, axis2) through the kept voxels (fallback if < 8).

    The normal equations come from sums over the regular grid (marginal sums of
    the kept voxels and of their values), not from a design matrix of every voxel.
    """
    if np.count_nonzero(keep) < _MIN_VOXELS:
        return np.full(data.shape, fallback)
    weight = keep.astype(np.float64)
    value = np.where(keep, data, 0.0)
    w, i, j = (np.arange(n, dtype=np.float64) for n in data.shape)
    w_wi, w_wj, w_ij = weight.sum(axis=2), weight.sum(axis=1), weight.sum(axis=0)
    v_wi, v_wj = value.sum(axis=2), value.sum(axis=1)
    w_w, w_i, w_j = w_wi.sum(axis=1), w_wi.sum(axis=0), w_wj.sum(axis=0)
    v_w, v_i, v_j = v_wi.sum(axis=1), v_wi.sum(axis=0), v_wj.sum(axis=0)
    # normal equations of value ~ c0 + c1 w + c2 i + c3 j over the kept voxels
    m = np.array(
        [
            [w_w.sum(), w_w @ w, w_i @ i, w_j @ j],
            [w_w @ w, w_w @ w**2, w @ w_wi @ i, w @ w_wj @ j],
            [w_i @ i, w @ w_wi @ i, w_i @ i**2, i @ w_ij @ j],
            [w_j @ j, w @ w_wj @ j, i @ w_ij @ j, w_j @ j**2],
        ]
    )
    rhs = np.array([v_w.sum(), v_w @ w, v_i @ i, v_j @ j])
    coef, *_ = np.linalg.lstsq(m, rhs, rcond=None)
    return (
        coef[0]
        + coef[1] * w[:, None, None]
        + coef[2] * i[None, :, None]
        + coef[3] * j[None, None, :]
    )


def _line_median(values: np.ndarray, axis: int) -> np.ndarray:
    """Upper median along one axis (kept as a length-1 axis), by one partition."""
    k = values.shape[axis] // 2
    return np.take(np.partition(values, k, axis=axis), [k], axis=axis)


def _profiles(
    volume: np.ndarray, usable: np.ndarray, level: float, noise: float, clip: float
) -> Background:
    """A plane plus the line profiles (pooled over nearby frames) that differ from it."""
    data = volume.astype(np.float64, copy=False)
    # Sparse counts (clip 5, the MAD = 0 rule): the residuals of a fitted model
    # are no longer discrete, so their MAD would be a fraction of the real
    # noise; such data keep the noise measured on the data themselves.
    discrete = clip == CLIP_SIGMA_SPARSE
    # Start from per-frame line medians (a ring 5 sigma high lies outside a
    # 3-sigma clip around a flat level, so clipped means alone would never
    # reach it); masked voxels read as the volume's level for this start only.
    filled = data if usable.all() else np.where(usable, data, level)
    columns = _line_median(filled, 1)
    model = columns + _line_median(filled - columns, 2)
    keep = usable & (np.abs(data - model) <= clip * noise)
    columns = rows = np.zeros((1, 1, 1))
    base = np.full(data.shape, level)
    for _ in range(PROFILE_ROUNDS):  # each round clipped around the last model
        if noise <= 0 or np.count_nonzero(keep) < _MIN_VOXELS:
            break
        base = _fit_plane(data - columns - rows, keep, level)
        dev = data - base
        columns = _line_means(dev - rows, keep, 1, noise)
        rows = _line_means(dev - columns, keep, 2, noise)
        model = base + columns + rows
        resid = data - model
        if discrete:
            offset, new_noise = 0.0, noise
        else:  # every other kept voxel: the MAD of thousands is within 1 % either way
            pool = resid[keep]
            offset, new_noise, clip = median_mad(pool[::2] if pool.size >= 4096 else pool)
        if new_noise <= 0:
            break
        keep = usable & (np.abs(resid - offset) <= clip * new_noise)
        noise = new_noise
    model = np.broadcast_to(model, data.shape)
    return Background(model, noise, keep, clip, np.broadcast_to(base, data.shape))


def _refine_profiles(volume: np.ndarray, usable: np.ndarray, start: Background) -> Background:
    """Plane and line profiles fitted once more without the excluded voxels (detection's
    second pass), clipped around the first model; its noise and clip width stay."""
    data = volume.astype(np.float64, copy=False)
    keep = usable & (np.abs(data - start.level) <= start.clip_sigma * start.noise)
    level = float(np.mean(start.level))
    base = _fit_plane(data, keep, level)
    dev = data - base
    columns = _line_means(dev, keep, 1, start.noise)
    rows = _line_means(dev - columns, keep, 2, start.noise)
    model = np.broadcast_to(base + columns + rows, data.shape)
    return Background(model, start.noise, keep, start.clip_sigma, np.broadcast_to(base, data.shape))
