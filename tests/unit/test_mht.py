"""MHT behaviour on hand-built spot sequences whose right answer is known.

One test per hypothesis type (persist, miss, overlap, split, birth, death),
plus revision inside the N-scan window, pruning bounds, bad input and
determinism.
"""

from __future__ import annotations

import numpy as np
import pytest

from mpitrack.track.mht import MHTParams
from mpitrack.track.result import StepResult, TrackRow, apply_step
from mpitrack.track.spot import Spot
from mpitrack.track.tracker import RegionTracker


def spot(pos: tuple[float, float, float], intensity: float = 100.0, sigma: float = 1.0) -> Spot:
    return Spot(
        position=np.array(pos, dtype=float),
        intensity=float(intensity),
        covariance=np.eye(3) * sigma**2,
        peak=intensity / 10.0,
        n_voxels=27,
        features={"intensity": float(intensity), "peak": intensity / 10.0},
    )


def rows_at(result: StepResult, scan: int) -> dict[int, TrackRow]:
    return {r.track_id: r for r in result.rows if r.scan == scan}


def eta(row: TrackRow) -> float:
    return float(row.features["position"]["eta"])


def tracker(**kw: object) -> RegionTracker:
    return RegionTracker(None, MHTParams(**kw))


def crossing_spots(s: int, merged_intensity: float = 200.0) -> list[Spot]:
    """Two spots on one line moving through each other; one blob while close."""
    xa, xb = float(s), 12.0 - s
    if abs(xa - xb) <= 2.0:
        return [spot((5.0, (xa + xb) / 2.0, 10.0), merged_intensity, 1.5)]
    return [spot((5.0, xa, 10.0)), spot((5.0, xb, 10.0))]


def test_persist_keeps_one_id_and_measured_positions() -> None:
    tr = tracker()
    for s in range(8):
        res = tr.step_spots(s, [spot((3.0, 2.0 + 0.5 * s, 7.0))])
        now = rows_at(res, s)
        assert list(now) == [1]
        row = now[1]
        assert row.detected and not row.overlapping
        assert row.features["position"] == {"omega": 3.0, "eta": 2.0 + 0.5 * s, "tth": 7.0}
        assert row.features["intensity"] == 100.0
    assert tr.last_scan == 7


def test_window_rows_cover_open_scans() -> None:
    tr = tracker(n_scan=3)
    for s in range(5):
        res = tr.step_spots(10 + s, [spot((3.0, 2.0, 7.0))])
    assert res.first_open_scan == 12
    assert sorted(r.scan for r in res.rows) == [12, 13, 14]


def test_missed_detection_is_predicted_then_reacquired_with_same_id() -> None:
    tr = tracker()
    for s in range(5):
        tr.step_spots(s, [spot((3.0, 1.0 * s, 7.0))])
    res = tr.step_spots(5, [])
    miss = rows_at(res, 5)[1]
    assert not miss.detected and miss.features["predicted"] is True
    assert eta(miss) == pytest.approx(5.0, abs=0.3)  # constant-velocity prediction
    res = tr.step_spots(6, [spot((3.0, 6.0, 7.0))])
    assert set(rows_at(res, 6)) == {1}
    assert rows_at(res, 6)[1].detected
    assert not rows_at(res, 5)[1].detected  # still the missed scan, same track


def test_overlap_two_tracks_share_a_spot_with_summed_intensity() -> None:
    tr = tracker()
    merged = []
    for s in range(7):
        res = tr.step_spots(s, crossing_spots(s))
        if len(crossing_spots(s)) == 1:
            merged.append(s)
            now = rows_at(res, s)
            assert set(now) == {1, 2}
            assert all(r.detected and r.overlapping for r in now.values())
            assert now[1].features["overlap_with"] == [2]
            assert now[2].features["overlap_with"] == [1]
            # each keeps its own estimate, on its own side of the crossing
            assert eta(now[1]) == pytest.approx(float(s), abs=1.0)
            assert eta(now[2]) == pytest.approx(12.0 - s, abs=1.0)
    assert merged == [5, 6]


