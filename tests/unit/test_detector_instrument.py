"""Instrument files, panel flips and offsets, regions from rings and spots."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mpitrack.config import config_from_dict
from mpitrack.detector.instrument import (
    Instrument,
    PanelSpec,
    instrument_from_dict,
    instrument_to_dict,
    load_instrument,
)
from mpitrack.detector.regions import (
    RingSpec,
    SpotSpec,
    check_against_config,
    config_regions,
    load_regions,
    load_rings,
    omega_frames,
    regions_from_rings,
    regions_from_spots,
    write_regions,
)
from mpitrack.detector.sampling import build_sampler
from mpitrack.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "configs" / "instrument-example.yaml"


def test_the_example_instrument_loads_and_sees_a_ring_on_both_panels() -> None:
    instrument = load_instrument(EXAMPLE)
    assert [p.name for p in instrument.panels] == ["ff1", "ff2"]
    assert instrument.step == 0.25
    rings = [
        RingSpec(tth=6.0, width=0.2, eta=(-20.0, 20.0), omega=((10.0, 12.0),)),
        RingSpec(tth=6.0, width=0.2, eta=(160.0, 200.0), omega=((10.0, 12.0),)),
    ]
    grids = regions_from_rings(instrument, rings)
    for grid in grids:
        sampler = build_sampler(instrument, grid)
        assert sampler.coverage == 1.0
        assert {b.panel for b in sampler.blocks} == ({1} if grid.id == 0 else {0})


def test_instrument_errors_name_the_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "inst.yaml"
    path.write_text(
        "panels:\n  - name: a\n    rows: 10\n    cols: 10\n    pixel_size: [0.1, 0.1]\n"
        "    distance: far\n    beam_center: [5, 5]\n"
    )
    with pytest.raises(ConfigError, match=r"inst.yaml: panels\[0\].distance: expected a number"):
        load_instrument(path)
    path.write_text(
        "panels:\n  - name: a\n    rows: 10\n    cols: 10\n    pixel_size: [0.1, 0.1]\n"
        "    distance: 1\n    beam_center: [5, 5]\n    flip: diagonal\n"
    )
    with pytest.raises(ConfigError, match=r"panels\[0\].flip: 'diagonal' is not one of"):
        load_instrument(path)
    path.write_text("panels: []\nframes_per_scan: 10\n")
    with pytest.raises(ConfigError, match="at least one panel"):
        load_instrument(path)
    with pytest.raises(ConfigError, match="no such instrument file"):
        load_instrument(tmp_path / "missing.yaml")


def test_instrument_round_trips_through_plain_data() -> None:
    instrument = load_instrument(EXAMPLE)
    again = instrument_from_dict(instrument_to_dict(instrument), instrument.source)
    assert again == instrument


@pytest.mark.parametrize("flip", ["none", "ud", "lr", "both"])
def test_extract_inverts_store_with_flips_and_offsets(flip: str) -> None:
    spec = PanelSpec(
        name="p",
        rows=3,
        cols=4,
        pixel_size=(1, 1),
        distance=10,
        beam_center=(0, 0),
        flip=flip,  # type: ignore[arg-type]
        offset=(2, 1),
    )
    panel = np.arange(12).reshape(3, 4)
    stored = np.zeros((6, 7), dtype=int)
    spec.store(panel, stored)
    np.testing.assert_array_equal(spec.extract(stored), panel)
    if flip == "lr":
        assert stored[2, 1] == panel[0, 3]
    with pytest.raises(ValueError, match="no 3 x 4 block"):
        spec.extract(np.zeros((4, 4)))


def test_omega_windows_from_degrees_wrap() -> None:
    panels = (
        PanelSpec(name="p", rows=2, cols=2, pixel_size=(1, 1), distance=1, beam_center=(0, 0)),
    )
    instrument = Instrument(panels=panels, frames_per_scan=1440)
    assert omega_frames(instrument, 10.0, 12.0) == (40, 47)
    assert omega_frames(instrument, 359.0, 1.0) == (1436, 3)
    assert omega_frames(instrument, 0.0, 360.0) == (0, 1439)
    assert instrument.frame_of(-0.1) == 1439
    assert float(instrument.omega_position(0.125)) == pytest.approx(0.0)


def test_rings_split_eta_and_repeat_per_omega_window(tmp_path: Path) -> None:
    instrument = load_instrument(EXAMPLE)
    (tmp_path / "rings.yaml").write_text(
        "rings:\n  - {tth: 6.0, width: 0.2, eta: [-20, 20], n_regions: 4, "
        "omega: [[10, 12], [358, 2]]}\n"
    )
    grids = regions_from_rings(instrument, load_rings(tmp_path / "rings.yaml"), first_id=10)
    assert [g.id for g in grids] == list(range(10, 18))
    assert [g.eta for g in grids[:4]] == [(-20, -10), (-10, 0), (0, 10), (10, 20)]
    assert grids[4].frames == (1432, 7)
    dtth, deta = instrument.panels[0].geometry.pixel_angle(6.0)
    n_eta, n_tth = grids[0].shape
    assert (grids[0].tth[1] - grids[0].tth[0]) / (n_tth - 1) <= dtth
    assert (grids[0].eta[1] - grids[0].eta[0]) / (n_eta - 1) <= deta
    write_regions(tmp_path / "regions.yaml", grids)
    assert load_regions(tmp_path / "regions.yaml") == grids
    (tmp_path / "bad.yaml").write_text("rings:\n  - {tth: 6.0, width: -1, eta: [0, 1]}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: rings\[0\]: width -1"):
        load_rings(tmp_path / "bad.yaml")


def test_regions_from_spots_are_centred_on_them() -> None:
    instrument = load_instrument(EXAMPLE)
    grids = regions_from_spots(instrument, [SpotSpec(6.0, 10.0, 100.0)], 0.4, 4.0, 2.0)
    grid = grids[0]
    assert grid.to_index(6.0, 10.0) == pytest.approx(
        ((grid.shape[0] - 1) / 2, (grid.shape[1] - 1) / 2)
    )
    assert grid.frames == (396, 403)


def test_a_config_that_disagrees_with_the_regions_file_is_refused() -> None:
    instrument = load_instrument(EXAMPLE)
    grids = regions_from_rings(
        instrument, [RingSpec(tth=6.0, width=0.2, eta=(-20.0, 20.0), omega=((10.0, 12.0),))]
    )
    good = config_from_dict({"run": "x", "regions": config_regions(grids)})
    check_against_config(grids, good, "regions.yaml")
    bad = config_from_dict({"run": "x", "regions": [{"id": 0, "frames": [40, 48]}]})
    with pytest.raises(ConfigError, match=r"regions\[0\].frames: \[40, 48\] differs"):
        check_against_config(grids, bad, "regions.yaml")
    other = config_from_dict({"run": "x", "regions": [{"id": 3, "frames": [40, 47]}]})
    with pytest.raises(ConfigError, match=r"region 3 is not in regions\.yaml"):
        check_against_config(grids, other, "regions.yaml")
