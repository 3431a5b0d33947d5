"""Spot detection in one region volume.

The pipeline, all vectorised with numpy/scipy.ndimage (no loops over voxels):

1. Masked voxels: NaN in the volume marks a voxel without a measurement
   (detector gaps, dead pixels, ``frames.mask``); it is neither background nor
   spot (artifacts.py says how it is treated). Infinite values are refused.
2. Robust background model and noise (background.py): by default a plane plus
   per-frame profiles along each frame axis (it follows powder rings, diffuse
   scattering and a level changing with omega), clipped so that spots drop
   out; noise = 1.4826 * MAD of the clipped voxels; every degenerate volume
   (flat, noise-free, sparse counting, all masked) has a documented rule there.
3. Zingers and hot pixels (artifacts.py): voxels far above the detection cut
   with no support in their frame nor along omega, and pixels high in every
   frame with no support in the frame, are masked (and interpolated) before
   anything looks for spots; how many were rejected is on the `Detection`.
4. Optional Gaussian smoothing of the background-subtracted volume; the noise
   is then re-measured on the smoothed volume, so the threshold stays k sigma
   of what is actually thresholded.
5. Threshold at max(k * noise, threshold_abs) above the background; 3D
   connected components (faces by default); components with fewer than
   min_voxels measured voxels are dropped.
6. Splitting of touching spots (split.py): a local maximum becomes a spot of
   its own when its saddle to every higher maximum is deep enough. A small piece that is a
   zinger on a spot's flank is masked (artifacts.py).
7. Each spot's integration region is its mask grown by integration_margin
   voxels into unclaimed background: a threshold at 5 sigma cuts off ~10% of a
   Gaussian's integral, a margin of 2 brings that under 1% for peaks above
   ~30 sigma (faint spots keep a bias: about -2% at 15 sigma, -9% at 8 sigma).
8. The background is estimated again without the spots and their margins
   (a dense region's spot tails lift the first estimate), then features per
   spot (features.py) from vectorised moments: position, intensity and
   covariance over the integration region; n_voxels, bbox and peak over the
   detection mask.

The module is longer than most (about 600 lines) because `DetectParams`'
docstring is the user reference of every ``detection:`` key (docs/
configuration.md is generated from it) and `detect` runs the stages above in
order; each stage's own logic lives in background.py, artifacts.py, split.py
and features.py.

Omega: axis 0 of the volume is already in the region's window order (a window
that wraps through frame 0 is assembled contiguously by frames.py), so
detection treats omega like any other axis and needs no wrap handling.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from scipy import ndimage

from mpitrack.track.artifacts import find_artifacts, inpaint, zinger_pieces
from mpitrack.track.background import METHODS, Background, estimate_background, median_mad
from mpitrack.track.features import axis_names, build_spots, centre_errors, label_moments
from mpitrack.track.split import (
    DepthRule,
    kernel_sum_of_squares,
    label_maxima,
    split_all,
)
from mpitrack.track.spot import Spot

log = logging.getLogger(__name__)

_MARGINAL_PEAK = 2.0  # main-pass spots whose peak is below this x the cut are marginal

__all__ = [
    "Background",
    "DetectParams",
    "Detection",
    "detect",
    "detect_spots",
    "estimate_background",
    "validate_volume",
]


@dataclass(frozen=True)
class DetectParams:
    """Detection settings (the ``detection:`` section of the config).

    threshold_sigma: a voxel belongs to a spot when it is more than
        threshold_sigma x noise above the background (noise from the MAD).
    threshold_abs: minimum height above the background in intensity units; the
        cut is max(threshold_sigma * noise, threshold_abs). Not needed for
        noise-free or thresholded data (their noise has a rule of its own, see
        background.py); a floor for data whose noise is known to be higher
        than the volume shows.
    background: ``profiles`` (per omega frame, a profile along each frame axis:
        follows powder rings, diffuse scattering along 2theta and a level that
        changes with omega; the default), ``plane`` (a robust linear fit in
        omega, axis1, axis2) or ``median`` (one level per region volume).
    smoothing_sigma: Gaussian smoothing in voxels before thresholding and
        splitting (0 = none). Features are always measured on unsmoothed data.
    connectivity: neighbourhood of the connected components and of the split
        test's saddles, 1..3 as in scipy.ndimage.generate_binary_structure(3,
        connectivity) (1 = faces, 2 = +edges, 3 = +corners). A larger
        neighbourhood gives noise more paths around a saddle, so the split test
        separates fewer close pairs. Whatever it is, a split piece whose top
        voxel has a higher diagonal neighbour in another piece joins that piece:
        a spot whose core drifts diagonally from one omega frame to the next
        is one spot.
    min_voxels: spots with fewer measured voxels above the threshold are ignored.
    split: split touching spots that show separate maxima.
    split_min_prominence: a secondary maximum splits off when the saddle between
        it and any higher maximum is at least this fraction of its own height
        above the background (0.2 = saddle 20 % below the lower peak) ...
    split_min_depth_sigma: ... and at least this many noise sigmas deep, so
        that noise bumps on a bright spot never split it.
    gain: detector units per counted photon, for counting data (photon-counting
        detectors: 1.0); 0 = Gaussian noise only. With gain > 0 the noise at
        height h above the background is sqrt(noise**2 + gain * h) in the split
        test, so shot noise on bright spots does not split them.
    integration_margin: voxels by which each spot's mask is grown (into voxels
        no other spot claims) for integration and moments.
    max_spots: guard against a threshold that lets noise through: only the
        max_spots brightest spots are kept (with a warning).
    faint_smoothing_sigma: a second, matched-filter pass for faint spots
        (0 = off): the volume smoothed with this Gaussian sigma (voxels) is
        thresholded at faint_threshold_sigma x its own noise. A component
        that touches no strong spot of the main pass (peak at least twice the
        main cut) nor its integration margin is split with the split rule
        against the smoothed noise, and each piece becomes a spot, replacing
        the main-pass spots inside it (marginal pieces of the same faint
        spot; two such pieces stay two spots). With zinger rejection
        on, a piece that only its brightest voxel lifts over the cut is a
        zinger. Smoothing a spot of sigma ~1 voxel with sigma 1 raises its
        peak SNR about 2.5x, so a peak-SNR-6 spot that a 5-sigma cut on raw
        voxels barely touches is found reliably, and two such spots closer
        than the raw cut can separate stay two, while bright spots keep the
        sharper masks (and splits) of the main pass; features are measured on
        unsmoothed data either way (docs/detection.md, "Faint spots").
    faint_threshold_sigma: threshold of the faint pass, in noise sigmas of the
        smoothed volume.
    zinger_ratio: zinger and hot-pixel rejection (0 = off). A voxel more than
        max(threshold_sigma, zinger_ratio) noise sigmas above the background is
        a zinger when it is more than zinger_ratio times its support in its
        omega frame (its 8 neighbours summed without the 2 highest, so a streak
        of 3 is still a zinger) and along omega (the mean of the same pixel in
        the frames before and after); a pixel whose lowest value over omega is
        more than zinger_ratio times its in-frame support is a hot pixel; a
        detected piece whose peak frame holds at most 3 of its voxels and whose
        peak is zinger_ratio times its omega support is a zinger on a spot's
        flank. All are masked (docs/detection.md). Real spots stay below 4,
        including the sharp ESRF spots of the si-id11 data; raise it for a
        detector whose spots are sharper than one pixel and one omega frame.
    """

    threshold_sigma: float = 5.0
    threshold_abs: float = 0.0
    background: Literal["profiles", "plane", "median"] = "profiles"
    smoothing_sigma: float = 0.0
    connectivity: int = 1
    min_voxels: int = 3
    split: bool = True
    split_min_prominence: float = 0.2
    split_min_depth_sigma: float = 3.0
    gain: float = 0.0
    integration_margin: int = 2
    max_spots: int = 200
    faint_smoothing_sigma: float = 1.0
    faint_threshold_sigma: float = 5.0
    zinger_ratio: float = 10.0

    def __post_init__(self) -> None:
        problems = []
        if not self.threshold_sigma > 0:
            problems.append(f"threshold_sigma {self.threshold_sigma} must be > 0")
        if not self.threshold_abs >= 0:
            problems.append(f"threshold_abs {self.threshold_abs} must be >= 0")
        if self.background not in METHODS:
            problems.append(f"background {self.background!r} must be one of {', '.join(METHODS)}")
        if not self.smoothing_sigma >= 0:
            problems.append(f"smoothing_sigma {self.smoothing_sigma} must be >= 0")
        if self.connectivity not in (1, 2, 3):
            problems.append(f"connectivity {self.connectivity} must be 1, 2 or 3")
        if self.min_voxels < 1:
            problems.append(f"min_voxels {self.min_voxels} must be >= 1")
        if not 0 <= self.split_min_prominence < 1:
            problems.append(f"split_min_prominence {self.split_min_prominence} must be in [0, 1)")
        if not self.gain >= 0:
            problems.append(f"gain {self.gain} must be >= 0")
        if not self.split_min_depth_sigma >= 0:
            problems.append(f"split_min_depth_sigma {self.split_min_depth_sigma} must be >= 0")
        if self.integration_margin < 0:
            problems.append(f"integration_margin {self.integration_margin} must be >= 0")
        if self.max_spots < 1:
            problems.append(f"max_spots {self.max_spots} must be >= 1")
        if not self.faint_smoothing_sigma >= 0:
            problems.append(f"faint_smoothing_sigma {self.faint_smoothing_sigma} must be >= 0")
        if not self.faint_threshold_sigma > 0:
            problems.append(f"faint_threshold_sigma {self.faint_threshold_sigma} must be > 0")
        if not (self.zinger_ratio == 0 or self.zinger_ratio > 1):
            problems.append(f"zinger_ratio {self.zinger_ratio} must be 0 (off) or > 1")
        if problems:
            raise ValueError("; ".join(problems))


@dataclass(frozen=True)
class Detection:
    """Everything one detection pass found, for diagnostics, plots and job logs.

    spots: the detected spots, brightest first.
    background: the background model.
    noise: noise sigma of the volume that was thresholded (smoothed if smoothing).
    threshold: the cut above the background, in the units of that volume.
    labels: int32 volume, 0 = background, i = voxels above the threshold of
        spots[i - 1] (the detection mask, without the integration margin).
    masked_voxels: voxels without a measurement (NaN in the volume).
    zingers: zinger hits rejected (see artifacts.py).
    hot_pixels: hot pixels rejected (each in every omega frame).
    """

    spots: list[Spot]
    background: Background
    noise: float
    threshold: float
    labels: np.ndarray = field(repr=False)
    masked_voxels: int = 0
    zingers: int = 0
    hot_pixels: int = 0


def validate_volume(volume: np.ndarray) -> np.ndarray:
    """The volume as a float array (NaN = masked voxel), or ValueError saying what is wrong.

    Infinite values are refused instead of guessed at: the frame loader already
    rejects them, so one here is a bug upstream worth hearing about.
    """
    arr = np.asarray(volume)
    if arr.ndim != 3:
        raise ValueError(f"volume must be 3D (n_omega, n1, n2), got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"volume is empty: shape {arr.shape}")
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"volume must be real numbers, got dtype {arr.dtype}")
    if arr.dtype.kind != "f":
        arr = arr.astype(np.float64)
    n_inf = int(np.count_nonzero(np.isinf(arr)))
    if n_inf:
        raise ValueError(
            f"volume has {n_inf} infinite voxels of {arr.size}, shape {arr.shape}; "
            "detection refuses to guess their values (NaN marks a masked voxel)"
        )
    return arr


@functools.lru_cache(maxsize=32)
def _smoothing_noise_gain(shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Per-voxel factor by which Gaussian smoothing (mode "nearest") scales white noise.

    The filter is separable and linear, so along each axis it is a matrix W
    (filtering the identity gives its columns) and the noise gain at index i is
    sqrt(sum_j W[i, j]**2); the 3D gain is the outer product of the three.
    Cached per (shape, sigma): regions keep their shape from scan to scan.
    The returned array is read-only (shared by every caller).
    """
    gains = []
    for n in shape:
        w = ndimage.gaussian_filter1d(np.eye(n), sigma, axis=0, mode="nearest")
        gains.append(np.sqrt(np.sum(w * w, axis=1)))
    out = gains[0][:, None, None] * gains[1][None, :, None] * gains[2][None, None, :]
    out.setflags(write=False)
    return out


