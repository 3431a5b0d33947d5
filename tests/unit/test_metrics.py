"""Tracking metrics against small hand-computed cases.

zero_distance = 2 voxels throughout: similarity 1 at distance 0, a CLEAR/ID
match needs distance <= 1. Objects of different tracks sit 10 voxels apart,
so their similarity is 0 and only the intended pairs can ever match.
"""

from __future__ import annotations

import math

import pytest

from mpitrack.evaluate import (
    ALPHAS,
    Detection,
    EvaluationError,
    build_sequence,
    check_match,
    evaluate,
    format_table,
    score_sequences,
)
from mpitrack.sim.scenarios import SimParams
from mpitrack.sim.truth import GroundTruth, TruthRecord, TruthRegion

D0 = 2.0
A = (5.0, 10.0, 10.0)
B = (5.0, 10.0, 20.0)


def det(scan: int, oid: int, pos=A, ovl: bool = False, region: int = 0) -> Detection:
    return Detection(region, scan, oid, tuple(pos), ovl)


def score(truth: list[Detection], tracked: list[Detection]) -> dict:
    return score_sequences([build_sequence(truth, tracked)], D0)


def two_tracks(scans: int = 4) -> list[Detection]:
    return [det(s, 0, A) for s in range(scans)] + [det(s, 1, B) for s in range(scans)]


def test_perfect_output_scores_one():
    truth = two_tracks()
    tracked = [det(d.scan, d.object_id + 7, d.position) for d in truth]  # ids differ, fine
    m = score(truth, tracked)
    for key in ("HOTA", "DetA", "AssA", "LocA", "DetRe", "DetPr", "AssRe", "AssPr", "IDF1"):
        assert m[key] == pytest.approx(1.0), key
    assert m["MOTA"] == pytest.approx(1.0)
    assert (m["IDSW"], m["Frag"], m["CLR_FP"], m["CLR_FN"]) == (0, 0, 0, 0)
    assert m["RMSE"] == pytest.approx(0.0)
    assert (m["MT"], m["PT"], m["ML"]) == (2, 0, 0)


def test_one_id_swap():
    # track 1 follows A then B from scan 2 on; track 2 the opposite
    tracked = [det(s, 1, A if s < 2 else B) for s in range(4)] + [
        det(s, 2, B if s < 2 else A) for s in range(4)
    ]
    m = score(two_tracks(), tracked)
    assert m["IDSW"] == 2  # both true tracks change tracker id once
    assert m["MOTA"] == pytest.approx((8 - 0 - 2) / 8)
    assert m["Frag"] == 0
    # IDF1: best one-to-one pairing gets 4 of 8 truths: IDTP 4, IDFN 4, IDFP 4
    assert (m["IDTP"], m["IDFN"], m["IDFP"]) == (4, 4, 4)
    assert m["IDF1"] == pytest.approx(0.5)
    # HOTA: detection perfect; each (gt, tr) pair matched twice of 4 + 4 - 2 -> A(c) = 1/3
    assert m["DetA"] == pytest.approx(1.0)
    assert m["AssA"] == pytest.approx(1 / 3)
    assert m["AssRe"] == pytest.approx(0.5)
    assert m["AssPr"] == pytest.approx(0.5)
    assert m["HOTA"] == pytest.approx(math.sqrt(1 / 3))


def test_one_missed_scan():
    truth = [det(s, 0) for s in range(5)]
    tracked = [det(s, 3) for s in range(5) if s != 2]
    m = score(truth, tracked)
    assert (m["CLR_TP"], m["CLR_FN"], m["CLR_FP"]) == (4, 1, 0)
    assert m["MOTA"] == pytest.approx(0.8)
    assert m["Frag"] == 1
    assert m["IDSW"] == 0
    assert m["IDF1"] == pytest.approx(4 / 4.5)
    assert m["DetA"] == pytest.approx(0.8)
    assert m["AssA"] == pytest.approx(4 / (5 + 4 - 4))
    assert m["HOTA"] == pytest.approx(0.8)


def test_one_false_track():
    truth = [det(s, 0) for s in range(4)]
    tracked = [det(s, 0) for s in range(4)] + [det(s, 9, B) for s in (1, 2)]
    m = score(truth, tracked)
    assert (m["CLR_TP"], m["CLR_FN"], m["CLR_FP"]) == (4, 0, 2)
    assert m["MOTA"] == pytest.approx((4 - 2) / 4)
    assert m["IDF1"] == pytest.approx(4 / (4 + 0.5 * 2))
    assert m["DetA"] == pytest.approx(4 / 6)
    assert m["DetPr"] == pytest.approx(4 / 6)
    assert m["DetRe"] == pytest.approx(1.0)
    assert m["AssA"] == pytest.approx(1.0)
    assert m["HOTA"] == pytest.approx(math.sqrt(4 / 6))


