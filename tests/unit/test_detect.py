"""Spot detection on small constructed volumes whose right answer is known."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence

import numpy as np
import pytest

from mpitrack.track.detect import DetectParams, detect, detect_spots
from mpitrack.track.features import FWHM_PER_SIGMA

SHAPE = (11, 35, 35)
Blob = tuple[Sequence[float], Sequence[float], float]  # centre, sigma per axis, amplitude


def gaussians(shape: Sequence[int], blobs: Sequence[Blob]) -> np.ndarray:
    """Noise-free sum of anisotropic 3D Gaussians sampled at voxel centres."""
    grid = np.indices(shape, dtype=np.float64)
    out = np.zeros(shape)
    for centre, sigma, amp in blobs:
        r2 = sum(((grid[k] - centre[k]) / sigma[k]) ** 2 for k in range(3))
        out += amp * np.exp(-r2 / 2.0)
    return out


def make_volume(
    blobs: Sequence[Blob],
    *,
    shape: Sequence[int] = SHAPE,
    noise: float = 1.0,
    background: float = 10.0,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """(noisy float32 volume, noise-free signal) with a fixed-seed Generator."""
    signal = gaussians(shape, blobs)
    rng = np.random.default_rng(seed)
    volume = background + signal + rng.normal(scale=noise, size=tuple(shape))
    return volume.astype(np.float32), signal


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_single_gaussian_centre_intensity_and_width(seed: int) -> None:
    centre, sigma = (5.3, 17.2, 16.7), (1.2, 1.5, 2.0)
    volume, signal = make_volume([(centre, sigma, 200.0)], seed=seed)
    spots = detect_spots(volume, DetectParams())
    assert len(spots) == 1
    spot = spots[0]
    np.testing.assert_allclose(spot.position, centre, atol=0.05)
    assert spot.intensity == pytest.approx(signal.sum(), rel=0.02)
    widths = np.sqrt(np.diag(spot.covariance))
    np.testing.assert_allclose(widths, sigma, rtol=0.05)
    assert spot.peak == pytest.approx(signal.max(), abs=5.0)
    features = spot.features
    assert features["position"] == pytest.approx(
        dict(zip(("omega", "eta", "tth"), centre, strict=True)), abs=0.05
    )
    assert features["fwhm"]["tth"] == pytest.approx(FWHM_PER_SIGMA * 2.0, rel=0.05)
    assert not any(features["touches_boundary"].values())
    json.dumps(features, allow_nan=False)


def test_two_separated_spots_are_two() -> None:
    truth = [((3.0, 8.0, 9.0), (1.0, 1.3, 1.3), 80.0), ((7.0, 25.0, 26.0), (1.0, 1.3, 1.3), 40.0)]
    volume, _ = make_volume(truth, seed=3)
    spots = detect_spots(volume, DetectParams())
    assert len(spots) == 2
    # Brightest first.
    np.testing.assert_allclose(spots[0].position, truth[0][0], atol=0.1)
    np.testing.assert_allclose(spots[1].position, truth[1][0], atol=0.1)


def test_touching_spots_with_two_maxima_are_split() -> None:
    a = ((5.0, 17.0, 13.0), (1.2, 1.5, 1.5), 100.0)
    b = ((5.0, 17.0, 19.0), (1.2, 1.5, 1.5), 80.0)
    volume, _ = make_volume([a, b], seed=4)
    unsplit = detect(volume, DetectParams(split=False))
    assert len(unsplit.spots) == 1  # they really touch at the threshold
    result = detect(volume, DetectParams())
    assert len(result.spots) == 2
    by_tth = sorted(result.spots, key=lambda s: s.position[2])
    np.testing.assert_allclose(by_tth[0].position, a[0], atol=0.3)
    np.testing.assert_allclose(by_tth[1].position, b[0], atol=0.3)
    truth_a = gaussians(SHAPE, [a]).sum()
    truth_b = gaussians(SHAPE, [b]).sum()
    assert by_tth[0].intensity == pytest.approx(truth_a, rel=0.05)
    assert by_tth[1].intensity == pytest.approx(truth_b, rel=0.05)
    # Every voxel of the blob went to exactly one of the two spots.
    assert np.array_equal(result.labels > 0, unsplit.labels > 0)
    assert sum(s.n_voxels for s in result.spots) == unsplit.spots[0].n_voxels
    assert sum(s.intensity for s in result.spots) == pytest.approx(
        unsplit.spots[0].intensity, rel=0.01
    )


def test_split_follows_the_prominence_setting() -> None:
    # Two maxima (~103 and ~93) with a saddle at ~78: 16 % below the lower one.
    a = ((5.0, 17.0, 15.0), (1.2, 1.5, 1.5), 100.0)
    b = ((5.0, 17.0, 19.0), (1.2, 1.5, 1.5), 90.0)
    volume, signal = make_volume([a, b], seed=5, noise=0.5)
    line = signal[5, 17, 15:20]  # peak a .. peak b
    depth = (line[-1] - line.min()) / line[-1]
    assert 0.12 < depth < 0.18  # premise
    assert len(detect_spots(volume, DetectParams(split_min_prominence=0.2))) == 1
    assert len(detect_spots(volume, DetectParams(split_min_prominence=0.1))) == 2
    assert len(detect_spots(volume, DetectParams(split_min_prominence=0.1, split=False))) == 1


@pytest.mark.parametrize("amplitude", [60.0, 2000.0])
def test_elongated_single_maximum_is_not_split(amplitude: float) -> None:
    # Long along tth; noise bumps on the flanks of a very bright spot must not split it.
    blob = ((5.0, 17.0, 17.0), (1.2, 1.5, 5.0), amplitude)
    volume, signal = make_volume([blob], seed=6)
    spots = detect_spots(volume, DetectParams())
    assert len(spots) == 1
    np.testing.assert_allclose(spots[0].position, blob[0], atol=0.1)
    assert spots[0].intensity == pytest.approx(signal.sum(), rel=0.03)


@pytest.mark.parametrize("seed", range(5))
def test_noise_only_gives_no_spots(seed: int) -> None:
    volume, _ = make_volume([], seed=seed)
    assert detect_spots(volume, DetectParams(threshold_sigma=5.0)) == []


def test_constant_volume_gives_no_spots() -> None:
    assert detect_spots(np.full(SHAPE, 7.5, dtype=np.float32), DetectParams()) == []
    assert detect_spots(np.zeros(SHAPE), DetectParams()) == []


def test_empty_volume_is_refused_naming_the_shape() -> None:
    with pytest.raises(ValueError, match=r"empty.*\(0, 35, 35\)"):
        detect_spots(np.zeros((0, 35, 35)), DetectParams())


@pytest.mark.parametrize("shape", [(35, 35), (2, 11, 35, 35), ()])
def test_wrong_ndim_is_refused(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="3D"):
        detect_spots(np.zeros(shape), DetectParams())


def test_all_masked_volume_gives_no_spots() -> None:
    result = detect(np.full(SHAPE, np.nan), DetectParams())
    assert result.spots == [] and result.masked_voxels == np.prod(SHAPE)


def test_infinite_voxels_are_refused_with_the_count() -> None:
    volume, _ = make_volume([((5, 17, 17), (1, 1, 1), 50.0)])
    volume[0, 0, 0] = np.nan  # masked: fine
    volume[3, 4, 5] = np.inf
    volume[6, 7, 8] = -np.inf
    with pytest.raises(ValueError, match="2 infinite voxels"):
        detect_spots(volume, DetectParams())


def test_complex_volume_is_refused() -> None:
    with pytest.raises(ValueError, match="real"):
        detect_spots(np.zeros(SHAPE, dtype=complex), DetectParams())


def test_integer_volume_is_accepted() -> None:
    volume, _ = make_volume([((5.0, 17.0, 17.0), (1.2, 1.5, 1.5), 300.0)], background=100.0)
    as_int = np.round(volume).astype(np.uint16)
    spots = detect_spots(as_int, DetectParams())
    assert len(spots) == 1
    np.testing.assert_allclose(spots[0].position, (5.0, 17.0, 17.0), atol=0.05)


def test_single_voxel_spot_obeys_min_voxels() -> None:
    volume, _ = make_volume([], seed=7)
    volume[4, 10, 20] += 100.0
    no_zingers = {"faint_smoothing_sigma": 0, "zinger_ratio": 0}
    assert detect_spots(volume, DetectParams(min_voxels=3, **no_zingers)) == []
    spots = detect_spots(volume, DetectParams(min_voxels=1, integration_margin=0, **no_zingers))
    assert len(spots) == 1
    spot = spots[0]
    assert spot.n_voxels == 1
    np.testing.assert_allclose(spot.position, (4, 10, 20))
    assert spot.intensity == pytest.approx(100.0, abs=5.0)
    np.testing.assert_allclose(spot.covariance, 0.0, atol=1e-12)
    assert spot.features["sigma"] == {"omega": 0.0, "eta": 0.0, "tth": 0.0}


def test_spots_cut_by_the_region_boundary_are_detected_and_flagged() -> None:
    at_omega_start = ((0.3, 10.0, 10.0), (1.2, 1.5, 1.5), 100.0)
    at_tth_end = ((6.0, 25.0, 34.0), (1.2, 1.5, 1.5), 100.0)
    volume, _ = make_volume([at_omega_start, at_tth_end], seed=8)
    spots = sorted(detect_spots(volume, DetectParams()), key=lambda s: s.position[0])
    assert len(spots) == 2
    assert spots[0].features["touches_boundary"] == {"omega": True, "eta": False, "tth": False}
    assert spots[1].features["touches_boundary"] == {"omega": False, "eta": False, "tth": True}
    assert spots[0].features["bbox"]["omega"][0] == 0
    assert spots[1].features["bbox"]["tth"][1] == SHAPE[2] - 1


def test_sloped_background_needs_the_plane_model() -> None:
    blob = ((5.0, 17.0, 9.0), (1.2, 1.5, 1.5), 100.0)  # off-centre: local background != median
    volume, signal = make_volume([blob], seed=9)
    slope = 0.5 * np.arange(SHAPE[2], dtype=np.float32)  # 17 sigma across the region
    volume = volume + slope[None, None, :]
    flat = detect_spots(volume, DetectParams(background="median"))
    assert len(flat) != 1 or abs(flat[0].intensity - signal.sum()) > 0.05 * signal.sum()
    spots = detect_spots(volume, DetectParams(background="plane"))
    assert len(spots) == 1
    np.testing.assert_allclose(spots[0].position, blob[0], atol=0.05)
    assert spots[0].intensity == pytest.approx(signal.sum(), rel=0.02)


def test_smoothing_finds_a_faint_extended_spot() -> None:
    blob = ((5.0, 17.0, 17.0), (1.5, 2.0, 2.0), 3.5)  # peak below the 5 sigma cut
    volume, _ = make_volume([blob], seed=10)
    assert detect_spots(volume, DetectParams(faint_smoothing_sigma=0)) == []
    faint = detect_spots(volume, DetectParams())  # the default faint pass finds it
    assert len(faint) == 1
    np.testing.assert_allclose(faint[0].position, blob[0], atol=0.5)
    result = detect(volume, DetectParams(smoothing_sigma=1.0))
    assert len(result.spots) == 1
    np.testing.assert_allclose(result.spots[0].position, blob[0], atol=0.5)
    assert result.noise < 0.5  # the threshold follows the smoothed noise


@pytest.mark.parametrize("seed", [1, 3, 5])
def test_two_faint_spots_that_smoothing_joins_stay_two(seed: int) -> None:
    # peaks of 6 and 8 noise sigmas, 5.5 voxels (3.7 of their sigmas) apart:
    # smoothing joins them into one component of the faint pass, which the
    # split rule must cut again
    a = ((5.0, 17.0, 14.0), (1.2, 1.5, 1.5), 8.0)
    b = ((5.0, 17.0, 19.5), (1.2, 1.5, 1.5), 6.0)
    volume, _ = make_volume([a, b], seed=seed)
    spots = detect_spots(volume, DetectParams())
    assert len(spots) == 2
    for centre, _, _ in (a, b):
        nearest = min(np.linalg.norm(np.subtract(s.position, centre)) for s in spots)
        assert nearest < 1.0  # a faint piece's mask is wide: its centre is noisier


def test_a_weak_zinger_among_noisy_neighbours_is_no_faint_spot() -> None:
    volume, _ = make_volume([((5.0, 8.0, 8.0), (1.2, 1.5, 1.5), 40.0)], seed=31)
    plain = detect(volume, DetectParams())
    hit = volume.astype(np.float64)
    # 25 sigmas next to neighbours a little high: below the artifact test's
    # ratio of 10 in the frame and along omega, alone in one voxel
    hit[5, 25, 25] += 25.0
    hit[5, 24:27, 24:27] += 0.6
    hit[5, 25, 25] -= 0.6
    hit[[4, 6], 25, 25] += 3.0
    result = detect(hit, DetectParams())
    assert len(result.spots) == len(plain.spots) == 1
    assert result.zingers == plain.zingers + 1


def test_max_spots_keeps_the_brightest_and_warns(caplog: pytest.LogCaptureFixture) -> None:
    truth = [
        ((5.0, 6.0, 6.0), (1.0, 1.2, 1.2), 30.0),
        ((5.0, 6.0, 28.0), (1.0, 1.2, 1.2), 90.0),
        ((5.0, 28.0, 6.0), (1.0, 1.2, 1.2), 60.0),
        ((5.0, 28.0, 28.0), (1.0, 1.2, 1.2), 45.0),
    ]
    volume, _ = make_volume(truth, seed=11)
    assert len(detect_spots(volume, DetectParams())) == 4
    with caplog.at_level(logging.WARNING, logger="mpitrack.track.detect"):
        spots = detect_spots(volume, DetectParams(max_spots=2))
    assert [tuple(np.round(s.position[1:])) for s in spots] == [(6.0, 28.0), (28.0, 6.0)]
    assert "max_spots" in caplog.text


def test_labels_follow_the_spot_order() -> None:
    truth = [((3.0, 8.0, 9.0), (1.0, 1.3, 1.3), 40.0), ((7.0, 25.0, 26.0), (1.0, 1.3, 1.3), 80.0)]
    volume, _ = make_volume(truth, seed=12)
    result = detect(volume, DetectParams())
    assert int(result.labels.max()) == len(result.spots) == 2
    for i, spot in enumerate(result.spots, start=1):
        assert np.count_nonzero(result.labels == i) == spot.n_voxels
        _, eta, _ = np.nonzero(result.labels == i)
        assert spot.features["bbox"]["eta"] == [int(eta.min()), int(eta.max())]


def test_axis_names_and_physical_units_flow_into_features() -> None:
    volume, _ = make_volume([((5.0, 17.0, 17.0), (1.2, 1.5, 1.5), 100.0)], seed=13)
    origin = {"omega": 100.0, "x": -3.0, "y": 2.0}
    step = {"omega": 0.25, "x": 0.1, "y": -0.05}
    spots = detect_spots(volume, DetectParams(), axes=("x", "y"), origin=origin, step=step)
    features = spots[0].features
    assert set(features["position"]) == {"omega", "x", "y"}
    physical = features["physical"]
    for axis in ("omega", "x", "y"):
        expected = origin[axis] + step[axis] * features["position"][axis]
        assert physical["position"][axis] == pytest.approx(expected)
        assert physical["sigma"][axis] == pytest.approx(abs(step[axis]) * features["sigma"][axis])
    with pytest.raises(ValueError, match="omega"):
        detect_spots(volume, DetectParams(), axes=("omega", "tth"))


def test_detection_is_deterministic() -> None:
    volume, _ = make_volume(
        [((5.0, 17.0, 13.0), (1.2, 1.5, 1.5), 100.0), ((5.0, 17.0, 19.0), (1.2, 1.5, 1.5), 80.0)]
    )
    first = detect_spots(volume, DetectParams())
    second = detect_spots(volume.copy(), DetectParams())
    assert [s.features for s in first] == [s.features for s in second]


def test_dense_volume_recovers_most_spots() -> None:
    # 20 spots on a jittered 5 x 4 grid: dense, yet one right answer.
    rng = np.random.default_rng(14)
    centres = [
        (rng.uniform(2, 8), 4.0 + 6.5 * i + rng.uniform(-1, 1), 4.0 + 8.5 * j + rng.uniform(-1, 1))
        for i in range(5)
        for j in range(4)
    ]
    blobs = [
        (c, (1.0, 1.3, 1.3), float(a))
        for c, a in zip(centres, rng.uniform(20, 100, 20), strict=True)
    ]
    volume, _ = make_volume(blobs, seed=14)
    spots = detect_spots(volume, DetectParams())
    assert len(spots) == 20
    found = np.array([s.position for s in spots])
    for c in centres:
        assert np.min(np.linalg.norm(found - np.asarray(c), axis=1)) < 0.25


@pytest.mark.parametrize(
    "kwargs",
    [
        {"threshold_sigma": 0.0},
        {"connectivity": 4},
        {"min_voxels": 0},
        {"split_min_prominence": 1.0},
        {"background": "mean"},
        {"smoothing_sigma": -1.0},
        {"max_spots": 0},
        {"integration_margin": -1},
        {"gain": -1.0},
    ],
)
def test_bad_params_are_refused(kwargs: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        DetectParams(**kwargs)


def test_connectivity_decides_whether_corner_contact_joins_blobs() -> None:
    volume = np.zeros(SHAPE)
    volume[2:4, 2:4, 2:4] = 10.0
    volume[4:6, 4:6, 4:6] = 10.0  # touches the first cube at one corner only
    faces = detect_spots(volume, DetectParams(connectivity=1, threshold_abs=1.0))
    corners = detect_spots(volume, DetectParams(connectivity=3, threshold_abs=1.0))
    assert len(faces) == 2
    assert len(corners) == 1  # equal plateaus, no saddle between them: one spot
    assert corners[0].n_voxels == 16
    np.testing.assert_allclose(corners[0].position, (3.5, 3.5, 3.5))


def test_non_contiguous_view_gives_the_mirrored_answer() -> None:
    blob = ((5.0, 17.0, 12.0), (1.2, 1.5, 1.5), 100.0)
    volume, _ = make_volume([blob], seed=15)
    forward = detect_spots(volume, DetectParams())
    mirrored = detect_spots(volume[:, :, ::-1], DetectParams())
    assert len(forward) == len(mirrored) == 1
    # Not bit-identical: the first background estimate subsamples every 4th
    # voxel, which picks other voxels in mirrored order.
    assert mirrored[0].position[2] == pytest.approx(SHAPE[2] - 1 - forward[0].position[2], abs=0.01)
    assert mirrored[0].position[:2] == pytest.approx(forward[0].position[:2], abs=0.01)
    assert mirrored[0].intensity == pytest.approx(forward[0].intensity, rel=0.005)


def test_reported_position_error_matches_the_scatter() -> None:
    centre, sigma = (5.0, 17.0, 17.0), (1.2, 1.5, 1.5)
    found, reported = [], []
    for seed in range(30):
        volume, _ = make_volume([(centre, sigma, 20.0)], seed=100 + seed)
        spots = detect_spots(volume, DetectParams())
        assert len(spots) == 1
        found.append(spots[0].position)
        reported.append(list(spots[0].features["position_error"].values()))
    scatter = np.sqrt(np.mean((np.array(found) - centre) ** 2, axis=0))
    ratio = scatter / np.mean(reported, axis=0)
    assert np.all((ratio > 0.5) & (ratio < 2.0)), ratio


def test_sparse_counting_data_has_a_noise_level_and_an_unbiased_background() -> None:
    # Photon counting: mostly zeros, so the MAD is 0; noise must not collapse,
    # and the level must be the mean (0.3), not the median (0).
    rng = np.random.default_rng(16)
    blob = ((5.0, 17.0, 17.0), (1.2, 1.5, 1.5), 40.0)
    counts = rng.poisson(0.3, size=SHAPE).astype(np.uint16)
    assert detect_spots(counts, DetectParams(gain=1.0)) == []
    with_spot = rng.poisson(0.3 + gaussians(SHAPE, [blob])).astype(np.uint16)
    result = detect(with_spot, DetectParams(gain=1.0))
    assert result.noise > 0.3
    assert np.mean(result.background.level) == pytest.approx(0.3, abs=0.03)
    assert len(result.spots) == 1
    np.testing.assert_allclose(result.spots[0].position, blob[0], atol=0.2)
    assert result.spots[0].intensity == pytest.approx(gaussians(SHAPE, [blob]).sum(), rel=0.05)


def test_gain_keeps_shot_noise_from_splitting_counted_spots() -> None:
    blob = ((5.0, 17.0, 17.0), (1.2, 1.5, 1.5), 40.0)
    signal = gaussians(SHAPE, [blob])
    volumes = [
        np.random.default_rng(seed).poisson(0.3 + signal).astype(np.uint16) for seed in range(12)
    ]
    gaussian_only = [len(detect_spots(v, DetectParams())) for v in volumes]
    assert max(gaussian_only) > 1  # premise: shot noise does split some of them
    assert [len(detect_spots(v, DetectParams(gain=1.0))) for v in volumes] == [1] * 12


@pytest.mark.parametrize("sigma", [1.0, 2.0])
def test_smoothing_does_not_raise_false_alarms_at_the_region_edges(sigma: float) -> None:
    # Edge voxels are reused by the filter: without the per-voxel noise gain,
    # corners exceed 5 sigma of the interior noise in most noise-only volumes.
    for seed in range(8):
        volume, _ = make_volume([], seed=seed)
        assert detect_spots(volume, DetectParams(smoothing_sigma=sigma)) == []


# ---------------------------------------------------------------- issue 13: artifacts, masks


def test_a_gap_column_through_a_spot_neither_splits_it_nor_halves_it() -> None:
    blob = ((5.0, 17.0, 17.3), (1.2, 1.5, 1.5), 200.0)
    volume, _ = make_volume([blob], seed=21)
    whole = detect_spots(volume, DetectParams())
    gapped = volume.astype(np.float64)
    gapped[:, :, 17] = np.nan  # the gap column, masked by frames.mask
    result = detect(gapped, DetectParams())
    assert len(result.spots) == 1 and len(whole) == 1
    spot = result.spots[0]
    assert spot.intensity == pytest.approx(whole[0].intensity, rel=0.1)
    np.testing.assert_allclose(spot.position, blob[0], atol=0.15)
    assert spot.features["masked_voxels"] > 0
    assert result.masked_voxels == SHAPE[0] * SHAPE[1]


def test_an_unmasked_dead_pixel_at_the_uint32_marker_is_a_hot_pixel_not_a_spot() -> None:
    volume, _ = make_volume([((5.0, 17.0, 17.0), (1.2, 1.5, 1.5), 100.0)], seed=22)
    volume = volume.astype(np.float64)
    volume[:, 8, 25] = 2.0**32 - 1  # in every frame, as a dead pixel is
    result = detect(volume, DetectParams())
    assert result.hot_pixels == 1
    assert len(result.spots) == 1
    np.testing.assert_allclose(result.spots[0].position, (5.0, 17.0, 17.0), atol=0.1)


def test_zingers_are_rejected_and_counted_even_on_a_spots_flank() -> None:
    volume, _ = make_volume([((5.0, 17.0, 17.0), (1.2, 1.5, 1.5), 40.0)], seed=23)
    plain = detect(volume, DetectParams())
    hit = volume.astype(np.float64)
    hit[2, 4, 6] += 3000.0  # alone in the noise
    hit[7, 30, 9:12] += 800.0  # a streak of three
    hit[6, 19, 19] += 400.0  # on the spot's flank
    result = detect(hit, DetectParams())
    assert result.zingers == 3
    assert len(result.spots) == len(plain.spots) == 1
    assert result.spots[0].intensity == pytest.approx(plain.spots[0].intensity, rel=0.05)
    off = detect(hit, DetectParams(zinger_ratio=0))
    assert len(off.spots) > 1  # what the rule prevents


def test_a_powder_ring_and_an_omega_varying_level_give_no_false_spots() -> None:
    blob = ((5.0, 10.0, 24.0), (1.2, 1.5, 1.5), 20.0)
    volume, _ = make_volume([blob], seed=24, noise=1.0, background=10.0)
    tth = np.arange(SHAPE[2])
    ring = 6.0 * np.exp(-0.5 * ((tth - 14.0) / 1.5) ** 2)  # 6 sigma, like a weak spot
    hump = 12.0 * np.exp(-0.5 * ((tth - 30.0) / 8.0) ** 2)
    gain = np.linspace(0.8, 1.2, SHAPE[0])[:, None, None]
    structured = (volume + ring + hump) * gain

    def right(spots: list) -> bool:
        one = len(spots) == 1
        return one and bool(np.all(np.abs(spots[0].position - blob[0]) < 0.2))

    for background in ("median", "plane"):  # premise: a flat or planar model fails here
        assert not right(detect_spots(structured, DetectParams(background=background)))
    assert right(detect_spots(structured, DetectParams()))


def test_a_spot_drifting_diagonally_between_omega_frames_stays_one_spot() -> None:
    # its core moves one pixel in both frame axes from one frame to the next,
    # so its two brightest voxels touch only at a corner
    volume = np.zeros((5, 15, 15))
    volume[2, 6:9, 6:9] = [[20, 60, 20], [60, 1000, 60], [20, 60, 200]]
    volume[3, 7:10, 7:10] = [[150, 60, 20], [60, 800, 60], [20, 60, 20]]
    spots = detect_spots(volume, DetectParams())
    assert len(spots) == 1