def _grow(labels: np.ndarray, margin: int, objects: list[tuple[slice, ...]]) -> np.ndarray:
    """Labels grown by margin voxels (cube neighbourhood) into unlabelled voxels.

    objects: the labels' bounding boxes (ndimage.find_objects); the work is
    done on their union only. Each step claims only voxels no spot holds yet,
    so a voxel goes to the spot whose mask is fewest steps away; a tie goes to
    the higher label.
    """
    objects = [s for s in objects if s is not None]
    if margin == 0 or not objects:
        return labels
    lo = [max(0, min(s[k].start for s in objects) - margin) for k in range(3)]
    hi = [min(labels.shape[k], max(s[k].stop for s in objects) + margin) for k in range(3)]
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    crop = labels[box].copy()
    for _ in range(margin):
        grown = ndimage.maximum_filter(crop, size=3, mode="constant", cval=0)
        crop = np.where(crop == 0, grown, crop)
    out = labels.copy()
    out[box] = crop
    return out


#: Zero noise (a constant, noise-free or thresholded volume) is floored at this
#: fraction of the volume's largest absolute value: float32 resolution, the
#: precision of 16-bit frames and of sums computed in float32, so that rounding
#: dust (and a renderer's truncated tails) is never a spot, whatever the dtype.
ZERO_NOISE_FLOOR = float(np.finfo(np.float32).eps)


