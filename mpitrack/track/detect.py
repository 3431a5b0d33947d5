"""Spot detection in one region volume.

The pipeline, all vectorised with numpy/scipy.ndimage (no loops over voxels):

1. Robust background and noise: sigma-clipped median (or a sigma-clipped plane
   in (omega, axis1, axis2)) and noise = 1.4826 * MAD of the clipped voxels.
   Spots are a minority of a region's voxels, so clipping them leaves the
   background statistics of the rest.
2. Optional Gaussian smoothing of the background-subtracted volume; the noise
   is then re-measured on the smoothed volume, so the threshold stays k sigma
   of what is actually thresholded.
3. Threshold at max(k * noise, threshold_abs) above the background; 3D
   connected components; components smaller than min_voxels are dropped.
4. Splitting of touching spots, an h-maxima (persistence) test: a local
   maximum of the (smoothed) volume becomes a spot of its own when the saddle
   to every higher maximum is at least max(split_min_prominence * its height,
   split_min_depth_sigma * noise at that height) below it. A cheap pre-test (one level-set
   labelling per high enough maximum, on the component's bounding box) leaves
   most components alone; the others get basins by steepest ascent (a
   discrete watershed, vectorised with pointer jumping) and a Kruskal merge of
   the small basin graph from the highest saddle down. A weak maximum hands
   its basin to the basin across its highest saddle, so a noise bump on the
   flank of the second spot joins the second spot, and every voxel of the
   blob goes to exactly one spot. (scipy.ndimage.watershed_ift was tried: it
   gave most of a two-peak blob to one seed. scikit-image is not a dependency.)
5. Each spot's integration region is its mask grown by integration_margin
   voxels into unclaimed background: a threshold at 5 sigma cuts off ~10% of a
   Gaussian's integral, a margin of 2 brings that under 1% for peaks above
   ~30 sigma (faint spots keep a bias: about -2% at 15 sigma, -9% at 8 sigma).
6. The background is estimated again without the spots and their margins
   (a dense region's spot tails lift the first estimate), then features per
   spot (features.py) from vectorised moments: position, intensity and
   covariance over the integration region; n_voxels, bbox and peak over the
   detection mask.

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

from mpitrack.track.features import axis_names, build_spots, centre_errors, label_moments
from mpitrack.track.spot import Spot

log = logging.getLogger(__name__)

MAD_TO_SIGMA = 1.4826
_CLIP_SIGMA = 3.0
_CLIP_SIGMA_SPARSE = 5.0
_CLIP_ITERATIONS = 3
_MARGINAL_PEAK = 2.0  # main-pass spots whose peak is below this x the cut are marginal


@dataclass(frozen=True)
class DetectParams:
    """Detection settings (the ``detection:`` section of the config).

    threshold_sigma: a voxel belongs to a spot when it is more than
        threshold_sigma x noise above the background (noise from the MAD).
    threshold_abs: minimum height above the background in intensity units; the
        cut is max(threshold_sigma * noise, threshold_abs). Needed for
        noise-free (synthetic) data, where the noise estimate is ~0.
    background: ``median`` (one level per region volume) or ``plane`` (a robust
        linear fit in omega, axis1, axis2, for a sloping background).
    smoothing_sigma: Gaussian smoothing in voxels before thresholding and
        splitting (0 = none). Features are always measured on unsmoothed data.
    connectivity: neighbourhood of the connected components, 1..3 as in
        scipy.ndimage.generate_binary_structure(3, connectivity)
        (1 = faces, 2 = +edges, 3 = +corners).
    min_voxels: spots with fewer voxels above the threshold are ignored.
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
        thresholded at faint_threshold_sigma x its own noise, and every
        component that touches no spot of the main pass (nor its integration
        margin) becomes a spot too, replacing a main-pass spot inside it whose
        peak is below twice the main cut (a marginal piece of the same faint
        spot; two such pieces stay two spots). Smoothing a spot of sigma ~1 voxel with sigma
        1 raises its peak SNR about 2.5x, so a peak-SNR-6 spot that a 5-sigma
        cut on raw voxels barely touches is found reliably, while
        bright spots keep the sharper masks (and splits) of the main pass;
        features are measured on unsmoothed data either way.
    faint_threshold_sigma: threshold of the faint pass, in noise sigmas of the
        smoothed volume.
    """

    threshold_sigma: float = 5.0
    threshold_abs: float = 0.0
    background: Literal["median", "plane"] = "median"
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

    def __post_init__(self) -> None:
        problems = []
        if not self.threshold_sigma > 0:
            problems.append(f"threshold_sigma {self.threshold_sigma} must be > 0")
        if not self.threshold_abs >= 0:
            problems.append(f"threshold_abs {self.threshold_abs} must be >= 0")
        if self.background not in ("median", "plane"):
            problems.append(f"background {self.background!r} must be 'median' or 'plane'")
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
        if problems:
            raise ValueError("; ".join(problems))


@dataclass(frozen=True)
class Background:
    """The background model of one volume.

    level: background value, a float (median) or an array broadcastable to the
        volume (plane).
    noise: noise sigma of the raw volume (MAD-based, clipped).
    is_background: voxels used for the final estimate (not clipped as signal).
    clip_sigma: the clip width the estimate ended with (3, or 5 for sparse counts).
    """

    level: float | np.ndarray
    noise: float
    is_background: np.ndarray
    clip_sigma: float = _CLIP_SIGMA


@dataclass(frozen=True)
class Detection:
    """Everything one detection pass found, for diagnostics and plots.

    spots: the detected spots, brightest first.
    background: the background model.
    noise: noise sigma of the volume that was thresholded (smoothed if smoothing).
    threshold: the cut above the background, in the units of that volume.
    labels: int32 volume, 0 = background, i = voxels above the threshold of
        spots[i - 1] (the detection mask, without the integration margin).
    """

    spots: list[Spot]
    background: Background
    noise: float
    threshold: float
    labels: np.ndarray = field(repr=False)


def validate_volume(volume: np.ndarray) -> np.ndarray:
    """The volume as a float array, or ValueError saying what is wrong with it.

    Detection refuses non-finite voxels instead of guessing: the frame loader
    already rejects them, so one here is a bug upstream worth hearing about.
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
    finite = np.isfinite(arr)
    n_bad = arr.size - int(np.count_nonzero(finite))
    if n_bad == arr.size:
        raise ValueError(f"volume has no finite values (shape {arr.shape})")
    if n_bad:
        raise ValueError(
            f"volume has {n_bad} non-finite voxels (NaN/inf) of {arr.size}, shape {arr.shape}; "
            "detection refuses to guess their values"
        )
    return arr


