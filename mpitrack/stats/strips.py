"""Spot images, pure: a region volume and its detection labels in, palette pixels out.

One *sheet* per (region, scan) holds everything the strips of that scan show:
the maximum projection of the region volume along omega, then every omega
slice, side by side, each enlarged ``scale`` times with the outline of every
spot that detection found drawn on it. A sheet depends only on the frames
and the detection settings, never on the tracker's decisions, so a commit
that revises the open window never makes a sheet stale: the strips crop the
sheets around each track's position (the HTML report with CSS, `mpitrack
show` with strip_png.py) and mark the decisions on top.

Grey levels: each sheet is scaled to its own brightest voxel above the
background, black up to one noise sigma and an asinh stretch softened at three
noise sigmas above, so faint spots stay visible next to bright ones while the
noise stays dark. A voxel without a measurement (NaN: masked by frames.mask
or in the file) is drawn in the light grey of "no data", in the projection
only where every omega slice is masked.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

N_GREY = 200  # palette indices 0..N_GREY-1 are grey levels, black to white
# Overlay colours, by palette index.
BACKGROUND, TEXT, OUTLINE, MARK, DETECTED, OVERLAP, MISSED, OPEN, REVISED, NO_DATA = range(
    N_GREY, N_GREY + 10
)
_OVERLAYS = {
    BACKGROUND: (255, 255, 255),
    TEXT: (34, 34, 34),
    OUTLINE: (255, 214, 0),
    MARK: (0, 229, 255),
    DETECTED: (42, 122, 42),
    OVERLAP: (211, 47, 47),
    MISSED: (150, 150, 150),
    OPEN: (30, 110, 220),
    REVISED: (232, 140, 0),
    NO_DATA: (232, 232, 232),
}
# CSS colours of the same states, for the HTML strips.
CSS_COLOURS = {
    name: "#{:02x}{:02x}{:02x}".format(*_OVERLAYS[index])
    for name, index in (
        ("outline", OUTLINE),
        ("mark", MARK),
        ("detected", DETECTED),
        ("overlap", OVERLAP),
        ("missed", MISSED),
        ("open", OPEN),
        ("revised", REVISED),
    )
}


def _palette() -> np.ndarray:
    out = np.zeros((N_GREY + len(_OVERLAYS), 3), dtype=np.uint8)
    out[:N_GREY] = np.linspace(0, 255, N_GREY).round().astype(np.uint8)[:, None]
    for index, rgb in _OVERLAYS.items():
        out[index] = rgb
    return out


PALETTE = _palette()


@dataclass(frozen=True)
class SheetLayout:
    """Where each image sits on a sheet: sub-image 0 the projection, 1 + i omega slice i."""

    n_omega: int
    n1: int
    n2: int
    scale: int

    @property
    def images(self) -> int:
        return self.n_omega + 1

    @property
    def height(self) -> int:
        return self.n1 * self.scale

    @property
    def width(self) -> int:
        return self.images * self.n2 * self.scale

    def left(self, image: int) -> int:
        """Pixel column where sub-image ``image`` starts."""
        return image * self.n2 * self.scale

    def slice_image(self, omega: float) -> int:
        """The sub-image of the omega slice through ``omega`` (clipped into the window)."""
        return 1 + min(max(int(np.floor(omega + 0.5)), 0), self.n_omega - 1)


@dataclass(frozen=True)
class Sheet:
    layout: SheetLayout
    pixels: np.ndarray  # (layout.height, layout.width) uint8 palette indices


def _grey_levels(resid: np.ndarray, noise: float) -> np.ndarray:
    """Palette grey levels: black up to one noise sigma, asinh above, white at the top."""
    floor = max(float(noise), 0.0)
    top = float(resid.max()) - floor
    if not top > 0:
        return np.zeros(resid.shape, dtype=np.uint8)
    soft = max(3.0 * floor, 0.02 * top)
    scaled = np.arcsinh(np.maximum(resid - floor, 0.0) / soft) / np.arcsinh(top / soft)
    return np.minimum(scaled * (N_GREY - 1) + 0.5, N_GREY - 1).astype(np.uint8)


def _projected_labels(labels: np.ndarray, resid: np.ndarray) -> np.ndarray:
    """Per (axis1, axis2): the label of the brightest labelled voxel along omega (0: none)."""
    masked = np.where(labels > 0, resid, -np.inf)
    brightest = masked.argmax(axis=0)
    return np.take_along_axis(labels, brightest[None], axis=0)[0]


def _outline(labels: np.ndarray) -> np.ndarray:
    """Pixels of (images, h, w) labels that lie on the edge of their label's area."""
    edge = np.zeros(labels.shape, dtype=bool)
    for axis in (1, 2):
        a = [slice(None)] * 3
        b = [slice(None)] * 3
        a[axis], b[axis] = slice(1, None), slice(None, -1)
        differs = labels[tuple(a)] != labels[tuple(b)]
        edge[tuple(a)] |= differs
        edge[tuple(b)] |= differs
    edge[:, 0, :] = edge[:, -1, :] = True
    edge[:, :, 0] = edge[:, :, -1] = True
    return edge & (labels > 0)


