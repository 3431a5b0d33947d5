"""Gating: which spots each predicted leaf may explain, alone or inside a blob.

A gate is any object with ``gate(predictions, measurements) -> Gating``; the
MHT builds one from the config (`gate_for`), so another gate is a new class
here, not an edit of the hypothesis generators.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from mpitrack.track import kalman
from mpitrack.track.mht.bundle import Measurements, Predictions
from mpitrack.track.mht.params import MHTParams


@dataclass(frozen=True)
class Gating:
    """Leaf x spot gating matrices, shape (L, n).

    solo: spot j may be leaf i's own spot (persist).
    loglik: log N(z_j; predicted centre, P + R) of leaf i's solo update.
    member: leaf i may sit inside spot j as one of several (overlap,
        fragments): the spot's own width added to its centroid noise.
    member_d2: squared Mahalanobis distances behind ``member`` (ranks overlap
        candidates).
    """

    solo: np.ndarray
    loglik: np.ndarray
    member: np.ndarray
    member_d2: np.ndarray


class Gate(Protocol):
    def gate(self, pred: Predictions, meas: Measurements) -> Gating: ...


@dataclass(frozen=True)
class ChiSquareGate:
    """Mahalanobis gates at one chi-square quantile (3 dof), for solo spots and blobs.

    Each leaf keeps at most ``max_spots`` spots per gate, the nearest: in
    clutter (zingers, a powder ring, noise) a young track's wide gate would
    otherwise take in every false spot around it, and its hypotheses would
    multiply with their number. A true spot is almost always among the
    nearest few.
    """

    threshold: float
    max_spots: int

    @classmethod
    def from_params(cls, params: MHTParams) -> ChiSquareGate:
        return cls(kalman.gate_threshold(params.gate_probability), params.max_gated_spots)

    def gate(self, pred: Predictions, meas: Measurements) -> Gating:
        # Only pairs that can pass the wider (blob) gate are solved:
        # d2 = nu' S^-1 nu >= |nu|^2 / lmax(S), and lmax(P + B) <= lmax(P) + lmax(B)
        # (a young track's wide P would let a trace bound take in most spots).
        blob = meas.noise + meas.cov
        nu2 = np.sum((meas.z[None, :, :] - pred.x[:, None, :3]) ** 2, axis=2)
        spread = _largest_eigenvalue(pred.p[:, :3, :3])[:, None] + _largest_eigenvalue(blob)
        li, sj = np.nonzero(nu2 <= self.threshold * spread * _BOUND_SLACK)
        shape = (pred.x.shape[0], meas.n)
        d2, ll, d2b = np.full(shape, np.inf), np.full(shape, -np.inf), np.full(shape, np.inf)
        # both gates in one batch: pairs with the centroid noise, then with the blob's
        n, k = meas.n, li.size
        d2_both, ll_both = kalman.pair_innovations(
            pred.x,
            pred.p,
            np.concatenate([meas.z, meas.z]),
            np.concatenate([meas.noise, blob]),
            np.concatenate([li, li]),
            np.concatenate([sj, sj + n]),
        )
        d2[li, sj], ll[li, sj], d2b[li, sj] = d2_both[:k], ll_both[:k], d2_both[k:]
        solo = _nearest(d2, self.threshold, self.max_spots)
        member = _nearest(d2b, self.threshold, self.max_spots)
        return Gating(solo, ll, member, d2b)


# Rounding in the eigenvalues must never drop a pair that passes the exact gate.
_BOUND_SLACK = 1.0 + 1e-9


def _largest_eigenvalue(m: np.ndarray) -> np.ndarray:
    """Largest eigenvalue of each symmetric 3 x 3 matrix of a stack (k, 3, 3)."""
    if not len(m):
        return np.zeros(0)
    return np.linalg.eigvalsh(m)[:, -1]


def _nearest(d2: np.ndarray, threshold: float, k: int) -> np.ndarray:
    """d2 <= threshold, keeping the k smallest distances of each row (ties: lower index).

    A row with at most k distances inside the gate keeps them all (every
    distance outside is larger), so only crowded rows are ranked.
    """
    inside = d2 <= threshold
    crowded = np.flatnonzero(inside.sum(axis=1) > k)
    if not crowded.size:
        return inside
    sub = d2[crowded]
    rank = np.argsort(np.argsort(sub, axis=1, kind="stable"), axis=1, kind="stable")
    inside[crowded] &= rank < k
    return inside


def gate_for(params: MHTParams) -> Gate:
    """The gate the config asks for."""
    return ChiSquareGate.from_params(params)
