"""A region's (eta x 2theta) frame interpolated from detector pixels by one sparse product.

For each grid point the geometry gives a continuous pixel position on the
first panel that holds it; bilinear interpolation between the four pixel
centres around it is a row of four weights, (1-fr)(1-fc), (1-fr)fc, fr(1-fc)
and fr fc, summing to 1. Stacking the rows gives a sparse matrix per panel
over the panel's bounding box of the region, so cutting a region out of a frame
is ``M @ panel[box].ravel()``: a few multiply-adds per output sample, whatever
the detector's size. Matrices are built once per region (geometry is costly,
the product is not) and cached on disk in ``.npz`` files keyed by a hash of the
instrument and the grid; they are read back with ``allow_pickle=False``.

Masked pixels (``frames.mask`` marker values in the raw frame, e.g. 2^32-1 for
Eiger gaps and dead pixels, and NaN) are left out: a sample is interpolated from
its unmasked pixels with their weights renormalised, and a sample whose pixels
are all masked is NaN, as is a grid point that falls on no panel (gaps between
panels, beyond the edges). NaN is "no measurement" for detection: neither
background nor spot, where a marker value interpolated into its neighbours
would be a bright false spot, and a zero-filled gap a dark structure. The build
logs the region's coverage and refuses a region with none.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import sparse

from mpitrack.detector.instrument import Instrument
from mpitrack.detector.regions import RegionGrid
from mpitrack.errors import UsageError
from mpitrack.frames import marker_pixels

log = logging.getLogger(__name__)

# Version of the cached interpolation matrices' file format; a cache of another
# version is rebuilt.
CACHE_VERSION = 1


@dataclass(frozen=True)
class PanelBlock:
    """The part of one panel a region reads, and its interpolation matrix over it."""

    panel: int
    box: tuple[int, int, int, int]  # r0, r1, c0, c1 (ends exclusive)
    matrix: sparse.csr_matrix  # (n_eta * n_tth, (r1 - r0) * (c1 - c0))

    @functools.cached_property
    def rows_read(self) -> np.ndarray:
        """The region samples this block contributes to (computed once: the matrix is fixed)."""
        return self.matrix.getnnz(axis=1) > 0


@dataclass(frozen=True)
class RegionSampler:
    """Cuts one region's frame out of one detector frame (a list of panel images)."""

    region_id: int
    shape: tuple[int, int]
    blocks: tuple[PanelBlock, ...]
    covered: np.ndarray  # bool (n_eta * n_tth,): on some panel

    @property
    def coverage(self) -> float:
        return float(self.covered.mean())

    def apply(self, panels: Sequence[np.ndarray], mask_values: Sequence[float] = ()) -> np.ndarray:
        """The region's (n_eta, n_tth) float32 frame from panel images (panel pixels).

        mask_values: marker values of masked pixels (frames.mask.values); NaN
        pixels are masked too. Samples with no unmasked pixel, or on no panel, are NaN.
        """
        out = np.zeros(self.covered.size, dtype=np.float32)
        weight: np.ndarray | None = None
        for block in self.blocks:
            r0, r1, c0, c1 = block.box
            raw = np.asarray(panels[block.panel][r0:r1, c0:c1])
            pixels = raw.astype(np.float32)
            masked = marker_pixels(raw, mask_values)
            if raw.dtype.kind == "f":
                nan = np.isnan(pixels)
                if nan.any():
                    masked = nan if masked is None else masked | nan
            if masked is not None:
                valid = ~masked
                pixels = np.where(valid, pixels, np.float32(0.0))
                if weight is None:
                    weight = np.ones(self.covered.size, dtype=np.float32)
                rows = block.rows_read
                weight[rows] = (block.matrix @ valid.ravel().astype(np.float32))[rows]
            out += block.matrix @ pixels.ravel()
        if weight is not None:
            seen = weight > 0
            out[seen] /= weight[seen]
            out[~seen] = np.nan
        if not self.covered.all():
            out[~self.covered] = np.nan
        return out.reshape(self.shape)


def bilinear_rows(
    rows: np.ndarray, cols: np.ndarray, n_rows: int, n_cols: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int, int, int]]:
    """Bilinear weights of continuous positions inside [0, n-1]: (sample, pixel, weight)
    triplets over the positions' bounding box, and the box (r0, r1, c0, c1)."""
    r_lo = np.clip(np.floor(rows).astype(np.int64), 0, max(n_rows - 2, 0))
    c_lo = np.clip(np.floor(cols).astype(np.int64), 0, max(n_cols - 2, 0))
    fr, fc = rows - r_lo, cols - c_lo
    box = (int(r_lo.min()), int(r_lo.max()) + 2, int(c_lo.min()), int(c_lo.max()) + 2)
    width = box[3] - box[2]
    base = (r_lo - box[0]) * width + (c_lo - box[2])
    sample = np.arange(rows.size)
    samples = np.concatenate([sample] * 4)
    pixels = np.concatenate([base, base + 1, base + width, base + width + 1])
    weights = np.concatenate([(1 - fr) * (1 - fc), (1 - fr) * fc, fr * (1 - fc), fr * fc])
    return samples, pixels, weights, box