def _label_maxima(values: np.ndarray, labels: np.ndarray, n: int) -> np.ndarray:
    """Maximum of values over each label 1..n (every label present).

    Sorts only the labelled voxels; scipy.ndimage.maximum sorts the whole volume.
    """
    idx = np.flatnonzero(labels)
    lab = labels.ravel()[idx]
    order = np.argsort(lab, kind="stable")
    starts = np.searchsorted(lab[order], np.arange(1, n + 1))
    return np.maximum.reduceat(values.ravel()[idx[order]].astype(np.float64), starts)


def _median(values: np.ndarray) -> float:
    """Median by one partition (the upper median for an even count).

    np.median also partitions to look for NaN and averages the two middle
    values; the data are validated finite and the gap between the two middle
    values of thousands of voxels is far below the noise, so this is the same
    estimate at about half the cost.
    """
    k = values.size // 2
    return float(np.partition(values, k)[k])


def _median_mad(values: np.ndarray) -> tuple[float, float, float]:
    """Level, noise sigma and clip width (in sigmas) for the next clipping pass.

    Normally the median, 1.4826 * MAD and a 3-sigma clip. Sparse counting data
    (photon-counting detectors: mostly 0, some 1 and 2) have more than half the
    voxels at the median, so the MAD is 0 although the noise is not, and the
    median (0) is below the mean that spots sit on (an integration bias of
    mean x voxels). Mean and standard deviation are the fallback then, with a
    5-sigma clip because such noise is skewed: a 3-sigma clip would cut its
    real upper tail and pull the level down. Both are 0 only for a constant volume.
    """
    med = _median(values)
    mad = _median(np.abs(values - med))
    if mad > 0:
        return med, MAD_TO_SIGMA * mad, _CLIP_SIGMA
    return float(np.mean(values)), float(np.std(values)), _CLIP_SIGMA_SPARSE


