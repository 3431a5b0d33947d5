"""Property-based tests: the MHT never fails on finite spots, whatever they look like.

Spots are drawn with the degeneracies real data produce after detection:
single-voxel spots (zero covariance), intensities from 1e-3 to 1e6 in one
scan, spots on top of each other, no detection error given or an error of
zero, empty and unusable scans. Several steps run; every row must be finite
and JSON-ready, and the checkpoint must round-trip to the same bytes and
resume identically.
"""

from __future__ import annotations

import json

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from mpitrack.track.mht import MHTParams
from mpitrack.track.spot import Spot
from mpitrack.track.tracker import RegionTracker

SHAPE = (11, 35, 35)
coordinate = st.tuples(
    st.floats(0.0, SHAPE[0] - 1.0), st.floats(0.0, SHAPE[1] - 1.0), st.floats(0.0, SHAPE[2] - 1.0)
)
intensity = st.floats(1e-3, 1e6)
width = st.one_of(st.just(0.0), st.floats(0.05, 4.0))
error = st.one_of(st.none(), st.just(0.0), st.floats(1e-4, 2.0))


ANCHORS = np.array([[5.0, 10.0, 10.0], [5.0, 12.0, 11.0], [3.0, 25.0, 20.0]])
offset = st.tuples(st.floats(-2.0, 2.0), st.floats(-2.0, 2.0), st.floats(-2.0, 2.0))


@st.composite
def spots(draw: st.DrawFn, clustered: bool = False) -> list[Spot]:
    """Spots anywhere, or (clustered) around three anchors so tracks persist, merge and split."""
    out = []
    for k in range(draw(st.integers(0, 8))):
        if clustered:
            pos = ANCHORS[k % len(ANCHORS)] + np.array(draw(offset))
        else:
            pos = np.array(draw(coordinate))
        sig = np.array([draw(width), draw(width), draw(width)])
        inten = draw(intensity)
        err = draw(error)
        features = {"intensity": inten, "position": {"omega": float(pos[0])}}
        out.append(
            Spot(
                position=pos,
                intensity=inten,
                covariance=np.diag(sig**2),
                peak=inten,
                n_voxels=1,
                features=features,
                position_error=None if err is None else np.full(3, err),
                intensity_error=None if err is None else err * inten,
            )
        )
    if out and draw(st.booleans()):  # the same spot twice (a blob seen twice)
        out.append(out[0])
    return out


scans = st.lists(st.one_of(st.none(), spots()), min_size=1, max_size=7)
clustered_scans = st.lists(st.one_of(st.none(), spots(clustered=True)), min_size=3, max_size=9)


def _check_rows(result: object) -> None:
    for row in result.rows:  # type: ignore[attr-defined]
        json.dumps(row.features, allow_nan=False)
        assert all(np.isfinite(v) for v in row.features["position"].values())


@settings(max_examples=60, deadline=None)
@given(scans)
def test_any_finite_spots_track_without_error(sequence: list[list[Spot] | None]) -> None:
    _track_and_resume(sequence)


@settings(max_examples=60, deadline=None)
@given(clustered_scans)
def test_crowded_spots_that_merge_and_split_track_without_error(
    sequence: list[list[Spot] | None],
) -> None:
    _track_and_resume(sequence)


def _track_and_resume(sequence: list[list[Spot] | None]) -> None:
    tracker = RegionTracker(None, MHTParams())
    for scan, scan_spots in enumerate(sequence):
        result = tracker.step_spots(scan, scan_spots, voxels=int(np.prod(SHAPE)))
        _check_rows(result)
        blob = tracker.to_checkpoint()
        restored = RegionTracker.from_checkpoint(blob, None, MHTParams())
        assert restored.to_checkpoint() == blob
    # a restored tracker continues exactly like the live one
    follow = [] if sequence[-1] is None else sequence[-1]
    nxt = len(sequence)
    assert restored.step_spots(nxt, follow) == tracker.step_spots(nxt, follow)
