"""The gate's pair prefilter drops only pairs that cannot pass the exact gates."""

from __future__ import annotations

import numpy as np
import pytest

from mpitrack.track import kalman
from mpitrack.track.mht.bundle import Measurements, Predictions
from mpitrack.track.mht.gating import ChiSquareGate


def _spd(rng: np.random.Generator, k: int, scale: float) -> np.ndarray:
    """k random symmetric positive definite 3 x 3 matrices, strongly anisotropic."""
    a = rng.normal(size=(k, 3, 3)) * rng.uniform(0.05, scale, size=(k, 1, 3))
    return a @ np.swapaxes(a, 1, 2) + 1e-3 * np.eye(3)


def _brute_force(pred: Predictions, meas: Measurements) -> tuple:
    """Every (leaf, spot) pair solved, no prefilter."""
    shape = (pred.x.shape[0], meas.n)
    li, sj = (a.ravel() for a in np.indices(shape))
    d2, ll = kalman.pair_innovations(pred.x, pred.p, meas.z, meas.noise, li, sj)
    d2b, _ = kalman.pair_innovations(pred.x, pred.p, meas.z, meas.noise + meas.cov, li, sj)
    return d2.reshape(shape), ll.reshape(shape), d2b.reshape(shape)


@pytest.mark.parametrize("seed", range(5))
def test_gate_equals_all_pairs(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_leaves, n_spots = 40, 30
    p = np.zeros((n_leaves, 6, 6))
    p[:, :3, :3] = _spd(rng, n_leaves, 3.0)  # young and old tracks: wide and narrow
    p[:, 3:, 3:] = np.eye(3)
    pred = Predictions([], rng.uniform(0, 20, size=(n_leaves, 6)), p, [])
    cov = _spd(rng, n_spots, 2.0)
    meas = Measurements(
        rng.uniform(0, 20, size=(n_spots, 3)),
        np.ones(n_spots),
        cov,
        _spd(rng, n_spots, 0.5),
        np.ones(n_spots),
    )
    gate = ChiSquareGate(kalman.gate_threshold(0.999), max_spots=n_spots)
    got = gate.gate(pred, meas)
    d2, ll, d2b = _brute_force(pred, meas)
    assert got.member.sum() > 0 and got.member.sum() < got.member.size  # a real test case
    np.testing.assert_array_equal(got.solo, d2 <= gate.threshold)
    np.testing.assert_array_equal(got.member, d2b <= gate.threshold)
    np.testing.assert_array_equal(got.loglik[got.solo], ll[got.solo])
    np.testing.assert_array_equal(got.member_d2[got.member], d2b[got.member])
