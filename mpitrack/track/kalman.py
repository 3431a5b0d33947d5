"""Constant-velocity Kalman filter for one track in (omega, axis1, axis2).

State x = (position[3], velocity[3]) in region-local voxel units, one time
unit = one scan. Every track hypothesis (leaf) carries its own (x, P), derived
from its parent's by `predict` + `update`, so a track is never re-initialised
between scans and a revision inside the N-scan window simply picks another
leaf with its own filter history.

Functions work on batches (leading axis = leaves) where the MHT expands many
hypotheses at once; batching keeps a 20-spot step inside its time budget.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from scipy.stats import chi2

DIM = 3
STATE = 2 * DIM
_LOG_2PI = math.log(2.0 * math.pi)


def transition(dt: float) -> np.ndarray:
    """Constant-velocity transition matrix for a step of dt scans."""
    f = np.eye(STATE)
    f[:DIM, DIM:] = dt * np.eye(DIM)
    return f


def process_noise(dt: float, q: float) -> np.ndarray:
    """Discrete white-noise-acceleration covariance (q = acceleration variance per scan^3)."""
    eye = np.eye(DIM)
    return q * np.block(
        [
            [dt**3 / 3.0 * eye, dt**2 / 2.0 * eye],
            [dt**2 / 2.0 * eye, dt * eye],
        ]
    )


def predict(x: np.ndarray, p: np.ndarray, dt: float, q: float) -> tuple[np.ndarray, np.ndarray]:
    """Propagate states (..., 6) and covariances (..., 6, 6) by dt scans."""
    f = transition(dt)
    xp = x @ f.T
    pp = f @ p @ f.T + process_noise(dt, q)
    return xp, 0.5 * (pp + np.swapaxes(pp, -1, -2))


def measurement_noise(
    covariance: np.ndarray, intensity: float | np.ndarray, floor: float, scale: float
) -> np.ndarray:
    """Centroid noise of a spot: its spread over its (photon-like) intensity, plus a floor.

    A centre of mass of I counts spread with covariance C has error covariance
    about C / I; the floor keeps tiny or degenerate spots from claiming
    sub-voxel certainty they do not have. Works on one spot (3, 3) or a stack
    of spots (..., 3, 3) with their intensities (...).
    """
    c = np.asarray(covariance, dtype=float)
    c = 0.5 * (c + np.swapaxes(c, -1, -2))
    counts = np.maximum(np.asarray(intensity, dtype=float), 1e-12)
    r = scale * c / counts[..., None, None]
    return r + (floor**2) * np.eye(DIM)


def initial_state(
    z: np.ndarray, r: np.ndarray, velocity_std: float
) -> tuple[np.ndarray, np.ndarray]:
    """A new track at measured centre z (noise r) with unknown velocity.

    One track (z (3,), r (3, 3)) or a stack of them (z (..., 3), r (..., 3, 3)).
    """
    x = np.zeros((*np.shape(z)[:-1], STATE))
    x[..., :DIM] = z
    p = np.zeros((*np.shape(r)[:-2], STATE, STATE))
    p[..., :DIM, :DIM] = r
    p[..., DIM:, DIM:] = (velocity_std**2) * np.eye(DIM)
    return x, p


@lru_cache(maxsize=64)
def gate_threshold(probability: float, dim: int = DIM) -> float:
    """Squared Mahalanobis distance that holds `probability` of true measurements."""
    return float(chi2.ppf(probability, dim))


def pair_innovations(
    xp: np.ndarray, pp: np.ndarray, z: np.ndarray, r: np.ndarray, li: np.ndarray, sj: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Squared Mahalanobis distances and log-likelihoods of (leaf li[k], spot sj[k]) pairs.

    xp (L, 6), pp (L, 6, 6), z (n, 3), r (n, 3, 3), li and sj (K,) -> d2 (K,),
    loglik (K,): log N(z - predicted centre; 0, P + R).
    """
    nu = z[sj] - xp[li, :DIM]
    s = pp[li, :DIM, :DIM] + r[sj]
    d2, det = _quadratic_and_det(s, nu)
    return d2, -0.5 * (d2 + np.log(det) + DIM * _LOG_2PI)


