"""One scan's inputs to hypothesis generation, as arrays: predictions and measurements.

Every live leaf is predicted once and every spot is turned into a measurement
(centre, noise, intensity, width) once; the gate and all hypothesis
generators then work on these two bundles, batched with numpy, instead of
each recomputing per (leaf, spot) pair.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mpitrack.track import kalman
from mpitrack.track.mht.params import MHTParams
from mpitrack.track.mht.state import Entry, Leaf, MHTState, Tree
from mpitrack.track.spot import Spot


@dataclass(frozen=True)
class Predictions:
    """Every live leaf predicted to this scan.

    live: (tree, leaf) pairs, in tree order then leaf order; index i of the
        arrays is live[i].
    x, p: predicted Kalman states (L, 6) and covariances (L, 6, 6).
    intensity_var: predicted variance of each leaf's log intensity (it drifts
        by ``intensity_drift`` per scan).
    intensity, width: each leaf's intensity (L,) and spot width (L, 3, 3), as
        arrays for the generators that compare many (leaf, spot) pairs.
    """

    live: list[tuple[Tree, Leaf]]
    x: np.ndarray
    p: np.ndarray
    intensity_var: list[float]
    intensity: np.ndarray
    width: np.ndarray

    @classmethod
    def of(cls, live: list[tuple[Tree, Leaf]], dt: float, params: MHTParams) -> Predictions:
        drift = dt * params.intensity_drift**2
        vpred = [lf.intensity_var + drift for _, lf in live]
        intensity = np.array([lf.intensity for _, lf in live], dtype=float)
        if live:
            xs = np.stack([lf.x for _, lf in live])
            ps = np.stack([lf.p for _, lf in live])
            xp, pp = kalman.predict(xs, ps, dt, params.process_noise)
            width = np.stack([lf.width for _, lf in live])
        else:
            xp = np.zeros((0, kalman.STATE))
            pp = np.zeros((0, kalman.STATE, kalman.STATE))
            width = np.zeros((0, 3, 3))
        return cls(live, xp, pp, vpred, intensity, width)

    def leaf(self, i: int) -> Leaf:
        return self.live[i][1]


@dataclass(frozen=True)
class Measurements:
    """The scan's spots as measurements (n of them).

    z: centres (n, 3); intensity: integrated intensities (n,); cov: the
    spots' own covariances (n, 3, 3), symmetrised; noise: centroid noise
    (n, 3, 3); intensity_var: variance of each spot's log intensity (n,).
    """

    z: np.ndarray
    intensity: np.ndarray
    cov: np.ndarray
    noise: np.ndarray
    intensity_var: np.ndarray

    @property
    def n(self) -> int:
        return int(self.z.shape[0])

    @classmethod
    def of(cls, spots: list[Spot], params: MHTParams) -> Measurements:
        if not spots:
            empty3 = np.zeros((0, 3, 3))
            return cls(np.zeros((0, 3)), np.zeros(0), empty3, empty3, np.zeros(0))
        z = np.stack([np.asarray(s.position, dtype=float) for s in spots])
        inten = np.array([float(s.intensity) for s in spots])
        cov = np.stack([np.asarray(s.covariance, dtype=float) for s in spots])
        cov = 0.5 * (cov + np.swapaxes(cov, 1, 2))
        r = centroid_noise(spots, cov, inten, params)
        ivar = np.array([log_intensity_var(sp, params) for sp in spots])
        return cls(z, inten, cov, r, ivar)


def leaf_on_spot(
    x: np.ndarray,
    p: np.ndarray,
    meas: Measurements,
    j: int,
    score: float,
    history: list[Entry],
    solo: int,
) -> Leaf:
    """A hypothesis whose intensity, intensity variance and width start from spot j."""
    return Leaf(
        x,
        p,
        float(meas.intensity[j]),
        float(meas.intensity_var[j]),
        0,
        False,
        False,
        score,
        history,
        meas.cov[j].copy(),
        solo,
    )


def reserve_uid(state: MHTState) -> int:
    """The next unused tree uid, taken."""
    uid = state.next_uid
    state.next_uid += 1
    return uid


def start_tree(state: MHTState, uid: int, birth_scan: int, birth_spot: int, leaf: Leaf) -> None:
    """A new tentative tree with one leaf."""
    state.trees.append(Tree(uid, birth_scan, birth_spot, 0, False, [leaf]))


def centroid_noise(
    spots: list[Spot], cov: np.ndarray, intensity: np.ndarray, params: MHTParams
) -> np.ndarray:
    """Each spot's centroid noise (n, 3, 3): detection's standard errors when it
    gives them, else spread / intensity (cov, intensity: the spots' own)."""
    floor, scale = params.measurement_noise_floor, params.measurement_noise_scale
    r = kalman.measurement_noise(cov, intensity, floor, scale)
    for j, spot in enumerate(spots):
        if spot.position_error is None:
            continue
        sd = np.asarray(spot.position_error, dtype=float)
        if sd.shape == (3,) and bool(np.all(np.isfinite(sd))) and bool(np.all(sd >= 0.0)):
            r[j] = np.diag(np.square(sd)) * scale + (floor**2) * np.eye(3)
    return r


def log_intensity_var(spot: Spot, params: MHTParams) -> float:
    """Variance of log(intensity): the spot's own error (if known) plus the track model's."""
    var = params.intensity_log_sigma**2
    err = spot.intensity_error
    if err is not None and math.isfinite(err) and spot.intensity > 0:
        var += (float(err) / float(spot.intensity)) ** 2
    return var


# A spot is at least one voxel wide: the variance of a uniform voxel.
_VOXEL_VARIANCE = 1.0 / 12.0


def separation_in_widths(d: np.ndarray, width: np.ndarray) -> np.ndarray:
    """|d| in units of a spot's standard deviation along d, for K pairs at once.

    d (K, 3): separations; width (K, 3, 3): the covariance of the spot they
    may have come from. The width is floored at one voxel's, so a degenerate
    (single-voxel) width never divides by zero; d = 0 gives 0.
    """
    norm = np.sqrt(np.einsum("ki,ki->k", d, d))
    u = d / np.maximum(norm, 1e-300)[:, None]
    along = np.einsum("kj,kj->k", np.einsum("ki,kij->kj", u, width), u)
    return norm / np.sqrt(np.maximum(along, _VOXEL_VARIANCE))
