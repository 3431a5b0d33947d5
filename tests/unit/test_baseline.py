"""The frame-to-frame baseline linker, on hand-built spots; and the CLI chain around it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mpitrack import cli
from mpitrack.track.baseline import FrameLinker, LinkerParams, export_row
from mpitrack.track.spot import Spot


def spot(*pos: float) -> Spot:
    return Spot(np.array(pos, dtype=float), 100.0, np.eye(3), 10.0, 5, {"peak": 10.0})


def ids(rows) -> dict[tuple[float, ...], int]:
    return {tuple(r.features["position"].values()): r.track_id for r in rows}


def test_links_moving_spots_and_keeps_identities():
    linker = FrameLinker(LinkerParams(max_distance=3.0))
    first = linker.step_spots(0, [spot(5, 10, 10), spot(5, 20, 20)]).rows
    second = linker.step_spots(1, [spot(5, 21, 21), spot(5, 11, 11)]).rows  # order shuffled
    a, b = ids(first), ids(second)
    assert a[(5.0, 10.0, 10.0)] == b[(5.0, 11.0, 11.0)]
    assert a[(5.0, 20.0, 20.0)] == b[(5.0, 21.0, 21.0)]
    assert len(set(a.values())) == 2
    row = second[0]
    assert row.detected and not row.overlapping and row.scan == 1
    assert set(row.features["position"]) == {"omega", "eta", "tth"}
    assert row.features["peak"] == 10.0


def test_jump_beyond_gate_starts_a_new_track():
    linker = FrameLinker(LinkerParams(max_distance=3.0, max_missed=0))
    (r0,) = linker.step_spots(0, [spot(5, 10, 10)]).rows
    (r1,) = linker.step_spots(1, [spot(5, 10, 14)]).rows
    assert r1.track_id != r0.track_id


def test_hungarian_prefers_the_globally_cheapest_assignment():
    # greedy would give the spot at 12 to track A (distance 2) and leave B unmatched
    linker = FrameLinker(LinkerParams(max_distance=3.0))
    first = ids(linker.step_spots(0, [spot(5, 10, 10), spot(5, 10, 13)]).rows)
    second = ids(linker.step_spots(1, [spot(5, 10, 12), spot(5, 10, 8)]).rows)
    assert second[(5.0, 10.0, 8.0)] == first[(5.0, 10.0, 10.0)]
    assert second[(5.0, 10.0, 12.0)] == first[(5.0, 10.0, 13.0)]


def test_missed_scans_within_limit_keep_the_track():
    linker = FrameLinker(LinkerParams(max_distance=3.0, max_missed=1))
    (r0,) = linker.step_spots(0, [spot(5, 10, 10)]).rows
    assert linker.step_spots(1, []).rows == ()
    (r2,) = linker.step_spots(2, [spot(5, 10, 11)]).rows
    assert r2.track_id == r0.track_id
    linker.step_spots(3, [])
    linker.step_spots(4, [])
    (r5,) = linker.step_spots(5, [spot(5, 10, 11)]).rows
    assert r5.track_id != r0.track_id


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError, match="max_distance"):
        LinkerParams(max_distance=0)
    with pytest.raises(ValueError, match="max_missed"):
        LinkerParams(max_missed=-1)


def test_export_row_has_the_evaluate_form():
    (row,) = FrameLinker().step_spots(3, [spot(1, 2, 3)]).rows
    out = json.loads(json.dumps(export_row(7, row)))
    assert out["region_id"] == 7 and out["scan_number"] == 3 and out["detected"] is True
    assert out["features"]["position"] == {"omega": 1.0, "eta": 2.0, "tth": 3.0}


def test_simulate_baseline_evaluate_chain(tmp_path, capsys):
    out = tmp_path / "exp"
    args = ["simulate", "--out", str(out), "--scenario", "isolated,drifting", "--regions", "2"]
    assert cli.main([*args, "--scans", "4", "--seed", "2"]) == 0
    rows = tmp_path / "b.jsonl"
    cfg = str(out / "experiment.yaml")
    assert cli.main(["baseline", "--config", cfg, "--out", str(rows)]) == 0
    assert rows.exists() and not list(tmp_path.glob(".*.tmp"))
    scores = tmp_path / "s.json"
    code = cli.main(["evaluate", "--config", cfg, "--input", str(rows), "--json", str(scores)])
    assert code == 0
    table = capsys.readouterr().out
    assert "isolated" in table and "drifting" in table and "HOTA" in table
    report = json.loads(scores.read_text())
    # bright, separated spots: the baseline must get these nearly right
    assert report["scenarios"]["isolated"]["HOTA"] > 0.8
    assert report["scenarios"]["isolated"]["IDSW"] == 0


def test_cli_bad_input_exits_2_with_one_line(tmp_path, capsys):
    code = cli.main(["simulate", "--out", str(tmp_path / "x"), "--scenario", "crossing,bogus"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert "bogus" in err and "known scenarios:" in err and "crossing" in err
    assert len(err.splitlines()) == 1
    code = cli.main(["simulate", "--out", str(tmp_path / "y"), "--regions", "-1"])
    assert code == 2 and "regions must be >= 1" in capsys.readouterr().err
    code = cli.main(
        ["simulate", "--out", str(tmp_path / "z"), "--scenario", "dense", "--dense-spots", "900"]
    )
    assert code == 2 and "fit" in capsys.readouterr().err


def test_evaluate_refuses_truth_of_another_run(tmp_path, capsys):
    for name, regions in (("a", "2"), ("b", "3")):
        args = ["simulate", "--out", str(tmp_path / name), "--regions", regions, "--scans", "2"]
        assert cli.main(args) == 0
    rows = tmp_path / "rows.jsonl"
    rows.write_text(
        json.dumps(
            {"region_id": 2, "track_id": 0, "scan_number": 0, "detected": True,
             "overlapping": False, "features": {"position": {"omega": 1, "eta": 2, "tth": 3}}}
        ) + "\n"
    )  # fmt: skip
    capsys.readouterr()
    code = cli.main(
        ["evaluate", "--truth", str(tmp_path / "a" / "truth.json"), "--input", str(rows)]
    )
    assert code == 2
    assert "does not match" in capsys.readouterr().err
    code = cli.main(
        ["evaluate", "--config", str(tmp_path / "b" / "experiment.yaml"),
         "--truth", str(tmp_path / "a" / "truth.json"), "--input", str(rows)]
    )  # fmt: skip
    assert code == 2
    assert "regions" in capsys.readouterr().err
