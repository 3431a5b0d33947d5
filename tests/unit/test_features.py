"""Named spot features: moments, PSD covariance, JSON contract, physical units."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest

from mpitrack.track.features import (
    FWHM_PER_SIGMA,
    axis_names,
    build_spots,
    label_moments,
    psd_covariance,
    spot_features,
    spot_from_voxels,
    voxel_moments,
)

SHAPE = (11, 35, 35)


def assert_json_ready(value: Any, path: str = "features") -> None:
    """Only plain JSON types, and every number finite."""
    if isinstance(value, dict):
        for key, item in value.items():
            assert isinstance(key, str), f"{path}: key {key!r}"
            assert_json_ready(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            assert_json_ready(item, f"{path}[{i}]")
    else:
        assert type(value) in (int, float, bool, str), f"{path}: {type(value).__name__}"
        if isinstance(value, float):
            assert math.isfinite(value), f"{path}: {value}"


def two_voxel_spot() -> tuple[np.ndarray, np.ndarray]:
    coords = np.array([[2, 5, 7], [2, 5, 9]])
    values = np.array([1.0, 3.0])
    return values, coords


def test_voxel_moments_of_two_voxels() -> None:
    values, coords = two_voxel_spot()
    total, mean, cov = voxel_moments(values, coords)
    assert total == 4.0
    np.testing.assert_allclose(mean, [2.0, 5.0, 8.5])
    # Weighted variance along tth: (1*1.5^2 + 3*0.5^2) / 4 = 0.75; nothing else.
    expected = np.zeros((3, 3))
    expected[2, 2] = 0.75
    np.testing.assert_allclose(cov, expected, atol=1e-12)


def test_voxel_moments_refuse_non_positive_total_and_bad_coords() -> None:
    with pytest.raises(ValueError, match="not positive"):
        voxel_moments(np.array([1.0, -2.0]), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="shape"):
        voxel_moments(np.array([1.0, 2.0]), np.zeros((3, 3)))


def test_label_moments_agree_with_the_per_spot_reference() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, size=SHAPE).astype(np.int32)
    weights = rng.uniform(0.1, 5.0, size=SHAPE)
    moments = label_moments(labels, weights, 3)
    for lab in range(1, 4):
        coords = np.argwhere(labels == lab)
        total, mean, cov = voxel_moments(weights[labels == lab], coords)
        assert moments.total[lab - 1] == pytest.approx(total)
        np.testing.assert_allclose(moments.mean[lab - 1], mean, atol=1e-9)
        np.testing.assert_allclose(moments.covariance[lab - 1], cov, atol=1e-8)


def test_label_moments_zero_a_label_without_positive_weight() -> None:
    labels = np.zeros(SHAPE, dtype=np.int32)
    labels[1, 1, 1:3] = 1
    labels[5, 5, 5] = 2
    weights = np.ones(SHAPE)
    weights[5, 5, 5] = -1.0
    moments = label_moments(labels, weights, 2)
    assert moments.total[1] == -1.0
    np.testing.assert_array_equal(moments.mean[1], 0.0)
    np.testing.assert_allclose(moments.mean[0], [1.0, 1.0, 1.5])


def test_psd_covariance_clips_negative_eigenvalues() -> None:
    indefinite = np.array([[2.0, 0.0, 0.0], [0.0, -0.5, 0.0], [0.0, 0.0, 1.0]])
    psd, evals, axes = psd_covariance(indefinite)
    np.testing.assert_allclose(evals, [2.0, 1.0, 0.0])
    assert np.all(np.linalg.eigvalsh(psd) >= -1e-12)
    np.testing.assert_allclose(psd, np.diag([2.0, 0.0, 1.0]), atol=1e-12)
    np.testing.assert_allclose(axes @ axes.T, np.eye(3), atol=1e-12)


def test_principal_axes_have_a_fixed_sign_and_span_the_covariance() -> None:
    rng = np.random.default_rng(1)
    a = rng.normal(size=(3, 3))
    cov = a @ a.T
    psd, evals, axes = psd_covariance(cov)
    _, _, axes_neg = psd_covariance(cov.copy())
    np.testing.assert_array_equal(axes, axes_neg)
    for row in axes:
        assert row[np.argmax(np.abs(row))] > 0
    np.testing.assert_allclose(axes.T @ np.diag(evals) @ axes, cov, atol=1e-10)
    np.testing.assert_allclose(psd, cov, atol=1e-10)
    assert list(evals) == sorted(evals, reverse=True)


def test_stacked_psd_matches_one_at_a_time() -> None:
    rng = np.random.default_rng(2)
    stack = np.array([m @ m.T for m in rng.normal(size=(4, 3, 3))])
    psd_all, evals_all, axes_all = psd_covariance(stack)
    for i in range(4):
        psd, evals, axes = psd_covariance(stack[i])
        np.testing.assert_allclose(psd_all[i], psd)
        np.testing.assert_allclose(evals_all[i], evals)
        np.testing.assert_allclose(axes_all[i], axes)


def test_feature_keys_values_and_json_contract() -> None:
    cov = np.diag([0.25, 1.0, 4.0])
    features = spot_features(
        position=np.array([5.0, 10.5, 20.25]),
        covariance=cov,
        intensity=1234.5,
        peak=99.0,
        n_voxels=42,
        bbox=[(3, 7), (8, 13), (15, 26)],
        shape=SHAPE,
        noise=3.0,
    )
    assert_json_ready(features)
    json.dumps(features, allow_nan=False)
    assert features["position"] == {"omega": 5.0, "eta": 10.5, "tth": 20.25}
    assert features["intensity"] == 1234.5
    assert features["peak"] == 99.0
    assert features["n_voxels"] == 42
    assert features["bbox"] == {"omega": [3, 7], "eta": [8, 13], "tth": [15, 26]}
    assert features["bbox_size"] == {"omega": 5, "eta": 6, "tth": 12}
    assert features["bbox_centre"] == {"omega": 5.0, "eta": 10.5, "tth": 20.5}
    assert features["sigma"] == pytest.approx({"omega": 0.5, "eta": 1.0, "tth": 2.0})
    assert features["fwhm"] == pytest.approx(
        {"omega": 0.5 * FWHM_PER_SIGMA, "eta": FWHM_PER_SIGMA, "tth": 2 * FWHM_PER_SIGMA}
    )
    assert abs(FWHM_PER_SIGMA - 2.3548) < 1e-4
    np.testing.assert_allclose(features["covariance"], cov, atol=1e-12)
    assert features["principal_variances"] == pytest.approx([4.0, 1.0, 0.25])
    np.testing.assert_allclose(np.abs(features["principal_axes"]), np.eye(3)[::-1], atol=1e-12)
    assert features["touches_boundary"] == {"omega": False, "eta": False, "tth": False}
    assert features["peak_snr"] == pytest.approx(33.0)
    assert "physical" not in features


@pytest.mark.parametrize(
    ("bbox", "expected"),
    [
        ([(0, 3), (5, 9), (5, 9)], {"omega": True, "eta": False, "tth": False}),
        ([(2, 10), (5, 9), (5, 9)], {"omega": True, "eta": False, "tth": False}),
        ([(2, 5), (0, 34), (30, 34)], {"omega": False, "eta": True, "tth": True}),
    ],
)
def test_touches_boundary_per_axis(bbox: list, expected: dict) -> None:
    features = spot_features(
        position=np.array([3.0, 7.0, 7.0]),
        covariance=np.eye(3),
        intensity=10.0,
        peak=1.0,
        n_voxels=5,
        bbox=bbox,
        shape=SHAPE,
    )
    assert features["touches_boundary"] == expected


def test_physical_units_from_origin_and_step() -> None:
    values, coords = two_voxel_spot()
    origin = {"omega": 350.0, "eta": 10.0, "tth": 5.0}
    step = {"omega": 0.25, "eta": -0.1, "tth": 0.01}
    spot = spot_from_voxels(values, coords, SHAPE, origin=origin, step=step)
    physical = spot.features["physical"]
    assert physical["position"] == pytest.approx(
        {"omega": 350.5, "eta": 9.5, "tth": 5.085}
    )  # no modulo 360 on omega
    assert physical["sigma"]["tth"] == pytest.approx(0.01 * math.sqrt(0.75))
    assert physical["fwhm"]["tth"] == pytest.approx(0.01 * math.sqrt(0.75) * FWHM_PER_SIGMA)
    assert physical["sigma"]["eta"] == 0.0
    with pytest.raises(ValueError, match="tth"):
        spot_from_voxels(values, coords, SHAPE, origin=origin, step={"omega": 1.0, "eta": 1.0})


def test_spot_from_voxels_fills_the_spot_contract() -> None:
    values, coords = two_voxel_spot()
    spot = spot_from_voxels(values, coords, SHAPE, axes=("x", "y"))
    assert spot.intensity == 4.0
    assert spot.peak == 3.0
    assert spot.n_voxels == 2
    assert spot.position.shape == (3,)
    assert spot.covariance.shape == (3, 3)
    assert set(spot.features["position"]) == {"omega", "x", "y"}
    assert spot.features["bbox"] == {"omega": [2, 2], "x": [5, 5], "y": [7, 9]}
    assert_json_ready(spot.features)


def test_single_voxel_has_zero_width() -> None:
    spot = spot_from_voxels(np.array([5.0]), np.array([[1, 2, 3]]), SHAPE)
    assert spot.features["sigma"] == {"omega": 0.0, "eta": 0.0, "tth": 0.0}
    assert spot.features["principal_variances"] == [0.0, 0.0, 0.0]
    assert_json_ready(spot.features)


def test_build_spots_handles_none_and_refuses_nan() -> None:
    empty = build_spots(
        positions=np.empty((0, 3)),
        covariances=np.empty((0, 3, 3)),
        intensities=np.empty(0),
        peaks=np.empty(0),
        n_voxels=np.empty(0, dtype=int),
        bboxes=np.empty((0, 3, 2), dtype=int),
        shape=SHAPE,
    )
    assert empty == []
    with pytest.raises(ValueError, match="non-finite position"):
        spot_features(
            position=np.array([np.nan, 1.0, 1.0]),
            covariance=np.eye(3),
            intensity=1.0,
            peak=1.0,
            n_voxels=1,
            bbox=[(0, 0)] * 3,
            shape=SHAPE,
        )


@pytest.mark.parametrize("axes", [("eta", "eta"), ("omega", "tth"), ("eta",), ("eta", "")])
def test_axis_names_are_validated(axes: tuple) -> None:
    with pytest.raises(ValueError, match="axes"):
        axis_names(axes)


def test_axis_names_put_omega_first() -> None:
    assert axis_names(("eta", "tth")) == ("omega", "eta", "tth")


def test_noise_gives_position_and_intensity_errors() -> None:
    values, coords = two_voxel_spot()
    spot = spot_from_voxels(values, coords, SHAPE, noise=2.0)
    errors = spot.features["position_error"]
    # spread along tth: 1.5**2 + 0.5**2 = 2.5 around the centre 8.5; total 4.
    assert errors["tth"] == pytest.approx(2.0 * math.sqrt(2.5) / 4.0)
    assert errors["omega"] == 0.0
    assert spot.features["intensity_error"] == pytest.approx(2.0 * math.sqrt(2.0))
    assert "position_error" not in spot_from_voxels(values, coords, SHAPE).features