def _cofactors(s: np.ndarray) -> tuple[np.ndarray, ...]:
    """The six distinct cofactors of each symmetric 3 x 3 matrix of a stack, and its determinant.

    Returned as (c00, c01, c02, c11, c12, c22, det). The batched linear
    algebra of the MHT (thousands of 3 x 3 innovation covariances a scan) is
    done in closed form, adjugate over determinant: LAPACK's per-matrix call
    costs ten times as much as these few products. Innovation covariances are
    well conditioned (centroid noise is floored), so both agree to rounding.
    """
    s00, s01, s02 = s[:, 0, 0], s[:, 0, 1], s[:, 0, 2]
    s11, s12, s22 = s[:, 1, 1], s[:, 1, 2], s[:, 2, 2]
    c00 = s11 * s22 - s12 * s12
    c01 = s02 * s12 - s01 * s22
    c02 = s01 * s12 - s02 * s11
    c11 = s00 * s22 - s02 * s02
    c12 = s01 * s02 - s00 * s12
    c22 = s00 * s11 - s01 * s01
    det = s00 * c00 + s01 * c01 + s02 * c02
    return c00, c01, c02, c11, c12, c22, det


def _quadratic_and_det(s: np.ndarray, nu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """nu' S^-1 nu and det S for K symmetric positive definite 3 x 3 matrices S."""
    c00, c01, c02, c11, c12, c22, det = _cofactors(s)
    x, y, w = nu[:, 0], nu[:, 1], nu[:, 2]
    q = c00 * x * x + c11 * y * y + c22 * w * w + 2.0 * (c01 * x * y + c02 * x * w + c12 * y * w)
    return q / det, det


def _inverse(s: np.ndarray) -> np.ndarray:
    """S^-1 for K symmetric positive definite 3 x 3 matrices S (symmetric by construction)."""
    c00, c01, c02, c11, c12, c22, det = _cofactors(s)
    inv = np.empty_like(s)
    inv[:, 0, 0], inv[:, 1, 1], inv[:, 2, 2] = c00 / det, c11 / det, c22 / det
    inv[:, 0, 1] = inv[:, 1, 0] = c01 / det
    inv[:, 0, 2] = inv[:, 2, 0] = c02 / det
    inv[:, 1, 2] = inv[:, 2, 1] = c12 / det
    return inv


def update(
    x: np.ndarray, p: np.ndarray, z: np.ndarray, r: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Kalman update of one state (6,) with one position measurement z (3,), noise r."""
    s = p[:DIM, :DIM] + r
    k = np.linalg.solve(s, p[:DIM, :]).T  # (6, 3) = P H^T S^-1 (S symmetric)
    xn = x + k @ (z - x[:DIM])
    pn = p - k @ p[:DIM, :]
    return xn, 0.5 * (pn + pn.T)


def gaussian_loglik(nu: np.ndarray, s: np.ndarray) -> float:
    """log N(nu; 0, s) for one 3-vector."""
    sol = np.linalg.solve(s, nu)
    _, logdet = np.linalg.slogdet(s)
    return float(-0.5 * (nu @ sol + logdet + DIM * _LOG_2PI))


def update_many(
    x: np.ndarray, p: np.ndarray, z: np.ndarray, r: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """`update` for G independent (state, measurement) pairs: x (G,6), p (G,6,6), z, r."""
    s = p[:, :DIM, :DIM] + r
    k = np.swapaxes(_inverse(s) @ p[:, :DIM, :], 1, 2)  # (G, 6, 3) = P H^T S^-1
    xn = x + np.einsum("gij,gj->gi", k, z - x[:, :DIM])
    pn = p - k @ p[:, :DIM, :]
    return xn, 0.5 * (pn + np.swapaxes(pn, 1, 2))


def loglik_many(nu: np.ndarray, s: np.ndarray) -> np.ndarray:
    """log N(nu_g; 0, s_g) for G vectors: nu (G,3), s (G,3,3)."""
    d2, det = _quadratic_and_det(s, nu)
    return -0.5 * (d2 + np.log(det) + DIM * _LOG_2PI)
