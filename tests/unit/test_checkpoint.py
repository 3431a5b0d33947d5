"""Tracker checkpoints: exact round trip, versioning, bounded size."""

from __future__ import annotations

import numpy as np
import pytest

from mpitrack.track import checkpoint
from mpitrack.track.checkpoint import CheckpointError, CheckpointVersionError
from mpitrack.track.mht import MHTParams
from mpitrack.track.spot import Spot
from mpitrack.track.tracker import RegionTracker

PARAMS = MHTParams()


def spot(pos: tuple[float, float, float], intensity: float = 100.0, sigma: float = 1.0) -> Spot:
    return Spot(
        position=np.array(pos, dtype=float),
        intensity=float(intensity),
        covariance=np.eye(3) * sigma**2,
        peak=intensity / 10.0,
        n_voxels=27,
        features={"intensity": float(intensity), "bbox": (1, 2, 3), "nested": {"a": 0.1}},
    )


def scene(s: int, rng: np.random.Generator) -> list[Spot]:
    """Two crossing spots (one blob while close) and a third, jittered."""
    xa, xb = float(s % 13), 12.0 - s % 13
    spots = [spot((4.0, 3.0 + rng.normal(0, 0.1), 20.0 + rng.normal(0, 0.1)), 150.0)]
    if abs(xa - xb) <= 2.0:
        spots.append(spot((5.0, (xa + xb) / 2.0, 10.0), 200.0, 1.5))
    else:
        spots += [spot((5.0, xa, 10.0)), spot((5.0, xb, 10.0))]
    return spots


@pytest.mark.parametrize("cut", [2, 5, 6, 9])
def test_round_trip_mid_sequence_gives_identical_results(cut: int) -> None:
    rng = np.random.default_rng(3)
    seq = [scene(s, rng) for s in range(14)]
    live = RegionTracker(None, PARAMS)
    for s in range(cut):
        live.step_spots(s, seq[s])
    data = live.to_checkpoint()
    restored = RegionTracker.from_checkpoint(data, None, PARAMS)
    assert restored.last_scan == live.last_scan == cut - 1
    assert restored.to_checkpoint() == data  # same bytes for the same state
    for s in range(cut, 14):
        a = live.step_spots(s, seq[s])
        b = restored.step_spots(s, seq[s])
        assert a == b
    assert live.to_checkpoint() == restored.to_checkpoint()


def test_round_trip_of_fresh_tracker_and_unusable_scans() -> None:
    fresh = RegionTracker(None, PARAMS)
    again = RegionTracker.from_checkpoint(fresh.to_checkpoint(), None, PARAMS)
    assert again.last_scan is None
    fresh.step_spots(0, [spot((1.0, 1.0, 1.0))])
    fresh.step(1, None)
    again = RegionTracker.from_checkpoint(fresh.to_checkpoint(), None, PARAMS)
    assert again.step_spots(2, [spot((1.0, 1.0, 1.0))]) == fresh.step_spots(
        2, [spot((1.0, 1.0, 1.0))]
    )


def test_other_format_version_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    tr = RegionTracker(None, PARAMS)
    tr.step_spots(0, [spot((1.0, 1.0, 1.0))])
    monkeypatch.setattr(checkpoint, "FORMAT_VERSION", 99)
    future = tr.to_checkpoint()
    monkeypatch.undo()
    assert checkpoint.read_format_version(future) == 99
    expected = checkpoint.FORMAT_VERSION
    with pytest.raises(CheckpointVersionError, match=rf"version 99.*version {expected}") as err:
        RegionTracker.from_checkpoint(future, None, PARAMS)
    assert (err.value.found, err.value.expected) == (99, expected)


@pytest.mark.parametrize("junk", [b"", b"not a checkpoint", b"PK\x03\x04garbage"])
def test_garbage_is_a_clear_error(junk: bytes) -> None:
    with pytest.raises(CheckpointError, match="checkpoint"):
        RegionTracker.from_checkpoint(junk, None, PARAMS)


def test_no_pickle_inside() -> None:
    tr = RegionTracker(None, PARAMS)
    for s in range(4):
        tr.step_spots(s, scene(s, np.random.default_rng(s)))
    with np.load(__import__("io").BytesIO(tr.to_checkpoint()), allow_pickle=False) as npz:
        assert all(npz[name].dtype != object for name in npz.files)


def test_size_does_not_grow_with_scans() -> None:
    rng = np.random.default_rng(5)
    tr = RegionTracker(None, PARAMS)
    sizes = {}
    for s in range(200):
        tr.step_spots(s, scene(s, rng))
        if s in (10, 199):
            sizes[s] = len(tr.to_checkpoint())
    assert sizes[199] <= 1.25 * sizes[10]


def test_twenty_tracks_fit_in_100_kb() -> None:
    rng = np.random.default_rng(11)
    centres = rng.uniform([1, 2, 2], [10, 33, 33], size=(20, 3))
    tr = RegionTracker(None, PARAMS)
    for s in range(30):
        spots = [
            spot(tuple(c + rng.normal(0, 0.15, 3)), 100.0 + 5 * k) for k, c in enumerate(centres)
        ]
        res = tr.step_spots(s, spots)
    assert len({r.track_id for r in res.rows}) == 20
    assert len(tr.to_checkpoint()) <= 100_000
