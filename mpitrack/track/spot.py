"""The contract between detection and tracking.

Detection (detect.py + features.py) turns one region volume into a list of `Spot`;
the MHT (track/mht/) consumes only the typed attributes defined here, never the
``features`` dict (that is for storage), so either side can change its
internals without touching the other.

Coordinates are region-local voxel units in the order (omega, axis1, axis2):
omega is the index inside the region's omega window (0 .. n_omega-1, in window
order, so a window that wraps through frame 0 is still contiguous), axis1/axis2
are the two frame axes (named by config, default ``eta`` and ``tth``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Spot:
    """One detected spot in one (region, scan) volume.

    position: intensity-weighted centre of mass, shape (3,), voxel units.
    intensity: integrated, background-subtracted intensity (> 0).
    covariance: intensity-weighted covariance of the voxel coordinates, shape (3, 3).
    peak: maximum background-subtracted value.
    n_voxels: number of voxels in the spot's mask.
    features: JSON-ready named features (nested dicts keyed by axis name, plain
        floats and ints, no NaN); stored as the measurement's JSONB.
    position_error: standard error of the centre per axis, shape (3,), from
        the background noise (None: unknown; the tracker then derives the
        centroid noise from covariance / intensity).
    intensity_error: standard error of the integrated intensity (None: unknown).
    """

    position: np.ndarray
    intensity: float
    covariance: np.ndarray
    peak: float
    n_voxels: int
    features: dict[str, Any] = field(default_factory=dict)
    position_error: np.ndarray | None = None
    intensity_error: float | None = None