def test_no_overlap_when_intensity_is_not_the_sum() -> None:
    tr = tracker()
    for s in range(7):
        res = tr.step_spots(s, crossing_spots(s, merged_intensity=100.0))
    now = rows_at(res, 6)
    assert not any(r.overlapping for r in now.values())
    assert sum(r.detected for r in now.values()) == 1


def test_split_after_crossing_restores_identities() -> None:
    tr = tracker()
    db: dict[tuple[int, int], TrackRow] = {}
    for s in range(13):
        apply_step(db, tr.step_spots(s, crossing_spots(s)))
    assert sorted({tid for tid, _ in db}) == [1, 2]
    for s in range(13):
        a, b = db[(1, s)], db[(2, s)]
        assert a.detected and b.detected
        assert a.overlapping == b.overlapping == (s in (5, 6, 7))
        if not a.overlapping:  # track 1 moves +eta all along, track 2 -eta: not swapped
            assert eta(a) == float(s)
            assert eta(b) == 12.0 - s


def test_birth_gives_next_id_from_its_first_scan() -> None:
    tr = tracker()
    for s in range(6):
        spots = [spot((2.0, 3.0, 3.0))]
        if s >= 3:
            spots.append(spot((8.0, 20.0, 20.0), 300.0))
        res = tr.step_spots(s, spots)
    assert rows_at(res, 3)[2].features["intensity"] == 300.0
    assert set(rows_at(res, 5)) == {1, 2}
    tr2 = tracker()
    first = tr2.step_spots(0, [spot((2.0, 3.0, 3.0)), spot((8.0, 20.0, 20.0))])
    assert [r.track_id for r in first.rows] == [1, 2]


def test_death_after_k_misses_withdraws_trailing_predictions() -> None:
    tr = tracker(max_misses=3, n_scan=3)
    for s in range(5):
        tr.step_spots(s, [spot((3.0, 4.0, 5.0))])
    res5 = tr.step_spots(5, [])
    assert not rows_at(res5, 5)[1].detected
    tr.step_spots(6, [])
    res7 = tr.step_spots(7, [])  # third miss: dead
    assert res7.rows == ()  # its predicted rows for 5 and 6 are withdrawn too
    res8 = tr.step_spots(8, [])
    assert res8.rows == ()
    res9 = tr.step_spots(9, [spot((3.0, 4.0, 5.0))])
    assert set(rows_at(res9, 9)) == {2}  # a new track, not the dead one


def test_revision_inside_window_withdraws_a_one_scan_track() -> None:
    tr = tracker(n_scan=3, birth_density=1e-4, clutter_density=1e-5)
    for s in range(3):
        tr.step_spots(s, [spot((3.0, 4.0, 5.0))])
    res3 = tr.step_spots(3, [spot((3.0, 4.0, 5.0)), spot((9.0, 30.0, 30.0))])
    assert set(rows_at(res3, 3)) == {1, 2}  # best guess now: a new track
    tr.step_spots(4, [spot((3.0, 4.0, 5.0))])
    res5 = tr.step_spots(5, [spot((3.0, 4.0, 5.0))])
    assert res5.first_open_scan == 3
    assert set(rows_at(res5, 3)) == {1}  # revised: the lone spot was clutter
    assert all(r.track_id == 1 for r in res5.rows)


def test_revision_changes_association_of_an_earlier_scan() -> None:
    """Scan 1 has two candidates; scans 2-3 show which one really continued track 1."""
    tr = tracker(n_scan=3)
    tr.step_spots(0, [spot((3.0, 0.0, 5.0))])
    res1 = tr.step_spots(1, [spot((3.0, -0.9, 5.0)), spot((3.0, 1.0, 5.0))])
    assert eta(rows_at(res1, 1)[1]) == -0.9  # nearest first
    assert eta(rows_at(res1, 1)[2]) == 1.0
    tr.step_spots(2, [spot((3.0, 2.0, 5.0))])
    res3 = tr.step_spots(3, [spot((3.0, 3.0, 5.0))])
    assert res3.first_open_scan == 1
    at1 = rows_at(res3, 1)
    assert set(at1) == {1}  # the scan-1 spot at -0.9 was clutter after all
    assert eta(at1[1]) == 1.0  # and track 1 went through +1.0
    assert [eta(r) for r in res3.rows] == [1.0, 2.0, 3.0]


