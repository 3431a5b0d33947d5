"""The gate's pair prefilter drops only pairs that cannot pass the exact gates."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from mpitrack.track import kalman
from mpitrack.track.mht.bundle import Measurements, Predictions
from mpitrack.track.mht.gating import ChiSquareGate, _nearest
from mpitrack.track.mht.generate import _member_pairs


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
    width = np.tile(np.eye(3), (n_leaves, 1, 1))  # not used by the gate
    pred = Predictions([], rng.uniform(0, 20, size=(n_leaves, 6)), p, [], np.ones(n_leaves), width)
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


def test_nearest_keeps_the_k_smallest_inside_the_gate() -> None:
    """Rows with more than k spots in the gate keep their k nearest (ties: lower index)."""
    rng = np.random.default_rng(7)
    d2 = rng.uniform(0.0, 30.0, size=(50, 40))
    d2[3, :5] = 1.0  # a tie across the cut
    d2[4] = np.inf  # nothing in the gate
    threshold, k = 16.0, 4
    got = _nearest(d2.copy(), threshold, k)
    rank = np.argsort(np.argsort(d2, axis=1, kind="stable"), axis=1, kind="stable")
    np.testing.assert_array_equal(got, (d2 <= threshold) & (rank < k))
    assert (got.sum(axis=1) == k).sum() > 10 and not got[4].any()  # crowded rows were cut
    np.testing.assert_array_equal(np.flatnonzero(got[3]), [0, 1, 2, 3])


def test_member_pairs_are_every_leafs_spot_combinations_in_order() -> None:
    """Fragment candidates: per leaf, every pair of its member spots, as itertools lists them."""
    rng = np.random.default_rng(2)
    member = rng.uniform(size=(30, 12)) < 0.25
    member[0] = False  # a leaf with no spot
    member[1] = False
    member[1, 5] = True  # a leaf with one spot: no pair
    want = [
        (i, j1, j2)
        for i in range(member.shape[0])
        for j1, j2 in itertools.combinations(np.flatnonzero(member[i]).tolist(), 2)
    ]
    leaf, first, second = _member_pairs(member)
    assert list(zip(leaf.tolist(), first.tolist(), second.tolist(), strict=True)) == want
    assert len(want) > 30
    empty = _member_pairs(np.zeros((4, 6), dtype=bool))
    assert all(a.size == 0 for a in empty)
