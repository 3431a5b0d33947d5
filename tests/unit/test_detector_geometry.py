"""Detector geometry: closed-form pixel <-> (2theta, eta), bilinear sampling matrices."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mpitrack.detector.geometry import PanelGeometry
from mpitrack.detector.instrument import Instrument, PanelSpec
from mpitrack.detector.regions import RegionGrid
from mpitrack.detector.sampling import bilinear_rows, build_sampler, cached_sampler
from mpitrack.errors import UsageError


def panel(**kw) -> PanelGeometry:
    base = dict(
        name="p",
        rows=200,
        cols=300,
        pixel_size=(0.1, 0.2),
        distance=500.0,
        beam_center=(100.0, 150.0),
    )
    base.update(kw)
    return PanelGeometry(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize("tilt", [(0.0, 0.0, 0.0), (2.0, -3.0, 1.5), (-10.0, 5.0, 30.0)], ids=str)
@pytest.mark.parametrize("beam", [(100.0, 150.0), (-20.0, 330.0)], ids=["centred", "off-panel"])
def test_pixel_to_angles_to_pixel_round_trips_within_a_hundredth_of_a_pixel(tilt, beam) -> None:
    geometry = panel(tilt=tilt, beam_center=beam)
    rng = np.random.default_rng(1)
    rows = rng.uniform(0, 199, 2000)
    cols = rng.uniform(0, 299, 2000)
    near = np.hypot(rows - beam[0], cols - beam[1]) < 1  # eta undefined at the beam itself
    rows, cols = rows[~near], cols[~near]
    tth, eta = geometry.pixel_to_angles(rows, cols)
    back_rows, back_cols = geometry.angles_to_pixel(tth, eta)
    assert np.max(np.abs(back_rows - rows)) < 0.01
    assert np.max(np.abs(back_cols - cols)) < 0.01


def test_untilted_panel_matches_the_analytic_angles() -> None:
    geometry = panel()
    # 50 columns right of the beam: x = 50 * 0.2 mm = 10 mm, eta 0.
    tth, eta = geometry.pixel_to_angles(100.0, 200.0)
    assert float(tth) == pytest.approx(math.degrees(math.atan(10.0 / 500.0)), abs=1e-12)
    assert float(eta) == pytest.approx(0.0, abs=1e-12)
    # 40 rows above the beam (rows grow downwards): y = 4 mm, eta 90.
    tth, eta = geometry.pixel_to_angles(60.0, 150.0)
    assert float(tth) == pytest.approx(math.degrees(math.atan(4.0 / 500.0)), abs=1e-12)
    assert float(eta) == pytest.approx(90.0, abs=1e-12)


def test_tilt_moves_pixels_off_the_untilted_angles() -> None:
    flat, tilted = panel(), panel(tilt=(0.0, 5.0, 0.0))
    assert (
        abs(float(flat.pixel_to_angles(100, 290)[0] - tilted.pixel_to_angles(100, 290)[0])) > 1e-3
    )


def test_rays_that_miss_the_panel_plane_are_nan_and_off_panel() -> None:
    geometry = panel()
    rows, cols = geometry.angles_to_pixel(np.array([120.0, 1.0]), np.array([0.0, 0.0]))
    assert np.isnan(rows[0]) and np.isnan(cols[0])
    assert list(geometry.on_panel(rows, cols)) == [False, True]


def test_bilinear_weights_of_a_known_point() -> None:
    _samples, pixels, weights, box = bilinear_rows(np.array([1.25]), np.array([2.5]), 4, 5)
    assert box == (1, 3, 2, 4)
    got = dict(zip(pixels.tolist(), weights.tolist(), strict=True))
    # box-local indices: (1,2)->0, (1,3)->1, (2,2)->2, (2,3)->3
    assert got == pytest.approx({0: 0.75 * 0.5, 1: 0.75 * 0.5, 2: 0.25 * 0.5, 3: 0.25 * 0.5})


def test_bilinear_on_the_last_pixel_centre_stays_inside() -> None:
    _, pixels, weights, box = bilinear_rows(np.array([3.0]), np.array([4.0]), 4, 5)
    assert box == (2, 4, 3, 5)
    assert weights.sum() == pytest.approx(1.0)
    assert weights[pixels.tolist().index(3)] == pytest.approx(1.0)  # (3, 4) in the box


def two_panels() -> Instrument:
    common = dict(rows=128, cols=128, pixel_size=(0.4, 0.4), distance=300.0)
    return Instrument(
        panels=(
            PanelSpec(name="a", beam_center=(64.0, 138.0), **common),  # type: ignore[arg-type]
            PanelSpec(
                name="b", beam_center=(64.0, -10.0), tilt=(1.0, -2.0, 0.5), flip="lr", **common
            ),  # type: ignore[arg-type]
        ),
        frames_per_scan=36,
    )


def test_interpolation_of_a_linear_image_is_exact() -> None:
    instrument = two_panels()
    grid = RegionGrid(id=0, frames=(0, 3), eta=(-20.0, 20.0), tth=(3.5, 4.2), shape=(30, 12))
    sampler = build_sampler(instrument, grid)
    assert sampler.coverage == 1.0
    rows, cols = np.mgrid[0:128, 0:128].astype(np.float64)
    image_b = 3.0 * rows - 2.0 * cols + 1000.0
    images = [np.zeros((128, 128)), image_b]
    got = sampler.apply(images)
    tth, eta = np.meshgrid(grid.tth_values(), grid.eta_values())
    r, c = instrument.panels[1].geometry.angles_to_pixel(tth, eta)
    np.testing.assert_allclose(got, 3.0 * r - 2.0 * c + 1000.0, rtol=1e-5)
    # every covered sample's weights sum to one
    total = sum(np.asarray(b.matrix.sum(axis=1)).ravel() for b in sampler.blocks)
    np.testing.assert_allclose(total, 1.0, rtol=1e-6)


def test_samples_on_no_panel_are_masked() -> None:
    instrument = two_panels()
    # eta 60..120 at this 2theta runs off the top of panel b (y > 25.6 mm)
    grid = RegionGrid(id=1, frames=(0, 3), eta=(30.0, 100.0), tth=(5.6, 5.8), shape=(40, 4))
    sampler = build_sampler(instrument, grid)
    assert 0 < sampler.coverage < 1
    out = sampler.apply([np.full((128, 128), 7.0), np.full((128, 128), 7.0)])
    covered = sampler.covered.reshape(out.shape)
    np.testing.assert_allclose(out[covered], 7.0, rtol=1e-6)
    assert np.isnan(out[~covered]).all()


def test_masked_raw_pixels_are_left_out_of_the_interpolation() -> None:
    instrument = two_panels()
    grid = RegionGrid(id=0, frames=(0, 3), eta=(-20.0, 20.0), tth=(3.5, 4.2), shape=(30, 12))
    sampler = build_sampler(instrument, grid)
    rows, cols = np.mgrid[0:128, 0:128]
    image = (3 * rows + 2 * cols + 1000).astype(np.uint32)
    clean = sampler.apply([np.zeros((128, 128), np.uint32), image])
    dead = image.copy()
    block = sampler.blocks[0]
    r0, _, c0, c1 = block.box
    dead[r0 + 3, c0 + 2] = 2**32 - 1  # the uint32 dead-pixel marker
    dead[r0 + 5, c0:c1] = 2**32 - 1  # and a gap row across the region
    got = sampler.apply([np.zeros((128, 128), np.uint32), dead], (4294967295.0,))
    assert np.nanmax(got) < 2000  # no marker leaks into any sample
    # samples that read a masked pixel are interpolated from the others: the image
    # is linear, so the renormalised value is close to the unmasked one
    seen = ~np.isnan(got)
    assert seen.mean() > 0.9
    np.testing.assert_allclose(got[seen], clean[seen], atol=4.0)
    unmasked = sampler.apply([np.zeros((128, 128), np.uint32), dead])  # no mask given
    assert np.nanmax(unmasked) > 1e8  # what the mask prevents


def test_a_sample_whose_pixels_are_all_masked_is_nan() -> None:
    instrument = two_panels()
    grid = RegionGrid(id=0, frames=(0, 3), eta=(-20.0, 20.0), tth=(3.5, 4.2), shape=(30, 12))
    sampler = build_sampler(instrument, grid)
    image = np.full((128, 128), 5.0, dtype=np.float32)
    image[:, :] = np.nan  # a panel that read nothing
    got = sampler.apply([np.zeros((128, 128), np.float32), image])
    assert np.isnan(got).all()


def test_a_region_no_panel_sees_is_refused() -> None:
    grid = RegionGrid(id=5, frames=(0, 3), eta=(80.0, 100.0), tth=(20.0, 21.0), shape=(4, 4))
    with pytest.raises(UsageError, match="region 5"):
        build_sampler(two_panels(), grid)


def test_cached_sampler_round_trips_and_rebuilds_a_corrupt_cache(tmp_path) -> None:
    instrument = two_panels()
    grid = RegionGrid(id=2, frames=(0, 3), eta=(160.0, 200.0), tth=(3.5, 4.0), shape=(20, 8))
    first = cached_sampler(instrument, grid, tmp_path)
    files = list(tmp_path.glob("sampler_2_*.npz"))
    assert len(files) == 1
    image = np.random.default_rng(0).uniform(0, 100, (128, 128))
    again = cached_sampler(instrument, grid, tmp_path)
    np.testing.assert_array_equal(again.apply([image, image]), first.apply([image, image]))
    files[0].write_bytes(b"not a zip")
    rebuilt = cached_sampler(instrument, grid, tmp_path)
    np.testing.assert_array_equal(rebuilt.apply([image, image]), first.apply([image, image]))
