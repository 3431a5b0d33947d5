"""RegionTracker end to end on small synthetic volumes (real detection)."""

from __future__ import annotations

import numpy as np
import pytest

from mpitrack.track.detect import DetectParams
from mpitrack.track.mht import MHTParams
from mpitrack.track.tracker import RegionTracker

SHAPE = (11, 35, 35)


def volume(centres: list[tuple[float, float, float]], seed: int) -> np.ndarray:
    """Gaussian spots (sigma 1, 1.3, 1.3; peak 400) on a noisy flat background."""
    rng = np.random.default_rng(seed)
    grid = np.indices(SHAPE, dtype=float)
    vol = 50.0 + rng.normal(0.0, 3.0, SHAPE)
    for c in centres:
        r2 = ((grid[0] - c[0]) / 1.0) ** 2 + sum(((grid[a] - c[a]) / 1.3) ** 2 for a in (1, 2))
        vol += 400.0 * np.exp(-0.5 * r2)
    return vol


def scene(s: int) -> list[tuple[float, float, float]]:
    return [(5.0, 8.0 + 0.5 * s, 10.0), (4.0, 25.0, 25.0 - 0.3 * s)]


def test_step_detects_and_tracks_with_named_axes() -> None:
    tr = RegionTracker(DetectParams(), MHTParams(), axes=("chi", "two_theta"))
    for s in range(6):
        res = tr.step(s, volume(scene(s), s))
    now = {r.track_id: r for r in res.rows if r.scan == 5}
    assert set(now) == {1, 2}
    assert all(set(r.features["position"]) == {"omega", "chi", "two_theta"} for r in now.values())
    mover = min(now.values(), key=lambda r: r.features["position"]["chi"])
    other = now[3 - mover.track_id]
    assert mover.features["position"]["chi"] == pytest.approx(10.5, abs=0.3)
    assert other.features["position"]["two_theta"] == pytest.approx(23.5, abs=0.3)
    assert all(r.detected and not r.overlapping for r in now.values())
    # the same track all along: its rows in the open window follow the motion
    chis = [r.features["position"]["chi"] for r in res.rows if r.track_id == mover.track_id]
    assert chis == pytest.approx([9.5, 10.0, 10.5], abs=0.3)
    assert mover.features["intensity"] > 0


def test_unusable_volume_and_checkpoint_continue_identically() -> None:
    live = RegionTracker(DetectParams(), MHTParams())
    for s in range(4):
        live.step(s, volume(scene(s), s))
    res = live.step(4, None)
    assert {(r.track_id, r.detected) for r in res.rows if r.scan == 4} == {(1, False), (2, False)}
    restored = RegionTracker.from_checkpoint(live.to_checkpoint(), DetectParams(), MHTParams())
    for s in (5, 6):
        vol = volume(scene(s), s)
        assert live.step(s, vol) == restored.step(s, vol)


def test_bad_scan_order_is_refused_before_detection() -> None:
    tr = RegionTracker(DetectParams(), MHTParams())
    tr.step(3, volume(scene(3), 3))
    with pytest.raises(ValueError, match="not after"):
        tr.step(3, np.zeros((2, 2)))  # would also be a bad volume: the order check comes first
    assert tr.last_scan == 3