def estimate_background(
    volume: np.ndarray,
    method: str = "median",
    *,
    exclude: np.ndarray | None = None,
    start: Background | None = None,
) -> Background:
    """Sigma-clipped background level and noise sigma of a finite 3D volume.

    Without ``start``, the estimate comes from every 4th voxel (a volume of
    4096 voxels or more), clipped |x - level| <= 3 noise (5 for sparse counts,
    see `_median_mad`) up to three times
    until level and noise move by less than 2 % of the noise: enough for a
    threshold, at a quarter of the work. With ``start`` (detection's second
    pass, spots excluded) one clipped pass over all remaining voxels gives the
    level that intensities are measured against. The MAD of a 3-sigma clipped
    Gaussian is within 1 % of the unclipped one: no correction factor.

    exclude: voxels known to be signal (detected spots with their margins);
        detection re-estimates with them excluded, because a dense region's
        faint spot tails otherwise lift the level by a tenth of a sigma or more,
        which integrates into a visible intensity bias.
    start: an earlier estimate to start the clipping from instead of the
        subsample (``median`` only; a plane is always refitted from the data).
    ``plane``: a least-squares plane in (omega, axis1, axis2) on the clipped
    voxels, re-clipped on its residual.
    """
    flat = volume.ravel()
    allowed = None if exclude is None else ~np.asarray(exclude, dtype=bool).ravel()
    if allowed is not None and np.count_nonzero(allowed) < 8:
        allowed = None  # (almost) everything is signal: fall back to all voxels
    pool = flat if allowed is None else flat[allowed]
    iterations = _CLIP_ITERATIONS
    if start is not None and start.noise > 0 and method == "median":
        level, noise, clip = float(np.mean(start.level)), start.noise, start.clip_sigma
        iterations = 1
    else:
        if pool.size >= 4096:
            pool = pool[::4]
        level, noise, clip = _median_mad(pool)
    for _ in range(iterations):
        if noise <= 0:
            break
        kept = pool[np.abs(pool - level) <= clip * noise]
        if kept.size < 8:
            break
        new_level, new_noise, clip = _median_mad(kept)
        converged = max(abs(new_level - level), abs(new_noise - noise)) <= 0.02 * noise
        level, noise = new_level, new_noise
        if converged:
            break
    keep = np.abs(flat - level) <= clip * noise
    if allowed is not None:
        keep &= allowed
    if method == "median":
        return Background(level, noise, keep.reshape(volume.shape), clip)
    if method != "plane":
        raise ValueError(f"unknown background method {method!r}")
    coords = np.indices(volume.shape, dtype=np.float64).reshape(3, -1)
    design = np.vstack([np.ones(flat.size), coords]).T
    plane = np.full(flat.size, level)
    for _ in range(_CLIP_ITERATIONS):
        if np.count_nonzero(keep) < 8:
            break
        coef, *_ = np.linalg.lstsq(design[keep], flat[keep], rcond=None)
        plane = design @ coef
        resid = flat - plane
        offset, noise, clip = _median_mad(resid[keep])
        if noise <= 0:
            break
        new_keep = np.abs(resid - offset) <= clip * noise
        if allowed is not None:
            new_keep &= allowed
        if np.array_equal(new_keep, keep):
            break
        keep = new_keep
    return Background(plane.reshape(volume.shape), noise, keep.reshape(volume.shape), clip)


@dataclass(frozen=True)
class _DepthRule:
    """How deep the saddle below a maximum of height h must be for it to split off.

    max(prominence * h, depth_sigma * sqrt(noise**2 + shot * h)): relative to the
    peak, and significant against the noise at that height. ``shot`` is the
    counting-statistics variance per unit of height (gain x the smoothing
    kernel's sum of squares); without it, shot noise on a bright spot of
    counted photons carves saddles deep enough to split it.
    """

    prominence: float
    depth_sigma: float
    noise: float
    shot: float

    def __call__(self, height: np.ndarray) -> np.ndarray:
        sigma = np.sqrt(self.noise**2 + self.shot * np.maximum(height, 0.0))
        return np.maximum(self.prominence * height, self.depth_sigma * sigma)


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


