"""Kalman filter pieces used by the MHT."""

import math

import numpy as np
import pytest

from mpitrack.track import kalman


def test_predict_moves_with_velocity_and_grows_uncertainty() -> None:
    x = np.array([1.0, 2.0, 3.0, 0.5, -1.0, 0.0])
    p = np.eye(6)
    xp, pp = kalman.predict(x, p, 2.0, 0.1)
    np.testing.assert_allclose(xp, [2.0, 0.0, 3.0, 0.5, -1.0, 0.0])
    assert np.all(np.diag(pp) > np.diag(p))
    np.testing.assert_array_equal(pp, pp.T)


def test_predict_batches_like_single() -> None:
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(4, 6))
    a = rng.normal(size=(4, 6, 6))
    ps = a @ np.swapaxes(a, 1, 2) + np.eye(6)
    xb, pb = kalman.predict(xs, ps, 1.0, 0.05)
    for k in range(4):
        x1, p1 = kalman.predict(xs[k], ps[k], 1.0, 0.05)
        np.testing.assert_allclose(xb[k], x1)
        np.testing.assert_allclose(pb[k], p1)


def test_update_pulls_towards_measurement_and_shrinks_covariance() -> None:
    x, p = kalman.initial_state(np.zeros(3), np.eye(3), 1.0)
    z = np.array([1.0, 0.0, -1.0])
    xn, pn = kalman.update(x, p, z, np.eye(3))
    np.testing.assert_allclose(xn[:3], [0.5, 0.0, -0.5])  # equal prior and noise: halfway
    assert np.all(np.diag(pn)[:3] < np.diag(p)[:3])


def test_measurement_noise_has_floor_and_scales_with_spread_over_intensity() -> None:
    cov = np.diag([4.0, 1.0, 0.0])
    r = kalman.measurement_noise(cov, 100.0, 0.5, 1.0)
    np.testing.assert_allclose(np.diag(r), [0.04 + 0.25, 0.01 + 0.25, 0.25])
    bright = kalman.measurement_noise(cov, 1000.0, 0.5, 1.0)
    assert bright[0, 0] < r[0, 0]


def test_measurement_noise_and_initial_state_batch_like_single() -> None:
    """One call for a scan's spots gives each spot exactly what a call of its own gives."""
    rng = np.random.default_rng(3)
    a = rng.normal(size=(5, 3, 3))
    cov = a @ np.swapaxes(a, 1, 2)
    inten = np.array([1e3, 0.0, 5.0, 2e6, 40.0])  # zero intensity: the 1e-12 floor
    r = kalman.measurement_noise(cov, inten, 0.25, 1.5)
    z = rng.normal(size=(5, 3))
    xs, ps = kalman.initial_state(z, r, 1.5)
    for k in range(5):
        np.testing.assert_array_equal(r[k], kalman.measurement_noise(cov[k], inten[k], 0.25, 1.5))
        x1, p1 = kalman.initial_state(z[k], r[k], 1.5)
        np.testing.assert_array_equal(xs[k], x1)
        np.testing.assert_array_equal(ps[k], p1)


def test_gate_threshold_is_chi2_quantile() -> None:
    assert kalman.gate_threshold(0.99) == pytest.approx(11.3449, rel=1e-4)


def test_pair_innovations_match_single_loglik() -> None:
    x, p = kalman.initial_state(np.array([1.0, 1.0, 1.0]), 0.5 * np.eye(3), 1.0)
    z = np.array([[1.5, 1.0, 0.0], [4.0, 4.0, 4.0]])
    r = np.stack([np.eye(3), 2 * np.eye(3)])
    leaf, spot = np.array([0, 0]), np.array([0, 1])
    d2, ll = kalman.pair_innovations(x[None], p[None], z, r, leaf, spot)
    assert d2.shape == (2,)
    assert d2[0] == pytest.approx((0.25 + 1.0) / 1.5)
    assert ll[1] == pytest.approx(kalman.gaussian_loglik(z[1] - x[:3], p[:3, :3] + r[1]))
    assert ll[0] > ll[1]
    assert math.isfinite(ll[1])


def test_batched_closed_forms_agree_with_lapack() -> None:
    """update_many, loglik_many and pair_innovations (adjugate over determinant)
    give what the single LAPACK-based update and loglik give, to rounding, also
    for covariances a thousand times wider along one axis than another."""
    rng = np.random.default_rng(5)
    g = 200
    a = rng.normal(size=(g, 6, 6))
    p = a @ np.swapaxes(a, 1, 2) + 0.1 * np.eye(6)
    u = np.linalg.qr(rng.normal(size=(g, 3, 3)))[0]
    r = u * rng.uniform(1e-3, 1.0, size=(g, 1, 3)) @ np.swapaxes(u, 1, 2)  # anisotropic SPD
    x, z = rng.normal(size=(g, 6)), rng.normal(size=(g, 3))
    xn, pn = kalman.update_many(x, p, z, r)
    ll = kalman.loglik_many(z - x[:, :3], p[:, :3, :3] + r)
    d2, ll_pairs = kalman.pair_innovations(x, p, z, r, np.arange(g), np.arange(g))
    for k in range(g):
        x1, p1 = kalman.update(x[k], p[k], z[k], r[k])
        np.testing.assert_allclose(xn[k], x1, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(pn[k], p1, rtol=1e-9, atol=1e-9)
        s = p[k, :3, :3] + r[k]
        want = kalman.gaussian_loglik(z[k] - x[k, :3], s)
        assert ll[k] == pytest.approx(want, rel=1e-10, abs=1e-10)
        assert ll_pairs[k] == pytest.approx(want, rel=1e-10, abs=1e-10)
        nu = z[k] - x[k, :3]
        assert d2[k] == pytest.approx(nu @ np.linalg.solve(s, nu), rel=1e-10)