def test_pruning_keeps_leaves_bounded() -> None:
    tr = tracker(max_leaves=6)
    rng = np.random.default_rng(1)
    for s in range(12):
        spots = [
            spot(
                (5.0 + rng.normal(0, 0.5), 10.0 + rng.normal(0, 0.7), 10.0 + rng.normal(0, 0.7)),
                100.0 * rng.uniform(0.7, 1.4),
            )
            for _ in range(5)
        ]
        tr.step_spots(s, spots)
        counts = tr.leaf_counts()
        assert counts and max(counts.values()) <= 6


def test_bad_input() -> None:
    tr = tracker()
    tr.step_spots(2, [spot((1.0, 1.0, 1.0))])
    tr.step_spots(3, [spot((1.0, 1.0, 1.0))])
    with pytest.raises(ValueError, match="not after"):
        tr.step_spots(3, [])
    with pytest.raises(ValueError):
        tr.step_spots(2, [])
    with pytest.raises(ValueError):
        tr.step(1, None)
    assert tr.last_scan == 3
    res = tr.step_spots(4, [])  # empty spot list: every live track missed
    assert [(r.track_id, r.detected) for r in rows_at(res, 4).values()] == [(1, False)]


def test_unusable_scan_predicts_through_without_counting_a_miss() -> None:
    tr = tracker(max_misses=2)
    for s in range(4):
        tr.step_spots(s, [spot((3.0, 2.0 * s, 5.0))])
    for s in (4, 5, 6):
        res = tr.step(s, None)
        row = rows_at(res, s)[1]
        assert not row.detected and row.features["unusable_scan"] is True
    assert eta(row) == pytest.approx(12.0, abs=0.5)
    res = tr.step_spots(7, [spot((3.0, 14.0, 5.0))])
    assert rows_at(res, 7)[1].detected  # survived three unusable scans


def test_first_scan_empty_and_scan_gaps() -> None:
    tr = tracker()
    assert tr.step_spots(0, []).rows == ()
    tr.step_spots(2, [spot((1.0, 0.0, 0.0))])
    res = tr.step_spots(5, [spot((1.0, 3.0, 0.0))])  # a gap: velocity per scan
    assert set(rows_at(res, 5)) == {1}


def test_deterministic() -> None:
    def run() -> list[StepResult]:
        tr = tracker()
        out = []
        rng = np.random.default_rng(7)
        for s in range(15):
            spots = [spot((5.0, x + rng.normal(0, 0.2), 9.0)) for x in (s, 14.0 - s, 7.0)]
            out.append(tr.step_spots(s, spots))
        return out

    assert run() == run()


