"""Flat-panel detector geometry: pixel <-> (2theta, eta), both ways, exactly.

Conventions (one place, so every other module and the docs can point here):

- Lab frame: the beam travels along +z from the sample at the origin; x is
  horizontal, y vertical up. 2theta is the angle between the beam and the
  scattered ray; eta is the azimuth atan2(y, x) in degrees.
- A panel is a plane of ``rows x cols`` pixels. Pixel coordinates are
  continuous with integer values at pixel *centres*: pixel (r, c) covers
  [r - 0.5, r + 0.5] x [c - 0.5, c + 0.5]. Rows grow downwards (-y), columns
  to the right (+x).
- ``beam_center`` is the (row, col) where the direct beam meets the panel's
  plane (it may lie off the panel, which is how several panels around the beam
  are placed). ``distance`` is the sample-to-that-point distance along the
  beam. ``tilt`` rotates the panel about that point: degrees about x, then y,
  then z (R = Rz @ Ry @ Rx), so an untilted panel is normal to the beam.

Both directions are closed-form (a ray-plane intersection for the inverse), so
a round trip pixel -> angles -> pixel is exact to floating point; tests hold it
to 0.01 px.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def rotation_matrix(tilt_deg: tuple[float, float, float]) -> np.ndarray:
    """R = Rz @ Ry @ Rx for rotations (degrees) about lab x, y and z."""
    ax, ay, az = (math.radians(t) for t in tilt_deg)
    cx, sx, cy, sy, cz, sz = (
        math.cos(ax),
        math.sin(ax),
        math.cos(ay),
        math.sin(ay),
        math.cos(az),
        math.sin(az),
    )
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


@dataclass(frozen=True)
class PanelGeometry:
    """Where one panel sits and how its pixels are laid out.

    name: the panel's name (file templates use it as {panel}).
    rows, cols: pixels of the panel, after its flip (see instrument.py).
    pixel_size: (row pitch, column pitch) in mm.
    distance: sample to the beam's intersection with the panel plane, mm.
    beam_center: (row, col) of that intersection, in this panel's pixels.
    tilt: degrees about lab x, y, z (applied in that order) around beam_center.
    """

    name: str
    rows: int
    cols: int
    pixel_size: tuple[float, float]
    distance: float
    beam_center: tuple[float, float]
    tilt: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def __post_init__(self) -> None:
        problems = []
        if self.rows < 1 or self.cols < 1:
            problems.append(f"rows and cols must be >= 1, got {self.rows} x {self.cols}")
        if min(self.pixel_size) <= 0:
            problems.append(f"pixel_size {list(self.pixel_size)} must be > 0")
        if self.distance <= 0:
            problems.append(f"distance {self.distance} must be > 0")
        if problems:
            raise ValueError("; ".join(problems))
        rot = rotation_matrix(self.tilt)
        object.__setattr__(self, "_rot", rot)

    @property
    def rotation(self) -> np.ndarray:
        return self._rot  # type: ignore[attr-defined]

    def _local(self, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        py, px = self.pixel_size
        return (cols - self.beam_center[1]) * px, -(rows - self.beam_center[0]) * py

    def lab(self, rows: np.ndarray | float, cols: np.ndarray | float) -> np.ndarray:
        """Lab coordinates (..., 3) in mm of continuous pixel positions."""
        r, c = np.asarray(rows, dtype=np.float64), np.asarray(cols, dtype=np.float64)
        x, y = self._local(r, c)
        rot = self.rotation
        return np.stack(
            [
                rot[0, 0] * x + rot[0, 1] * y,
                rot[1, 0] * x + rot[1, 1] * y,
                rot[2, 0] * x + rot[2, 1] * y + self.distance,
            ],
            axis=-1,
        )

    def pixel_to_angles(
        self, rows: np.ndarray | float, cols: np.ndarray | float
    ) -> tuple[np.ndarray, np.ndarray]:
        """(2theta, eta) in degrees of continuous pixel positions."""
        p = self.lab(rows, cols)
        radial = np.hypot(p[..., 0], p[..., 1])
        tth = np.degrees(np.arctan2(radial, p[..., 2]))
        eta = np.degrees(np.arctan2(p[..., 1], p[..., 0]))
        return tth, eta

    def angles_to_pixel(
        self, tth: np.ndarray | float, eta: np.ndarray | float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Continuous (row, col) where rays at (2theta, eta) degrees meet the panel plane.

        NaN where the ray runs parallel to the plane or away from it; positions
        off the panel's pixels are returned as they are (see ``on_panel``).
        """
        t, e = (
            np.radians(np.asarray(tth, dtype=np.float64)),
            np.radians(np.asarray(eta, dtype=np.float64)),
        )
        d = np.stack([np.sin(t) * np.cos(e), np.sin(t) * np.sin(e), np.cos(t)], axis=-1)
        rot = self.rotation
        normal = rot[:, 2]
        denom = d @ normal
        with np.errstate(divide="ignore", invalid="ignore"):
            scale = np.where(denom > 1e-12, self.distance * normal[2] / denom, np.nan)
        point = d * scale[..., None]
        point[..., 2] -= self.distance
        local = point @ rot  # rot.T @ v for each v: coordinates along the panel's axes
        py, px = self.pixel_size
        cols = self.beam_center[1] + local[..., 0] / px
        rows = self.beam_center[0] - local[..., 1] / py
        return rows, cols

    def on_panel(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """True where bilinear interpolation has all four neighbours on the panel.

        That is between the first and last pixel centres: [0, rows-1] x [0, cols-1].
        """
        with np.errstate(invalid="ignore"):
            return (
                np.isfinite(rows)
                & np.isfinite(cols)
                & (rows >= 0)
                & (rows <= self.rows - 1)
                & (cols >= 0)
                & (cols <= self.cols - 1)
            )

    def pixel_angle(self, tth_deg: float) -> tuple[float, float]:
        """Approximate (d2theta, deta) in degrees that one pixel spans at a ring.

        For a panel normal to the beam; good enough to choose sampling steps.
        """
        pitch = min(self.pixel_size)
        t = math.radians(tth_deg)
        dtth = math.degrees(pitch * math.cos(t) ** 2 / self.distance)
        radius = self.distance * math.tan(t)
        deta = math.degrees(pitch / radius) if radius > 0 else 360.0
        return dtth, deta