def render_sheet(
    volume: np.ndarray,
    labels: np.ndarray,
    background: float | np.ndarray,
    noise: float,
    scale: int = 3,
) -> Sheet:
    """The sheet of one region volume.

    volume: (n_omega, n1, n2) in window order; labels: detection's label volume
    of the same shape (0 = background); background: detection's background
    level (a number or an array broadcastable to the volume); noise: its noise
    sigma.
    """
    volume = np.asarray(volume)
    labels = np.asarray(labels)
    if volume.ndim != 3 or labels.shape != volume.shape:
        raise ValueError(
            f"volume {volume.shape} and labels {labels.shape} must be the same 3D shape"
        )
    if scale < 1:
        raise ValueError(f"scale must be >= 1, got {scale}")
    layout = SheetLayout(*volume.shape, scale=scale)
    resid = volume.astype(np.float64) - background
    unmeasured = np.isnan(resid)
    resid[unmeasured] = -np.inf  # darkest: never the top, never a projection's brightest
    grey = _grey_levels(resid, noise)
    images = np.concatenate([grey.max(axis=0)[None], grey])
    image_labels = np.concatenate([_projected_labels(labels, resid)[None], labels])
    no_data = np.concatenate([unmeasured.all(axis=0)[None], unmeasured])

    def enlarged(image: np.ndarray) -> np.ndarray:
        return image.repeat(scale, axis=1).repeat(scale, axis=2)

    big = enlarged(images)
    big[enlarged(no_data)] = NO_DATA
    big[_outline(enlarged(image_labels))] = OUTLINE
    pixels = big.transpose(1, 0, 2).reshape(layout.height, layout.width)
    return Sheet(layout, np.ascontiguousarray(pixels))


@dataclass(frozen=True)
class Crop:
    """A crop of a sheet's sub-image in voxels: first row/column and size."""

    first1: int
    first2: int
    size1: int
    size2: int


def crop_around(position: tuple[float, float, float], layout: SheetLayout, size: int) -> Crop:
    """A ``size`` x ``size`` voxel crop centred on the position's frame axes, kept inside."""

    def along(centre: float, n: int) -> tuple[int, int]:
        width = min(size, n)
        first = int(np.floor(centre + 0.5)) - width // 2
        return min(max(first, 0), n - width), width

    first1, size1 = along(position[1], layout.n1)
    first2, size2 = along(position[2], layout.n2)
    return Crop(first1, first2, size1, size2)


def tile(sheet: Sheet, image: int, crop: Crop) -> np.ndarray:
    """The enlarged pixels of one crop of one sub-image."""
    k = sheet.layout.scale
    top, left = crop.first1 * k, sheet.layout.left(image) + crop.first2 * k
    return sheet.pixels[top : top + crop.size1 * k, left : left + crop.size2 * k]


def marker_offset(position: tuple[float, float, float], crop: Crop, scale: int) -> tuple[int, int]:
    """Pixel (row, column) of the track's centre inside a tile of ``crop``."""
    return (
        round((position[1] - crop.first1 + 0.5) * scale),
        round((position[2] - crop.first2 + 0.5) * scale),
    )