def test_one_wrong_overlap_flag():
    truth = [det(s, 0, A, ovl=s == 1) for s in range(4)] + [
        det(s, 1, B, ovl=s == 1) for s in range(4)
    ]
    # the tracker flags both correctly at scan 1 and flags track 0 wrongly at scan 2
    tracked = [det(s, 0, A, ovl=s in (1, 2)) for s in range(4)] + [
        det(s, 1, B, ovl=s == 1) for s in range(4)
    ]
    m = score(truth, tracked)
    assert m["overlap_counts"] == {"tp": 2, "fp": 1, "fn": 0, "tn": 5}
    assert m["overlap_precision"] == pytest.approx(2 / 3)
    assert m["overlap_recall"] == pytest.approx(1.0)
    assert m["HOTA"] == pytest.approx(1.0)  # the flag does not touch the tracking scores


def test_overlap_scores_undefined_without_flags():
    m = score(two_tracks(), two_tracks())
    assert m["overlap_precision"] is None and m["overlap_recall"] is None


def test_localisation_error_lowers_loca_and_high_alphas():
    truth = [det(s, 0) for s in range(3)]
    offset = 0.55  # similarity 1 - 0.55 / 2 = 0.725: matched for alpha <= 0.70 (14 of 19)
    tracked = [det(s, 0, (A[0], A[1], A[2] + offset)) for s in range(3)]
    m = score(truth, tracked)
    n_ok = int(sum(ALPHAS <= 0.725))
    assert n_ok == 14
    assert m["DetA"] == pytest.approx(n_ok / 19)
    assert m["HOTA"] == pytest.approx(n_ok / 19)
    # LocA is 1 by convention at alphas with no match (TrackEval)
    assert m["LocA"] == pytest.approx((n_ok * 0.725 + (19 - n_ok)) / 19)
    assert m["RMSE"] == pytest.approx(offset)
    assert m["MOTP"] == pytest.approx(0.725)
    assert m["MOTA"] == pytest.approx(1.0)


def test_match_beyond_half_zero_distance_is_a_miss_and_false_positive():
    truth = [det(0, 0)]
    tracked = [det(0, 0, (A[0], A[1], A[2] + 1.2))]  # similarity 0.4 < 0.5
    m = score(truth, tracked)
    assert (m["CLR_TP"], m["CLR_FN"], m["CLR_FP"]) == (0, 1, 1)
    assert m["MOTA"] == pytest.approx((0 - 1 - 0) / 1)
    assert m["IDF1"] == pytest.approx(0.0)
    assert m["RMSE"] is None


def test_regions_combine_by_summing_counts():
    perfect = build_sequence([det(s, 0) for s in range(4)], [det(s, 0) for s in range(4)])
    missed = build_sequence([det(s, 0) for s in range(4)], [])
    m = score_sequences([perfect, missed], D0)
    assert m["DetA"] == pytest.approx(0.5)
    assert m["AssA"] == pytest.approx(1.0)  # weighted by true positives: only region 1 has any
    assert m["HOTA"] == pytest.approx(math.sqrt(0.5))
    assert m["MOTA"] == pytest.approx(0.5)
    assert m["IDF1"] == pytest.approx(4 / (4 + 0.5 * 4))


def test_duplicate_tracker_rows_are_refused():
    with pytest.raises(EvaluationError, match="two rows"):
        build_sequence([det(0, 0)], [det(0, 1), det(0, 1)])


def _truth() -> GroundTruth:
    records = tuple(
        TruthRecord(r, s, 0, A, 1000.0, (1.0, 1.5, 1.5), False, True)
        for r in (0, 1)
        for s in range(3)
    )
    regions = (TruthRegion(0, "isolated", (100, 110)), TruthRegion(1, "crossing", (115, 125)))
    return GroundTruth("t", 0, SimParams(), 0, 2, regions, records)


def test_evaluate_reports_per_scenario_and_overall():
    truth = _truth()
    tracked = [det(s, 0, region=0) for s in range(3)]  # region 1 entirely missed
    report = evaluate(truth, tracked, D0)
    assert set(report["scenarios"]) == {"isolated", "crossing"}
    assert report["scenarios"]["isolated"]["HOTA"] == pytest.approx(1.0)
    assert report["scenarios"]["crossing"]["HOTA"] == pytest.approx(0.0)
    assert report["overall"]["DetA"] == pytest.approx(0.5)
    table = format_table(report)
    assert "isolated" in table and "overall" in table and "HOTA" in table


def test_truth_that_does_not_match_the_run_is_refused():
    truth = _truth()
    with pytest.raises(EvaluationError, match="regions \\[5\\]"):
        check_match(truth, [det(0, 0, region=5)])
    with pytest.raises(EvaluationError, match="scans \\[7\\]"):
        check_match(truth, [det(7, 0, region=0)])
    check_match(truth, [det(2, 0, region=1)])  # matching output passes