def _floor(noise: float, scale: float) -> float:
    """The noise sigma, at least ZERO_NOISE_FLOOR x scale."""
    return max(noise, ZERO_NOISE_FLOOR * scale)


def detect(
    volume: np.ndarray,
    params: DetectParams | None = None,
    axes: tuple[str, str] = ("eta", "tth"),
    *,
    origin: Mapping[str, float] | None = None,
    step: Mapping[str, float] | None = None,
) -> Detection:
    """Detect the spots of one region volume and return them with diagnostics.

    volume: shape (n_omega, n1, n2), real; NaN marks a masked voxel, an
        infinite value is a ValueError. Every other volume gives a result
        (a volume without a measured voxel gives no spots).
    axes: names of the two frame axes (features are keyed "omega", *axes).
    origin, step: optional per-axis physical origin/step (degrees), keyed by
        axis name, for the ``physical`` features.
    """
    params = params or DetectParams()
    names = axis_names(axes)
    arr = validate_volume(volume)
    shape = arr.shape
    measured = ~np.isnan(arr)
    n_masked = arr.size - int(np.count_nonzero(measured))
    data = arr.astype(np.float64) if n_masked == 0 else np.where(measured, arr, 0.0)
    if n_masked == arr.size:
        nothing = Background(0.0, 0.0, np.zeros(shape, dtype=bool))
        return Detection([], nothing, 0.0, 0.0, np.zeros(shape, dtype=np.int32), n_masked)
    usable = None if n_masked == 0 else measured
    background = estimate_background(data, params.background, measured=usable)
    scale = max(float(np.max(np.abs(data))), 1e-300)
    raw_noise = _floor(background.noise, scale)
    resid = data - background.level
    if usable is not None:
        resid[~measured] = 0.0
    zingers = hot_pixels = 0
    if params.zinger_ratio > 0:
        cut = max(
            params.threshold_sigma * raw_noise,
            params.zinger_ratio * raw_noise,
            params.threshold_abs,
        )
        artifacts = find_artifacts(resid, cut, params.zinger_ratio)
        if artifacts.zingers or artifacts.hot_pixels:
            zingers, hot_pixels = artifacts.zingers, artifacts.hot_pixels
            measured = measured & ~artifacts.voxels
            usable = measured
            log.debug("masked %d zinger hits and %d hot pixels", zingers, hot_pixels)
    if usable is not None:
        resid = inpaint(resid, measured)
    gain_map: np.ndarray | None = None
    if params.smoothing_sigma > 0:
        det, noise, gain_map = _smoothed(resid, background, measured, params.smoothing_sigma)
    else:
        det = resid
        noise = raw_noise
    noise = _floor(noise, scale)
    threshold = max(params.threshold_sigma * noise, params.threshold_abs)

    def empty() -> Detection:
        labels = np.zeros(shape, dtype=np.int32)
        return Detection([], background, noise, threshold, labels, n_masked, zingers, hot_pixels)

    structure = ndimage.generate_binary_structure(3, params.connectivity)
    above = det > (threshold if gain_map is None else threshold * gain_map)
    labels, n = ndimage.label(above, structure)
    faint = params.faint_smoothing_sigma > 0 and params.faint_smoothing_sigma != (
        params.smoothing_sigma
    )
    if n == 0 and not faint:
        return empty()
    sizes = _measured_sizes(labels, n, measured, usable is not None)
    keep = sizes >= params.min_voxels
    if not keep.any() and not faint:
        return empty()
    lut = np.zeros(n + 1, dtype=np.int32)
    lut[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    labels = lut[labels]
    n = int(keep.sum())

    if params.split and n > 0:
        shot = params.gain * kernel_sum_of_squares(params.smoothing_sigma)
        rule = DepthRule(params.split_min_prominence, params.split_min_depth_sigma, noise, shot)
        labels, n = split_all(labels, n, det, structure, threshold, rule, params.min_voxels)

    if params.zinger_ratio > 0 and n > 0:
        hits, zapped = zinger_pieces(labels, n, resid, params.zinger_ratio)
        if hits.any():
            measured = measured & ~zapped
            usable = measured
            resid = inpaint(resid, measured)
            zingers += int(np.count_nonzero(hits))
            lut = np.zeros(n + 1, dtype=np.int32)
            lut[~hits] = np.arange(int(np.count_nonzero(~hits)), dtype=np.int32)
            labels, n = lut[labels], int(np.count_nonzero(~hits[1:]))

    if faint:
        labels, n, faint_above, spikes = _faint_pass(
            resid, background, measured, labels, n, params, structure, det, threshold
        )
        above = above | faint_above
        zingers += spikes
        if n == 0:
            return empty()

    if n > params.max_spots:
        brightness = ndimage.sum_labels(det, labels, index=np.arange(1, n + 1))
        keep_ids = np.sort(np.argsort(brightness)[::-1][: params.max_spots]) + 1
        log.warning(
            "%d spots above threshold %.4g, keeping the %d brightest (detection.max_spots)",
            n,
            threshold,
            params.max_spots,
        )
        lut = np.zeros(n + 1, dtype=np.int32)
        lut[keep_ids] = np.arange(1, keep_ids.size + 1, dtype=np.int32)
        labels = lut[labels]
        n = int(keep_ids.size)

    boxes = ndimage.find_objects(labels, max_label=n)
    region = _grow(labels, params.integration_margin, boxes)
    # Second background pass without the spots (see estimate_background).
    background = estimate_background(
        data,
        params.background,
        measured=usable,
        exclude=(region > 0) | above,
        start=background,
    )
    resid = data - background.level
    if usable is not None:
        resid[~measured] = 0.0
        resid = inpaint(resid, measured)
    raw_noise = _floor(background.noise, scale)
    moments = label_moments(region, resid, n)
    n_voxels = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    peaks = label_maxima(resid, labels, n)
    bboxes = np.array([[(s.start, s.stop - 1) for s in box] for box in boxes], dtype=np.int64)
    unmeasured = (
        np.zeros(n, dtype=np.int64)
        if usable is None
        else np.bincount(region[~measured], minlength=n + 1)[1:]
    )

    good = moments.total > 0
    if not good.all():
        log.debug("dropping %d spots with integrated intensity <= 0", int((~good).sum()))
    # Brightest first; labels renumbered to match the spot order.
    ids = np.flatnonzero(good)
    ids = ids[np.argsort(-moments.total[ids], kind="stable")]
    spots = build_spots(
        positions=moments.mean[ids],
        covariances=moments.covariance[ids],
        intensities=moments.total[ids],
        peaks=peaks[ids],
        n_voxels=n_voxels[ids],
        bboxes=bboxes[ids],
        shape=shape,
        axes=names[1:],
        noise=raw_noise,
        origin=origin,
        step=step,
        position_errors=centre_errors(moments.spread[ids], moments.total[ids], raw_noise),
        intensity_errors=raw_noise * np.sqrt(moments.count[ids]),
        masked_voxels=unmeasured[ids],
    )
    lut = np.zeros(n + 1, dtype=np.int32)
    lut[ids + 1] = np.arange(1, ids.size + 1, dtype=np.int32)
    return Detection(
        spots=spots,
        background=background,
        noise=noise,
        threshold=threshold,
        labels=lut[labels],
        masked_voxels=n_masked,
        zingers=zingers,
        hot_pixels=hot_pixels,
    )


def _measured_sizes(labels: np.ndarray, n: int, measured: np.ndarray, masked: bool) -> np.ndarray:
    """Measured voxels per label 0..n (label 0 counted as 0): masked voxels never make a spot."""
    lab = labels[measured] if masked else labels.ravel()
    sizes = np.bincount(lab, minlength=n + 1)
    sizes[0] = 0
    return sizes


def _smoothed(
    resid: np.ndarray, background: Background, measured: np.ndarray, sigma: float
) -> tuple[np.ndarray, float, np.ndarray]:
    """Smoothed residual, its interior noise and the per-voxel noise gain.

    Near the faces the filter reuses edge voxels, so the smoothed noise is
    larger there (x1.5 in a corner at sigma 1.5): the noise is measured in
    units of the local noise gain and the threshold is gain x noise. The level
    is measured again after smoothing: for skewed (counting) noise the smoothed
    background sits at the mean, not at the raw median. The noise comes from
    the background voxels, or from every measured voxel when the final clip
    left none (an exactly flat volume).
    """
    det = ndimage.gaussian_filter(resid, sigma, mode="nearest")
    gain_map = _smoothing_noise_gain(resid.shape, sigma)
    scaled = det / gain_map
    pool = scaled[background.is_background]
    if pool.size == 0:
        pool = scaled[measured]
    det_level, z_noise, _ = median_mad(pool)
    det = det - det_level * gain_map
    interior = float(np.min(gain_map))
    return det, z_noise * interior, gain_map / interior


def _faint_pass(
    resid: np.ndarray,
    background: Background,
    measured: np.ndarray,
    labels: np.ndarray,
    n: int,
    params: DetectParams,
    structure: np.ndarray,
    main_det: np.ndarray,
    main_threshold: float,
) -> tuple[np.ndarray, int, np.ndarray, int]:
    """Add the components of the smoothed volume that no main-pass spot explains.

    Returns the new labels (faint spots numbered after the main ones), their
    count, the smoothed pass's above-threshold mask (kept out of the
    background re-estimate) and how many components were refused as one
    voxel's spike (`_carried_by_one_voxel`).
    """
    det, noise, gain_map = _smoothed(resid, background, measured, params.faint_smoothing_sigma)
    noise = _floor(noise, max(float(np.max(np.abs(resid))), 1e-300))
    cut = max(params.faint_threshold_sigma * noise, params.threshold_abs)
    above = det > cut * gain_map
    faint, m = ndimage.label(above, structure)
    if m == 0:
        return labels, n, above, 0
    # main-pass spots that barely cross the raw cut (peak < 2x the cut) are
    # marginal detections of the same faint spots: the smoothed component
    # replaces them (a narrow but bright spot has few voxels, yet a high peak)
    strong = np.zeros(n + 1, dtype=bool)
    if n:
        strong[1:] = label_maxima(main_det, labels, n) >= _MARGINAL_PEAK * main_threshold
    strong_labels = np.where(strong[labels], labels, 0)
    claimed = _grow(
        strong_labels, params.integration_margin, ndimage.find_objects(strong_labels, max_label=n)
    )
    touched = np.zeros(m + 1, dtype=bool)
    touched[np.unique(faint[claimed > 0])] = True
    free = np.flatnonzero(~touched[1:]) + 1
    if params.split and free.size:
        # The main pass's split rule, against the smoothed noise: two spots
        # too faint for the raw cut are still two when smoothing joins them.
        # A component that holds a strong spot is refused whole below, so it
        # is not split (the split is most of this pass's cost).
        shot = params.gain * kernel_sum_of_squares(params.faint_smoothing_sigma)
        rule = DepthRule(params.split_min_prominence, params.split_min_depth_sigma, noise, shot)
        compact = np.zeros(m + 1, dtype=faint.dtype)
        compact[free] = np.arange(1, free.size + 1)
        parts = compact[faint]
        split, k = split_all(parts, free.size, det, structure, cut, rule, params.min_voxels)
        if k > free.size:  # new pieces are numbered after the components
            back = np.concatenate([[0], free, np.arange(m + 1, m + 1 + k - free.size)])
            faint = np.where(split > 0, back[split], faint)
            touched = np.concatenate([touched, np.zeros(k - free.size, dtype=bool)])
            m += k - free.size
    # a component holding two or more marginal spots keeps them (two small
    # spots that smoothing joins are still two)
    both = (faint > 0) & (labels > 0)
    keys = np.unique(faint[both].astype(np.int64) * (n + 1) + labels[both])
    touched |= np.bincount(keys // (n + 1), minlength=m + 1) >= 2
    sizes = _measured_sizes(faint, m, measured, not measured.all())
    new = np.flatnonzero(~touched & (sizes >= params.min_voxels))
    new = new[new > 0]
    spike = np.zeros(new.size, dtype=bool)
    if params.zinger_ratio > 0:  # zinger rejection is on
        spike = _carried_by_one_voxel(
            resid, det, faint, new, params.faint_smoothing_sigma, cut, gain_map
        )
        new = new[~spike]
    if new.size == 0:
        return labels, n, above, int(spike.sum())
    accepted = np.zeros(m + 1, dtype=bool)
    accepted[new] = True
    replaced = np.unique(labels[(labels > 0) & accepted[faint]])
    keep = np.ones(n + 1, dtype=bool)
    keep[replaced] = False
    keep[0] = False
    lut_main = np.zeros(n + 1, dtype=np.int32)
    kept = int(keep.sum())
    lut_main[keep] = np.arange(1, kept + 1, dtype=np.int32)
    lut = np.zeros(m + 1, dtype=np.int32)
    lut[new] = np.arange(kept + 1, kept + 1 + new.size, dtype=np.int32)
    relabelled = lut_main[labels]
    out = np.where(accepted[faint], lut[faint], relabelled).astype(labels.dtype)
    return out, kept + int(new.size), above, int(spike.sum())


def _carried_by_one_voxel(
    resid: np.ndarray,
    det: np.ndarray,
    faint: np.ndarray,
    ids: np.ndarray,
    sigma: float,
    cut: float,
    gain_map: np.ndarray,
) -> np.ndarray:
    """Per faint component in ``ids``: whether only its brightest voxel lifts it over the cut.

    Smoothing spreads one voxel over its neighbours: a zinger too weak for
    the artifact test (tens of noise sigmas, next to noisy neighbours) makes a
    smoothed bump above the faint cut, a dozen voxels wide. A spot spans
    several voxels and frames, so its smoothed peak less the brightest
    voxel's share (that voxel times the kernel's weight at their offset)
    still passes the cut; a spike's does not.
    """
    out = np.zeros(ids.size, dtype=bool)
    if ids.size == 0:
        return out
    radius = int(4.0 * sigma + 0.5)  # scipy's gaussian_filter support (truncate 4)
    norm = float(np.sum(np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)))
    boxes = ndimage.find_objects(faint)
    for k, lab in enumerate(ids.tolist()):
        box = boxes[lab - 1]
        mine = faint[box] == lab
        top = np.unravel_index(int(np.argmax(np.where(mine, det[box], -np.inf))), mine.shape)
        spike = np.unravel_index(int(np.argmax(np.where(mine, resid[box], -np.inf))), mine.shape)
        offset = np.subtract(top, spike)
        if np.any(np.abs(offset) > radius):
            continue
        weight = float(np.prod(np.exp(-0.5 * (offset / sigma) ** 2) / norm))
        rest = det[box][top] - max(float(resid[box][spike]), 0.0) * weight
        out[k] = rest <= cut * gain_map[box][top]
    return out


def detect_spots(
    volume: np.ndarray,
    params: DetectParams | None = None,
    axes: tuple[str, str] = ("eta", "tth"),
    *,
    origin: Mapping[str, float] | None = None,
    step: Mapping[str, float] | None = None,
) -> list[Spot]:
    """The spots of one region volume, brightest first (see `detect` for details).

    volume: shape (n_omega, n1, n2) in window order (omega wrap is already
    resolved by the volume assembly, so none is handled here); NaN marks a
    masked voxel. Raises ValueError for an empty, non-3D or non-real volume or
    one with infinite values; a constant volume has zero noise and no spots.
    """
    return detect(volume, params, axes, origin=origin, step=step).spots