@pytest.mark.parametrize(
    "bad", [{"n_scan": 0}, {"detection_probability": 1.0}, {"max_leaves": 1}, {"max_overlap": 4}]
)
def test_params_validated(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        MHTParams(**bad)


def test_fragments_one_track_explains_a_spot_that_detection_split() -> None:
    tr = tracker()
    for s in range(4):
        tr.step_spots(s, [spot((4.0, 10.0, 10.0), 1000.0)])
    # detection splits the spot in two pieces whose intensities add up
    pieces = [spot((4.0, 10.0, 9.2), 600.0, 0.8), spot((4.0, 10.0, 11.2), 400.0, 0.8)]
    res = tr.step_spots(4, pieces)
    now = rows_at(res, 4)
    assert list(now) == [1]
    row = now[1]
    assert row.detected and not row.overlapping and row.features["fragments"] == 2
    assert row.features["intensity"] == 1000.0
    assert eta(row) == 10.0
    assert row.features["position"]["tth"] == pytest.approx(0.6 * 9.2 + 0.4 * 11.2)
    res = tr.step_spots(5, [spot((4.0, 10.0, 10.0), 1000.0)])
    assert list(rows_at(res, 5)) == [1]


def test_two_real_spots_are_not_taken_as_fragments() -> None:
    tr = tracker()
    for s in range(4):
        tr.step_spots(s, [spot((4.0, 10.0, 10.0), 1000.0)])
    # a second, equally bright spot appears nearby: the sum does not fit one track
    res = tr.step_spots(4, [spot((4.0, 10.0, 10.0), 1000.0), spot((4.0, 10.0, 12.5), 1000.0)])
    now = rows_at(res, 4)
    assert set(now) == {1, 2}
    assert "fragments" not in now[1].features


def test_branch_and_bound_agrees_with_the_integer_program() -> None:
    """Both solvers are exact: on a crowded scene they pick the same hypotheses."""

    def run(solver: str) -> list[StepResult]:
        tr = tracker(solver=solver)
        rng = np.random.default_rng(4)
        out = []
        for s in range(14):
            spots = [
                spot((5.0, x + rng.normal(0, 0.3), 9.0 + rng.normal(0, 0.3)), 100.0)
                for x in (0.8 * s, 11.0 - 0.8 * s, 5.5)
            ]
            out.append(tr.step_spots(s, spots))
        return out

    assert run("auto") == run("milp")


def merge_split_spots(s: int) -> list[Spot]:
    """A bright and a faint spot meet, sit on each other for 8 scans, then leave sideways."""
    if s < 5:
        return [spot((5.0, 4.0 + s, 10.0), 300.0), spot((5.0, 16.0 - s, 10.0), 120.0)]
    if s <= 12:
        return [spot((5.0, 10.0, 10.0), 420.0)]
    d = float(s - 12)
    return [spot((5.0, 10.0, 10.0 + d), 300.0), spot((5.0, 10.0, 10.0 - d), 120.0)]


def test_long_merge_keeps_both_tracks_and_restores_identities_by_intensity() -> None:
    tr = tracker()
    db: dict[tuple[int, int], TrackRow] = {}
    for s in range(18):
        apply_step(db, tr.step_spots(s, merge_split_spots(s)))
    assert sorted({tid for tid, _ in db}) == [1, 2]  # no death, no new track after the split
    bright = 1 if db[(1, 0)].features["intensity"] == 300.0 else 2
    for s in range(6, 12):  # deep inside the merge: both tracks on the blob, flagged
        assert db[(1, s)].detected and db[(2, s)].detected
        assert db[(1, s)].overlapping and db[(2, s)].overlapping
    for s in range(15, 18):  # after the split the bright track went to +tth
        assert db[(bright, s)].features["intensity"] == 300.0
        assert db[(bright, s)].features["position"]["tth"] > 10.0
        assert not db[(bright, s)].overlapping


def test_noise_fragment_beside_a_new_spot_does_not_ride_along_as_an_overlap() -> None:
    tr = tracker()
    db: dict[tuple[int, int], TrackRow] = {}
    # scan 0: detection cuts the spot in two; afterwards it is one spot of the summed intensity
    apply_step(
        db, tr.step_spots(0, [spot((3.0, 10.6, 10.0), 700.0), spot((3.0, 9.0, 10.0), 300.0)])
    )
    for s in range(1, 8):
        apply_step(db, tr.step_spots(s, [spot((3.0, 10.0, 10.0), 1000.0)]))
    late = [row for (tid, s), row in db.items() if s >= 4]
    assert len({row.track_id for row in late}) == 1
    assert not any(row.overlapping for row in late)


def test_two_detected_spots_within_the_resolution_limit_are_flagged() -> None:
    """overlapping = centres closer than the summed widths, even when detection split them."""
    tr = tracker()
    for s in range(6):
        res = tr.step_spots(s, [spot((5.0, 10.0, 10.0)), spot((5.0, 10.0, 11.5))])
        now = rows_at(res, s)
    assert set(now) == {1, 2}
    assert all(r.detected and r.overlapping for r in now.values())  # 1.5 < 1 + 1
    tr = tracker()
    for s in range(6):
        res = tr.step_spots(s, [spot((5.0, 10.0, 10.0)), spot((5.0, 10.0, 12.5))])
        now = rows_at(res, s)
    assert set(now) == {1, 2}
    assert not any(r.overlapping for r in now.values())  # 2.5 > 1 + 1
