"""Synthetic experiments: scenarios, rendering, ground truth and the files written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from mpitrack.config import load_config
from mpitrack.sim import SCENARIO_NAMES, ExperimentSpec, SimParams, plan, read_truth
from mpitrack.sim.render import background, expected_volume, render_volume, scene_background
from mpitrack.sim.scenarios import (
    DEAD_VALUE,
    GAP_VALUE,
    MASK_VALUES,
    SATURATION,
    TrueSpot,
    region_scenario,
)
from mpitrack.sim.truth import TruthError, overlap_flags
from mpitrack.sim.writer import NpyWriter, _Progress, config_dict, region_volume, write_experiment

PARAMS = SimParams()
ALL = tuple(n for n in SCENARIO_NAMES if n != "mixed")


def spec(tmp_path: Path, **kw) -> ExperimentSpec:
    values = {"out_dir": tmp_path / "exp", "regions": 2, "scans": 4, "seed": 3}
    values.update(kw)
    return ExperimentSpec(**values)


def records_of(truth, region: int, track: int):
    return sorted((r for r in truth.records if r.region_id == region and r.track_id == track),
                  key=lambda r: r.scan)  # fmt: skip


@pytest.mark.parametrize("name", SCENARIO_NAMES)
def test_scenarios_are_deterministic_and_seeded(name):
    a = region_scenario(name, 5, 2, 8, PARAMS)
    b = region_scenario(name, 5, 2, 8, PARAMS)
    c = region_scenario(name, 6, 2, 8, PARAMS)
    flat_a = np.concatenate([s.position for scan in a.scans for s in scan])
    assert np.array_equal(flat_a, np.concatenate([s.position for scan in b.scans for s in scan]))
    flat_c = np.concatenate([s.position for scan in c.scans for s in scan])
    assert flat_a.shape != flat_c.shape or not np.allclose(flat_a, flat_c)


@pytest.mark.parametrize("name", ALL)
def test_spots_stay_inside_the_region(name):
    inst = region_scenario(name, 1, 0, 30, PARAMS)
    shape = np.array(PARAMS.region_shape)
    for scan in inst.scans:
        for s in scan:
            assert np.all(s.position >= 1.5 * s.sigma) and np.all(
                s.position <= shape - 1 - 1.5 * s.sigma
            )


def test_unknown_scenario_lists_the_known_ones():
    with pytest.raises(ValueError, match="known scenarios: isolated, drifting"):
        region_scenario("nope", 0, 0, 3, PARAMS)


def test_impossible_parameters_are_refused(tmp_path):
    with pytest.raises(ValueError, match="non-positive"):
        plan(spec(tmp_path, params=SimParams(region_shape=(11, -3, 35))))
    with pytest.raises(ValueError, match="regions must be >= 1"):
        plan(spec(tmp_path, regions=0))
    with pytest.raises(ValueError, match=r"do not fit|more spots than fit"):
        plan(spec(tmp_path, scenarios=("dense",), params=SimParams(dense_spots=400)))
    with pytest.raises(ValueError, match="too small"):
        plan(spec(tmp_path, params=SimParams(region_shape=(3, 35, 35))))


def test_rendered_spot_integrates_to_its_intensity_and_centres_on_truth():
    spot = TrueSpot(0, np.array([5.3, 16.7, 17.2]), np.array([1.0, 1.5, 1.3]), 5000.0)
    signal = expected_volume(PARAMS, [spot]) - background(PARAMS)
    assert signal.sum() == pytest.approx(5000.0, rel=1e-4)
    idx = np.indices(signal.shape).reshape(3, -1)
    centre = (idx * signal.ravel()).sum(axis=1) / signal.sum()
    assert centre == pytest.approx(spot.position, abs=1e-3)
    cov = np.cov(idx, aweights=signal.ravel(), bias=True)
    # voxel integration adds 1/12 voxel^2 of variance per axis
    assert np.sqrt(np.diag(cov)) == pytest.approx(np.sqrt(spot.sigma**2 + 1 / 12), rel=1e-3)


def test_pseudo_voigt_keeps_centre_and_has_heavier_tails():
    spot = TrueSpot(0, np.array([5.0, 17.0, 17.0]), np.array([1.0, 1.5, 1.5]), 5000.0)
    voigt = SimParams(profile="pseudo-voigt", voigt_fraction=0.5)
    g = expected_volume(PARAMS, [spot]) - background(PARAMS)
    v = expected_volume(voigt, [spot]) - background(voigt)
    assert np.unravel_index(np.argmax(v), v.shape) == (5, 17, 17)
    assert v[5, 17, 0] > 10 * g[5, 17, 0]
    assert v.sum() < 5000.0  # Lorentzian tails leave the region


def test_noise_matches_the_snr_definition():
    rng = np.random.default_rng(0)
    flat = SimParams(background_slope=(0.0, 0.0))
    vol = render_volume(flat, [], rng)
    assert vol.dtype == np.float32
    assert vol.mean() == pytest.approx(flat.background, rel=0.01)
    assert vol.std() == pytest.approx(flat.noise_sigma, rel=0.03)


def test_broadening_conserves_intensity_and_widens():
    inst = region_scenario("broadening", 0, 0, 20, PARAMS)
    first, last = inst.scans[0][0], inst.scans[-1][0]
    assert first.intensity == last.intensity
    assert last.sigma[1:] == pytest.approx(2 * first.sigma[1:], rel=1e-6)
    assert last.sigma[0] == pytest.approx(1.5 * first.sigma[0], rel=1e-6)


def test_crossing_paths_are_straight_and_overlap_only_mid_experiment(tmp_path):
    exp = plan(spec(tmp_path, scenarios=("crossing",), regions=1, scans=12))
    for track in (0, 1):
        recs = records_of(exp.truth, 0, track)
        pos = np.array([r.position for r in recs])
        assert np.abs(np.diff(pos, n=2, axis=0)).max() < 1e-3  # constant velocity
        flags = [r.overlapping for r in recs]
        assert not flags[0] and not flags[-1]
        assert 2 <= sum(flags) <= 8
        first, last = flags.index(True), len(flags) - 1 - flags[::-1].index(True)
        assert all(flags[first : last + 1])  # one contiguous overlap
    a, b = (np.array([r.position for r in records_of(exp.truth, 0, t)]) for t in (0, 1))
    # they pass through each other: the order along axis2 flips
    assert np.sign(a[0, 2] - b[0, 2]) == -np.sign(a[-1, 2] - b[-1, 2])


def test_merge_then_split_overlaps_then_separates(tmp_path):
    exp = plan(spec(tmp_path, scenarios=("merge_then_split",), regions=1, scans=12))
    flags = [r.overlapping for r in records_of(exp.truth, 0, 0)]
    assert not flags[0] and flags[5] and not flags[-1]


def test_appear_vanish_has_births_and_deaths(tmp_path):
    exp = plan(spec(tmp_path, scenarios=("appear_vanish",), regions=1, scans=9))
    scans = {t: [r.scan for r in records_of(exp.truth, 0, t)] for t in (0, 1, 2)}
    assert scans[0] == list(range(9))
    assert scans[1] == list(range(3, 9))
    assert scans[2] == list(range(0, 6))  # dies after scan 2 * 9 // 3 - 1 = 5


def test_dense_has_many_spots_and_overlaps(tmp_path):
    exp = plan(spec(tmp_path, scenarios=("dense",), regions=3, scans=10))
    per_scan = {}
    for r in exp.truth.records:
        per_scan[(r.region_id, r.scan)] = per_scan.get((r.region_id, r.scan), 0) + 1
    assert min(per_scan.values()) >= 8
    assert sum(r.overlapping for r in exp.truth.records) > 0


def test_wrapped_window_crosses_frame_zero(tmp_path):
    exp = plan(spec(tmp_path, scenarios=("wrapped", "isolated")))
    assert exp.windows[0] == (1437, 1438, 1439, 0, 1, 2, 3, 4, 5, 6, 7)
    assert exp.truth.regions[0].frames == (1437, 7)
    assert exp.windows[1] == tuple(range(exp.windows[1][0], exp.windows[1][0] + 11))


def test_mixed_draws_regions_from_the_other_scenarios(tmp_path):
    exp = plan(spec(tmp_path, scenarios=("mixed",), regions=12))
    names = {r.scenario for r in exp.truth.regions}
    assert "mixed" not in names and len(names) >= 4 and names <= set(ALL)


def test_overlap_definition():
    s = np.array([1.0, 1.5, 1.5])
    a = TrueSpot(0, np.array([5.0, 10.0, 10.0]), s, 1.0)
    near = TrueSpot(1, np.array([5.0, 10.0, 12.9]), s, 1.0)  # 2.9 / 3.0 < 1
    far = TrueSpot(2, np.array([5.0, 10.0, 13.1]), s, 1.0)  # 3.1 / 3.0 > 1
    assert overlap_flags([a, near], [True, True], 1.0) == [True, True]
    assert overlap_flags([a, far], [True, True], 1.0) == [False, False]
    assert overlap_flags([a, near], [True, False], 1.0) == [False, False]


def test_written_experiment_is_complete_and_round_trips(tmp_path):
    exp = plan(spec(tmp_path, scenarios=("crossing", "wrapped"), regions=2, scans=3))
    summary = write_experiment(exp)
    out = tmp_path / "exp"
    files = sorted(p.name for p in (out / "frames").iterdir())
    assert len(files) == summary.frames_written == 2 * 3 * 11
    assert not [f for f in files if f.startswith(".") or f.endswith(".tmp")]
    frame = np.load(out / "frames" / "region_1_frame_1438_scan_2.npy", allow_pickle=False)
    assert frame.shape == (35, 35) and frame.dtype == np.float32
    again = read_truth(out / "truth.json")
    assert again == exp.truth
    raw = json.loads((out / "truth.json").read_text())
    assert raw["regions"][0]["scenario"] == "crossing" and raw["seed"] == 3
    assert raw["fingerprint"]["region_shape"] == [11, 35, 35]


def test_written_frames_reproduce_the_volume(tmp_path):
    exp = plan(spec(tmp_path, scenarios=("isolated",), regions=1, scans=2))
    write_experiment(exp)
    frames = [
        np.load(tmp_path / "exp" / "frames" / f"region_0_frame_{f}_scan_1.npy")
        for f in exp.windows[0]
    ]
    expected = render_volume(PARAMS, exp.scenarios[0].scans[1], np.random.default_rng([3, 0, 1, 1]))
    assert np.array_equal(np.stack(frames), expected)


def test_config_is_usable_by_the_loader(tmp_path):
    exp = plan(spec(tmp_path, scenarios=("wrapped", "dense"), regions=2, scans=2))
    summary = write_experiment(exp)
    cfg = load_config(summary.config)
    assert [r.frames for r in cfg.regions] == [(1437, 7), exp.truth.regions[1].frames]
    assert cfg.regions[1].description == "scenario=dense"
    assert (cfg.scans.first, cfg.scans.last) == (0, 1)
    assert tuple(cfg.frames.shape) == (35, 35)
    assert cfg.detection == type(cfg.detection)()  # defaults: nothing tuned per scenario
    assert cfg.frames.directory == tmp_path / "exp" / "frames"


def test_npy_writer_matches_numpy(tmp_path):
    arr = np.arange(12, dtype=np.float32).reshape(3, 4)
    NpyWriter((3, 4)).write(tmp_path / "a.npy", arr)
    np.save(tmp_path / "b.npy", arr)
    assert (tmp_path / "a.npy").read_bytes() == (tmp_path / "b.npy").read_bytes()
    with pytest.raises(ValueError, match="shape"):
        NpyWriter((3, 4)).write(tmp_path / "c.npy", arr.T)


def test_rate_limit_paces_frames_and_scans(tmp_path):
    now = [0.0]
    sleeps = []

    def clock():
        return now[0]

    def sleep(seconds):
        sleeps.append(seconds)
        now[0] += seconds

    exp = plan(spec(tmp_path, regions=1, scans=2, fps=100.0, scan_period=1.0))
    write_experiment(exp, sleep=sleep, clock=clock)
    # 11 frames per scan at 100 frames/s from each scan's start (0 s, then 1 s)
    assert now[0] == pytest.approx(1.0 + 10 / 100)
    assert sum(sleeps) == pytest.approx(now[0])


def test_progress_line_reports_rate_and_eta():
    p = _Progress(total=100, interval=1e9)
    p.started = 0.0
    p.done = 25
    line = p.line(now=5.0)
    assert "25/100 frames (25.0 %)" in line and "5 frames/s" in line and "ETA 15.0 s" in line


def test_unreadable_truth_is_a_clear_error(tmp_path):
    bad = tmp_path / "t.json"
    bad.write_text('{"format": "something else"}')
    with pytest.raises(TruthError, match="not an mpitrack ground-truth file"):
        read_truth(bad)
    with pytest.raises(TruthError, match="no such"):
        read_truth(tmp_path / "missing.json")


def _volumes(name: str, seed: int = 4, scans: int = 3) -> tuple:
    exp = plan(ExperimentSpec(out_dir=Path("."), scenarios=(name,), regions=1, scans=scans,
                              seed=seed))  # fmt: skip
    return exp, [region_volume(exp, 0, i) for i in range(scans)]


def test_zingers_are_bright_isolated_hits_at_new_places_every_scan():
    exp, vols = _volumes("zingers", scans=4)
    plain = [
        render_volume(PARAMS, exp.scenarios[0].scans[i], np.random.default_rng([4, 0, i, 1]))
        for i in range(4)
    ]
    hits = [v - p > 100 for v, p in zip(vols, plain, strict=True)]
    assert sum(int(h.sum()) for h in hits) >= 4
    for h in hits:
        labels, _ = ndimage.label(h, np.ones((3, 3, 3)))
        for box in ndimage.find_objects(labels):
            assert box[0].stop - box[0].start == 1  # a hit lies in one omega frame ...
        assert np.all(np.bincount(labels.ravel())[1:] <= 6)  # ... one streak, or two that touch
    places = [set(map(tuple, np.argwhere(h)[:, 1:])) for h in hits]
    assert not (places[0] & places[1])  # new places every scan
    assert {r.track_id for r in exp.truth.records} == {0, 1}  # zingers are no truth


def test_powder_ring_is_a_band_along_axis1_through_every_frame():
    exp, _ = _volumes("powder_ring")
    scene = exp.scenarios[0].scene
    centre, _, peak, _ = scene.ring
    bg = scene_background(PARAMS, scene) - background(PARAMS)
    column = round(centre)
    assert bg[:, :, column].min() > 0.5 * peak  # every frame, every eta
    assert 4 * PARAMS.noise_sigma <= peak <= 8 * PARAMS.noise_sigma
    far = (column + 8) % PARAMS.region_shape[2]
    assert bg[:, :, far].max() < 0.01 * peak
    # one spot's path crosses the ring
    path = np.array([r.position[2] for r in records_of(exp.truth, 0, 0)])
    assert np.min(np.abs(path - centre)) < 1e-3  # truth is rounded to 4 decimals


def test_diffuse_background_varies_along_axis2_and_with_omega():
    exp, _ = _volumes("diffuse")
    scene = exp.scenarios[0].scene
    bg = scene_background(PARAMS, scene)
    frame_means = bg.mean(axis=(1, 2))
    assert abs(frame_means[-1] / frame_means[0] - scene.omega_gain[1] / scene.omega_gain[0]) < 1e-9
    profile = bg[0].mean(axis=0) - background(PARAMS)[0].mean(axis=0) * scene.omega_gain[0]
    assert np.ptp(profile) > 2 * PARAMS.noise_sigma


def test_masked_frames_carry_the_marker_values_and_the_config_lists_them(tmp_path):
    exp, vols = _volumes("masked")
    scene = exp.scenarios[0].scene
    for v in vols:
        for column in scene.gap_columns:
            assert np.all(v[:, :, column] == np.float32(GAP_VALUE))
        for i, j in scene.dead_pixels:
            assert np.all(v[:, i, j] == np.float32(DEAD_VALUE))
    # the gap column lies on spot 0's path, a dead pixel on spot 1's first position
    path = np.array([r.position[2] for r in records_of(exp.truth, 0, 0)])
    assert np.min(np.abs(path - scene.gap_columns[0])) <= 0.5
    first = records_of(exp.truth, 0, 1)[0].position
    assert scene.dead_pixels[0] == (round(first[1]), round(first[2]))
    config = config_dict(exp)
    assert config["frames"]["mask"] == {"values": list(MASK_VALUES)}
    assert "mask" not in config_dict(plan(spec(tmp_path, scenarios=("isolated",))))["frames"]


def test_saturated_spots_have_flat_clipped_cores():
    _, vols = _volumes("saturated")
    for v in vols:
        assert v.max() == np.float32(SATURATION)
        assert np.count_nonzero(v == np.float32(SATURATION)) >= 4  # plateaus, not single voxels


def test_noise_free_regions_are_spots_on_an_exact_zero():
    exp, vols = _volumes("noise_free")
    spots = exp.scenarios[0].scans[0]
    expected = expected_volume(PARAMS, spots, exp.scenarios[0].scene)
    assert np.array_equal(vols[0], expected.astype(np.float32))
    assert np.mean(vols[0] == 0) > 0.25 and vols[0].min() == 0.0
    assert len(spots) == 3


def test_early_overlap_overlaps_in_the_first_scans_then_separates(tmp_path):
    exp = plan(spec(tmp_path, scenarios=("early_overlap",), regions=1, scans=12))
    flags = [r.overlapping for r in records_of(exp.truth, 0, 0)]
    assert flags[0] and flags[1] and not any(flags[5:])


def test_decelerating_crossing_pair_is_identical_and_slows_down_after_meeting(tmp_path):
    exp = plan(spec(tmp_path, scenarios=("decelerating_crossing",), regions=1, scans=20))
    a, b = (records_of(exp.truth, 0, t) for t in (0, 1))
    assert a[0].intensity == b[0].intensity and a[0].widths == b[0].widths
    pos = np.array([r.position for r in a])
    speed = np.linalg.norm(np.diff(pos, axis=0), axis=1)
    assert speed[-1] == pytest.approx(0.25 * speed[0], rel=1e-3)
    gap = np.linalg.norm(pos - np.array([r.position for r in b]), axis=1)
    assert gap.min() < 0.5  # they pass through each other
    assert any(r.overlapping for r in a)
