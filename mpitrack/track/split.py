"""Splitting touching spots: one connected region of the detection mask into its spots.

An h-maxima (persistence) test: a local maximum of the (smoothed) volume
becomes a spot of its own when the saddle to every higher maximum is at least
max(split_min_prominence * its height, split_min_depth_sigma * noise at that
height) below it (`DepthRule`). A cheap pre-test (one level-set labelling per
high enough maximum, on the component's bounding box) leaves most components
alone; the others get basins by steepest ascent (a discrete watershed,
vectorised with pointer jumping) and a Kruskal merge of the small basin graph
from the highest saddle down. A weak maximum hands its basin to the basin
across its highest saddle, so a noise bump on the flank of the second spot
joins the second spot, and every voxel of the blob goes to exactly one spot.
A piece whose top has a higher diagonal neighbour in another piece joins it
(a spot drifting diagonally between omega slices is one spot).
(scipy.ndimage.watershed_ift was tried: it gave most of a two-peak blob to
one seed. scikit-image is not a dependency.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage


def label_maxima(values: np.ndarray, labels: np.ndarray, n: int) -> np.ndarray:
    """Maximum of values over each label 1..n (every label present).

    Sorts only the labelled voxels; scipy.ndimage.maximum sorts the whole volume.
    """
    idx = np.flatnonzero(labels)
    lab = labels.ravel()[idx]
    order = np.argsort(lab, kind="stable")
    starts = np.searchsorted(lab[order], np.arange(1, n + 1))
    return np.maximum.reduceat(values.ravel()[idx[order]].astype(np.float64), starts)


_CUBE_OFFSETS = np.array([o for o in np.ndindex(3, 3, 3) if o != (1, 1, 1)], dtype=np.intp) - 1


@dataclass(frozen=True)
class DepthRule:
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


def kernel_sum_of_squares(sigma: float) -> float:
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
    depth_rule: DepthRule,
    min_voxels: int,
) -> np.ndarray | None:
    """Sub-labels (1..m, 0 outside) of a component crop with m >= 2 significant maxima.

    det, comp: the detection values and the component's mask, cropped to its
    bounding box. Returns None when the component stays whole.

    Basins: voxels grouped by the local-maximum plateau their steepest ascent
    reaches. Significance is an h-maxima (persistence) test on the small graph
    of adjacent basins: merging basins Kruskal-style from the highest saddle
    down, the lower cluster's peak p dies at saddle s and is kept as a seed when
    p - s >= depth_rule(p) (see `DepthRule`). A
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


def _join_false_maxima(det: np.ndarray, parts: np.ndarray) -> np.ndarray | None:
    """Parts (1..m) with every part whose top voxel has a higher 26-neighbour in another
    part joined to the part of its highest such neighbour; None if one part is left.

    The split test looks for maxima and saddles along the neighbourhood of
    ``connectivity`` (faces by default, where fewer noisy paths lead around a
    saddle), but a voxel with a higher diagonal neighbour is no maximum of the
    volume: it is the flank of that neighbour. A spot whose core drifts
    diagonally from one omega frame to the next (the ESRF si-id11 spots) has
    such a second, faces-only maximum in the next frame, and is one spot; two
    spots side by side have their own maxima in every neighbourhood and stay two.
    """
    m = int(parts.max())
    padded_det = np.pad(np.where(parts > 0, det, -np.inf), 1, constant_values=-np.inf)
    padded_parts = np.pad(parts, 1)
    into = np.arange(m + 1)
    for k in range(1, m + 1):
        top = np.unravel_index(int(np.argmax(np.where(parts == k, det, -np.inf))), det.shape)
        at = tuple(np.array(top)[:, None] + 1 + _CUBE_OFFSETS.T)
        higher = (padded_det[at] > det[top]) & (padded_parts[at] != k)
        if higher.any():
            into[k] = padded_parts[at][higher][np.argmax(padded_det[at][higher])]
    if np.array_equal(into, np.arange(m + 1)):
        return parts
    while True:  # follow chains to a part whose top is a true maximum
        nxt = into[into]
        if np.array_equal(nxt, into):
            break
        into = nxt
    ids = np.unique(into[1:])
    if ids.size < 2:
        return None
    lut = np.zeros(m + 1, dtype=parts.dtype)
    lut[1:] = np.searchsorted(ids, into[1:]) + 1
    return lut[parts]


def split_all(
    labels: np.ndarray,
    n: int,
    det: np.ndarray,
    structure: np.ndarray,
    threshold: float,
    depth_rule: DepthRule,
    min_voxels: int,
) -> tuple[np.ndarray, int]:
    """Split every component that shows two or more significant maxima; relabel 1..n'."""
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    # A secondary maximum is lower than the top, so a component whose top could
    # not be a deep enough maximum cannot split: skip it without looking.
    tops = np.concatenate([[0.0], label_maxima(det, labels, n)])
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
        if parts is not None:
            parts = _join_false_maxima(det[box], parts)
        if parts is None:
            continue
        m = int(parts.max())
        # Part 1 keeps the component's label; the others get new ones.
        new_ids = np.concatenate([[0, lab], np.arange(next_label, next_label + m - 1)])
        view = out[box]
        view[comp] = new_ids[parts[comp]]
        next_label += m - 1
    return out, next_label - 1