def _kernel_sum_of_squares(sigma: float) -> float:
    """Sum of the squared weights of the 3D smoothing kernel (1 without smoothing).

    Smoothing averages independent shot noise: its variance shrinks by this factor.
    """
    if sigma <= 0:
        return 1.0
    size = 2 * int(4 * sigma + 0.5) + 1
    delta = np.zeros((size, size, size))
    delta[(size // 2,) * 3] = 1.0
    kernel = ndimage.gaussian_filter(delta, sigma, mode="constant")
    return float(np.sum(kernel * kernel))


def _steepest_ascent(det: np.ndarray, comp: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """For every voxel of comp, the flat index of the local maximum its steepest ascent reaches.

    Each voxel points to its highest neighbour inside comp when that one is
    strictly higher (else to itself); pointer jumping then follows the chains
    in log(path length) vectorised steps. The basins this defines are a
    discrete watershed of the component. Voxels outside comp point to themselves.
    """
    shape = det.shape
    padded = np.full(tuple(n + 2 for n in shape), -np.inf)
    inner = (slice(1, -1),) * 3
    padded[inner] = np.where(comp, det, -np.inf)
    best = padded[inner].copy()
    index = np.arange(det.size).reshape(shape)
    target = index.copy()
    strides = np.array([shape[1] * shape[2], shape[2], 1])
    for offset in offsets:
        view = padded[tuple(slice(1 + o, 1 + o + n) for o, n in zip(offset, shape, strict=True))]
        better = (view > best) & comp
        best = np.where(better, view, best)
        target = np.where(better, index + int(offset @ strides), target)
    ptr = target.ravel()
    while True:
        nxt = ptr[ptr]
        if np.array_equal(nxt, ptr):
            return ptr
        ptr = nxt


def _basin_edges(
    basin: np.ndarray, det: np.ndarray, offsets: np.ndarray, n_basins: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Adjacent basin pairs (a < b) and the highest pass between them, highest pass first.

    The pass of two neighbouring voxels in different basins is the lower of
    their values; the saddle between two adjacent basins is the highest pass.
    """
    shape = basin.shape
    padded = np.zeros(tuple(n + 2 for n in shape), dtype=basin.dtype)
    padded[(slice(1, -1),) * 3] = basin
    pdet = np.full(padded.shape, -np.inf)
    pdet[(slice(1, -1),) * 3] = det
    a_list, b_list, pass_list = [], [], []
    for offset in offsets:
        window = tuple(slice(1 + o, 1 + o + n) for o, n in zip(offset, shape, strict=True))
        other = padded[window]
        sel = (basin != other) & (basin > 0) & (other > 0)
        if sel.any():
            a_list.append(basin[sel])
            b_list.append(other[sel])
            pass_list.append(np.minimum(det[sel], pdet[window][sel]))
    if not a_list:
        empty = np.empty(0, dtype=np.intp)
        return empty, empty, np.empty(0)
    a = np.concatenate(a_list)
    b = np.concatenate(b_list)
    passes = np.concatenate(pass_list)
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    key = lo.astype(np.int64) * (n_basins + 1) + hi
    order = np.lexsort((-passes, key))
    first = np.ones(order.size, dtype=bool)
    first[1:] = key[order][1:] != key[order][:-1]
    keep = order[first]
    keep = keep[np.argsort(-passes[keep], kind="stable")]
    return lo[keep], hi[keep], passes[keep]


def _split_component(
    det: np.ndarray,
    comp: np.ndarray,
    structure: np.ndarray,
    threshold: float,
    depth_rule: _DepthRule,
    min_voxels: int,
) -> np.ndarray | None:
    """Sub-labels (1..m, 0 outside) of a component crop with m >= 2 significant maxima.

    det, comp: the detection values and the component's mask, cropped to its
    bounding box. Returns None when the component stays whole.

    Basins: voxels grouped by the local-maximum plateau their steepest ascent
    reaches. Significance is an h-maxima (persistence) test on the small graph
    of adjacent basins: merging basins Kruskal-style from the highest saddle
    down, the lower cluster's peak p dies at saddle s and is kept as a seed when
    p - s >= depth_rule(p) (see `_DepthRule`). A
    maximum that dies without enough depth hands its basin to the basin across
    that saddle, so a noise bump on the flank of the second spot joins the
    second spot, not the brightest one.
    """
    # Cheap exit first (most components): only local maxima high enough that
    # their required depth still leaves them above the threshold can be
    # significant; test those with one level-set labelling each.
    peaks = (det >= ndimage.maximum_filter(det, footprint=structure, mode="nearest")) & comp
    pk = np.flatnonzero(peaks)
    pk_h = det.ravel()[pk]
    pk_depth = depth_rule(pk_h)
    viable = pk_h - pk_depth > threshold
    if np.count_nonzero(viable) < 2:
        return None
    order = np.lexsort((pk[viable], -pk_h[viable]))
    cand_v, level_v = pk[viable][order], (pk_h - pk_depth)[viable][order]
    for r in range(1, cand_v.size):
        lab, _ = ndimage.label(comp & (det >= level_v[r]), structure)
        lab = lab.ravel()
        if not np.any(lab[cand_v[:r]] == lab[cand_v[r]]):
            break  # a significant secondary maximum: do the full split
    else:
        return None

    all_offsets = np.argwhere(structure) - 1
    offsets = all_offsets[np.any(all_offsets != 0, axis=1)]
    ptr = _steepest_ascent(det, comp, offsets)
    cflat = comp.ravel()
    is_max = (ptr == np.arange(ptr.size)) & cflat
    plateau, n_max = ndimage.label(is_max.reshape(det.shape), structure)
    if n_max < 2:
        return None
    pflat = plateau.ravel()
    idx = np.flatnonzero(pflat)
    _, first = np.unique(pflat[idx], return_index=True)
    cand = idx[first]  # cand[k]: representative voxel of plateau k + 1
    flat = det.ravel()
    heights = np.concatenate([[-np.inf], flat[cand]])  # by plateau id, 0 unused
    depth = depth_rule(heights)
    top = int(np.argmax(heights))
    others = np.ones(n_max + 1, dtype=bool)
    others[[0, top]] = False
    if not np.any(heights[others] - depth[others] > threshold):
        return None  # every saddle is above the threshold: no maximum can be deep enough
    # Rank: higher first, ties by raster position (deterministic).
    rank = np.empty(n_max + 1, dtype=np.intp)
    rank[0] = n_max + 1
    rank[1 + np.lexsort((cand, -flat[cand]))] = np.arange(n_max)

    basin = np.where(cflat, pflat[ptr], 0).reshape(det.shape)
    edge_a, edge_b, passes = _basin_edges(basin, det, offsets[: len(offsets) // 2], n_max)

    # Kruskal over the basin graph with a tiny union-find (a handful of nodes).
    cluster = list(range(n_max + 1))
    cluster_top = list(range(n_max + 1))

    def find(x: int) -> int:
        while cluster[x] != x:
            cluster[x] = cluster[cluster[x]]
            x = cluster[x]
        return x

    parent = np.full(n_max + 1, -1)  # insignificant maximum -> basin it joins
    merge_into = np.full(n_max + 1, -1)  # any maximum -> basin across its death saddle
    for u, v, s in zip(edge_a.tolist(), edge_b.tolist(), passes.tolist(), strict=True):
        ru, rv = find(u), find(v)
        if ru == rv:
            continue
        if rank[cluster_top[ru]] > rank[cluster_top[rv]]:
            ru, rv, u, v = rv, ru, v, u  # ru: the cluster with the higher peak
        loser = cluster_top[rv]
        merge_into[loser] = u
        if heights[loser] - s < depth[loser]:
            parent[loser] = u
        cluster[rv] = ru

    while True:
        seeds = np.flatnonzero(parent[1:] < 0) + 1
        if seeds.size < 2:
            return None
        root = np.where(parent >= 0, parent, np.arange(n_max + 1))
        while True:
            nxt = root[root]
            if np.array_equal(nxt, root):
                break
            root = nxt
        seeds = seeds[np.argsort(rank[seeds])]
        part_of = np.zeros(n_max + 1, dtype=np.int32)
        part_of[seeds] = np.arange(1, seeds.size + 1, dtype=np.int32)
        parts = part_of[root[basin]]
        sizes = np.bincount(parts.ravel(), minlength=seeds.size + 1)[1:]
        small = np.flatnonzero(sizes[1:] < min_voxels) + 1
        if small.size == 0:
            return parts
        # A basin too small to be a spot joins the basin across its saddle.
        weakest = int(seeds[small[np.argmin(sizes[small])]])
        parent[weakest] = merge_into[weakest]


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


def detect(
    volume: np.ndarray,
    params: DetectParams | None = None,
    axes: tuple[str, str] = ("eta", "tth"),
    *,
    origin: Mapping[str, float] | None = None,
    step: Mapping[str, float] | None = None,
) -> Detection:
    """Detect the spots of one region volume and return them with diagnostics.

    volume: shape (n_omega, n1, n2), real, all finite (ValueError otherwise).
    axes: names of the two frame axes (features are keyed "omega", *axes).
    origin, step: optional per-axis physical origin/step (degrees), keyed by
        axis name, for the ``physical`` features.
    """
    params = params or DetectParams()
    names = axis_names(axes)
    arr = validate_volume(volume)
    shape = arr.shape
    background = estimate_background(arr, params.background)
    resid = arr.astype(np.float64) - background.level
    gain_map: np.ndarray | None = None
    if params.smoothing_sigma > 0:
        det = ndimage.gaussian_filter(resid, params.smoothing_sigma, mode="nearest")
        # Near the faces the filter reuses edge voxels, so the smoothed noise is
        # larger there (x1.5 in a corner at sigma 1.5): measure the noise in
        # units of the local noise gain and threshold against gain x noise.
        gain_map = _smoothing_noise_gain(shape, params.smoothing_sigma)
        # Level again after smoothing: for skewed (counting) noise the smoothed
        # background sits at the mean, not at the raw median.
        det_level, z_noise, _ = _median_mad((det / gain_map)[background.is_background])
        det -= det_level * gain_map
        interior = float(np.min(gain_map))
        noise = z_noise * interior
        gain_map = gain_map / interior
    else:
        det = resid
        noise = background.noise
    # Zero noise (constant or noise-free volume): floor at the float resolution
    # of the data so that rounding dust is not a spot; threshold_abs is the real
    # control for such data.
    scale = max(float(np.max(np.abs(arr))), 1e-300)
    noise = max(noise, float(np.finfo(arr.dtype).eps) * scale)
    threshold = max(params.threshold_sigma * noise, params.threshold_abs)
    empty = Detection([], background, noise, threshold, np.zeros(shape, dtype=np.int32))

    structure = ndimage.generate_binary_structure(3, params.connectivity)
    above = det > (threshold if gain_map is None else threshold * gain_map)
    labels, n = ndimage.label(above, structure)
    faint = params.faint_smoothing_sigma > 0 and params.faint_smoothing_sigma != (
        params.smoothing_sigma
    )
    if n == 0 and not faint:
        return empty
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    sizes[0] = 0
    keep = sizes >= params.min_voxels
    if not keep.any() and not faint:
        return empty
    lut = np.zeros(n + 1, dtype=np.int32)
    lut[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    labels = lut[labels]
    n = int(keep.sum())

    if params.split and n > 0:
        shot = params.gain * _kernel_sum_of_squares(params.smoothing_sigma)
        rule = _DepthRule(params.split_min_prominence, params.split_min_depth_sigma, noise, shot)
        labels, n = _split_all(labels, n, det, structure, threshold, rule, params.min_voxels)

    if faint:
        labels, n, faint_above = _faint_pass(
            resid, background, labels, n, params, structure, det, threshold
        )
        above = above | faint_above
        if n == 0:
            return empty

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
        arr,
        params.background,
        exclude=(region > 0) | above,
        start=background,
    )
    resid = arr.astype(np.float64) - background.level
    raw_noise = max(background.noise, float(np.finfo(arr.dtype).eps) * scale)
    moments = label_moments(region, resid, n)
    n_voxels = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    peaks = _label_maxima(resid, labels, n)
    bboxes = np.array([[(s.start, s.stop - 1) for s in box] for box in boxes], dtype=np.int64)

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
    )
    lut = np.zeros(n + 1, dtype=np.int32)
    lut[ids + 1] = np.arange(1, ids.size + 1, dtype=np.int32)
    return Detection(
        spots=spots,
        background=background,
        noise=noise,
        threshold=threshold,
        labels=lut[labels],
    )


def _smoothed(
    resid: np.ndarray, background: Background, sigma: float
) -> tuple[np.ndarray, float, np.ndarray]:
    """Smoothed residual, its interior noise and the per-voxel noise gain (see `detect`)."""
    det = ndimage.gaussian_filter(resid, sigma, mode="nearest")
    gain_map = _smoothing_noise_gain(resid.shape, sigma)
    det_level, z_noise, _ = _median_mad((det / gain_map)[background.is_background])
    det = det - det_level * gain_map
    interior = float(np.min(gain_map))
    return det, z_noise * interior, gain_map / interior


def _faint_pass(
    resid: np.ndarray,
    background: Background,
    labels: np.ndarray,
    n: int,
    params: DetectParams,
    structure: np.ndarray,
    main_det: np.ndarray,
    main_threshold: float,
) -> tuple[np.ndarray, int, np.ndarray]:
    """Add the components of the smoothed volume that no main-pass spot explains.

    Returns the new labels (faint spots numbered after the main ones), their
    count, and the smoothed pass's above-threshold mask (kept out of the
    background re-estimate).
    """
    det, noise, gain_map = _smoothed(resid, background, params.faint_smoothing_sigma)
    scale = max(float(np.max(np.abs(resid))), 1e-300)
    noise = max(noise, float(np.finfo(np.float64).eps) * scale)
    cut = max(params.faint_threshold_sigma * noise, params.threshold_abs)
    above = det > cut * gain_map
    faint, m = ndimage.label(above, structure)
    if m == 0:
        return labels, n, above
    # main-pass spots that barely cross the raw cut (peak < 2x the cut) are
    # marginal detections of the same faint spots: the smoothed component
    # replaces them (a narrow but bright spot has few voxels, yet a high peak)
    strong = np.zeros(n + 1, dtype=bool)
    if n:
        strong[1:] = _label_maxima(main_det, labels, n) >= _MARGINAL_PEAK * main_threshold
    strong_labels = np.where(strong[labels], labels, 0)
    claimed = _grow(
        strong_labels, params.integration_margin, ndimage.find_objects(strong_labels, max_label=n)
    )
    touched = np.zeros(m + 1, dtype=bool)
    touched[np.unique(faint[claimed > 0])] = True
    # a component holding two or more marginal spots keeps them (two small
    # spots that smoothing joins are still two)
    both = (faint > 0) & (labels > 0)
    keys = np.unique(faint[both].astype(np.int64) * (n + 1) + labels[both])
    touched |= np.bincount(keys // (n + 1), minlength=m + 1) >= 2
    sizes = np.bincount(faint.ravel(), minlength=m + 1)
    new = np.flatnonzero(~touched & (sizes >= params.min_voxels))
    new = new[new > 0]
    if new.size == 0:
        return labels, n, above
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
    return out, kept + int(new.size), above


def _split_all(
    labels: np.ndarray,
    n: int,
    det: np.ndarray,
    structure: np.ndarray,
    threshold: float,
    depth_rule: _DepthRule,
    min_voxels: int,
) -> tuple[np.ndarray, int]:
    """Split every component that shows two or more significant maxima; relabel 1..n'."""
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    # A secondary maximum is lower than the top, so a component whose top could
    # not be a deep enough maximum cannot split: skip it without looking.
    tops = np.concatenate([[0.0], _label_maxima(det, labels, n)])
    depth = depth_rule(tops)
    boxes = ndimage.find_objects(labels, max_label=n)
    out = labels.copy()
    next_label = n + 1
    for lab in range(1, n + 1):
        if sizes[lab] < 2 * min_voxels or tops[lab] - depth[lab] <= threshold:
            continue
        box = boxes[lab - 1]
        comp = labels[box] == lab
        parts = _split_component(det[box], comp, structure, threshold, depth_rule, min_voxels)
        if parts is None:
            continue
        m = int(parts.max())
        # Part 1 keeps the component's label; the others get new ones.
        new_ids = np.concatenate([[0, lab], np.arange(next_label, next_label + m - 1)])
        view = out[box]
        view[comp] = new_ids[parts[comp]]
        next_label += m - 1
    return out, next_label - 1


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
    resolved by the volume assembly, so none is handled here). Raises
    ValueError for an empty, non-3D or non-finite volume; a constant volume has
    zero noise and no spots.
    """
    return detect(volume, params, axes, origin=origin, step=step).spots