def build_sampler(instrument: Instrument, grid: RegionGrid) -> RegionSampler:
    """Interpolation matrices of one region (raises UsageError if no panel sees it)."""
    tth, eta = np.meshgrid(grid.tth_values(), grid.eta_values())
    tth, eta = tth.ravel(), eta.ravel()
    n_out = tth.size
    covered = np.zeros(n_out, dtype=bool)
    blocks = []
    for index, spec in enumerate(instrument.panels):
        geometry = spec.geometry
        if geometry.rows < 2 or geometry.cols < 2:
            continue
        rows, cols = geometry.angles_to_pixel(tth, eta)
        take = geometry.on_panel(rows, cols) & ~covered
        if not take.any():
            continue
        which = np.nonzero(take)[0]
        samples, pixels, weights, box = bilinear_rows(
            rows[which], cols[which], geometry.rows, geometry.cols
        )
        size = (box[1] - box[0]) * (box[3] - box[2])
        matrix = sparse.csr_matrix(
            (weights.astype(np.float32), (which[samples], pixels)), shape=(n_out, size)
        )
        matrix.eliminate_zeros()
        blocks.append(PanelBlock(index, box, matrix))
        covered |= take
    if not covered.any():
        raise UsageError(
            f"region {grid.id} (eta {list(grid.eta)}, 2theta {list(grid.tth)}) falls on no "
            f"panel of the instrument {instrument.source}"
        )
    sampler = RegionSampler(grid.id, tuple(grid.shape), tuple(blocks), covered)
    if sampler.coverage < 1.0:
        log.warning(
            "region %d: %.1f%% of its samples fall on a panel (the rest are masked)",
            grid.id,
            100 * sampler.coverage,
        )
    return sampler


# ----------------------------------------------------------------------------- cache


def cache_key(instrument: Instrument, grid: RegionGrid) -> str:
    blob = json.dumps(
        [CACHE_VERSION, instrument.fingerprint(), dataclasses.asdict(grid)],
        sort_keys=True,
        default=list,
    ).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _save(path: Path, sampler: RegionSampler) -> None:
    arrays: dict[str, np.ndarray] = {
        "covered": sampler.covered,
        "shape": np.array(sampler.shape, dtype=np.int64),
    }
    for i, block in enumerate(sampler.blocks):
        arrays[f"b{i}_meta"] = np.array([block.panel, *block.box], dtype=np.int64)
        arrays[f"b{i}_data"] = block.matrix.data
        arrays[f"b{i}_indices"] = block.matrix.indices
        arrays[f"b{i}_indptr"] = block.matrix.indptr
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fp:
        np.savez(fp, **arrays)
    os.replace(tmp, path)


def _load(path: Path, region_id: int) -> RegionSampler:
    with np.load(path, allow_pickle=False) as data:
        covered = data["covered"].astype(bool)
        shape = tuple(int(v) for v in data["shape"])
        blocks = []
        i = 0
        while f"b{i}_meta" in data:
            panel, r0, r1, c0, c1 = (int(v) for v in data[f"b{i}_meta"])
            size = (r1 - r0) * (c1 - c0)
            matrix = sparse.csr_matrix(
                (data[f"b{i}_data"], data[f"b{i}_indices"], data[f"b{i}_indptr"]),
                shape=(covered.size, size),
            )
            blocks.append(PanelBlock(panel, (r0, r1, c0, c1), matrix))
            i += 1
    return RegionSampler(region_id, (shape[0], shape[1]), tuple(blocks), covered)


def cached_sampler(
    instrument: Instrument, grid: RegionGrid, cache_dir: str | os.PathLike[str] | None
) -> RegionSampler:
    """The region's sampler, from ``cache_dir`` when built before, else built and stored.

    A cache file that cannot be read (truncated, from another version) is rebuilt.
    """
    if cache_dir is None:
        return build_sampler(instrument, grid)
    directory = Path(cache_dir)
    path = directory / f"sampler_{grid.id}_{cache_key(instrument, grid)}.npz"
    if path.exists():
        try:
            return _load(path, grid.id)
        except (OSError, ValueError, KeyError) as exc:
            log.warning("rebuilding the sampler cache %s: %s", path, exc)
    sampler = build_sampler(instrument, grid)
    directory.mkdir(parents=True, exist_ok=True)
    _save(path, sampler)
    return sampler
