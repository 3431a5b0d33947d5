"""Tracking accuracy end to end: simulate, `mpiexec -n 4 mpitrack run`, `mpitrack evaluate`.

The easy scenarios and the crossing go through the whole production path
(frames on disk, Redis registry, MPI workers, PostgreSQL rows, revisions of
the open window) and the scores read back from the database must meet the
targets of the tracking core; the frame-to-frame baseline on the same frames
must do clearly worse on the crossing. benchmarks/accuracy.py measures the
same targets over many seeds and every scenario.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

BIN = Path(sys.executable).parent
MPIEXEC = str(BIN / "mpiexec")
MPITRACK = str(BIN / "mpitrack")
EASY = ("isolated", "drifting", "broadening", "appear_vanish")
SCENARIOS = (*EASY, "crossing")


def _mpitrack(*args: str, env: dict[str, str] | None = None, ranks: int = 1) -> None:
    command = [MPITRACK, *args]
    if ranks > 1:
        command = [MPIEXEC, "-n", str(ranks), *command]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=150)
    assert done.returncode == 0, f"{' '.join(args[:1])} failed:\n{done.stderr[-3000:]}"


def test_mpi_run_meets_the_accuracy_targets(
    database_url: str, redis_url: str, tmp_path: Path
) -> None:
    out = tmp_path / "exp"
    _mpitrack(
        "-q", "simulate", "--out", str(out), "--scenario", ",".join(SCENARIOS),
        "--regions", str(2 * len(SCENARIOS)), "--scans", "16", "--seed", "0",
    )  # fmt: skip
    config = out / "experiment.yaml"
    env = dict(os.environ)
    env.update(
        MPITRACK_DATABASE_URL=database_url,
        MPITRACK_REDIS_URL=redis_url,
        MPITRACK_RUN="accuracy",
        MPITRACK_WORKDIR=str(tmp_path / "work"),
        MPITRACK_RUNTIME__POLL_INTERVAL="0.05",
    )
    _mpitrack("run", "--config", str(config), env=env, ranks=4)
    scores_path = tmp_path / "scores.json"
    _mpitrack("evaluate", "--config", str(config), "--json", str(scores_path), env=env)
    scores = json.loads(scores_path.read_text())["scenarios"]
    baseline_rows = tmp_path / "baseline.jsonl"
    baseline_path = tmp_path / "baseline.json"
    _mpitrack("baseline", "--config", str(config), "--out", str(baseline_rows), env=env)
    _mpitrack(
        "evaluate", "--config", str(config), "--input", str(baseline_rows),
        "--json", str(baseline_path), env=env,
    )  # fmt: skip
    baseline = json.loads(baseline_path.read_text())["scenarios"]

    assert sorted(scores) == sorted(SCENARIOS)
    for name in SCENARIOS:
        m = scores[name]
        assert m["regions"] == 2 and m["gt_dets"] > 0, (name, m)
        # every true spot is tracked by about one track (nothing silently empty)
        assert m["tracker_dets"] >= 0.9 * m["gt_dets"], (name, m)
    for name in EASY:
        m = scores[name]
        assert m["HOTA"] >= 0.90, (name, m["HOTA"])
        assert m["IDF1"] >= 0.95, (name, m["IDF1"])
    cross = scores["crossing"]
    assert cross["IDF1"] >= 0.90, cross
    assert cross["IDSW"] == 0, cross  # identities restored after the spots separate
    assert cross["tracker_tracks"] == cross["gt_tracks"], cross  # no track lost or reborn
    assert cross["overlap_precision"] >= 0.90, cross
    assert cross["overlap_recall"] >= 0.90, cross
    assert cross["HOTA"] >= baseline["crossing"]["HOTA"] + 0.1, (cross, baseline["crossing"])
    for name in SCENARIOS:
        assert scores[name]["HOTA"] >= baseline[name]["HOTA"] - 1e-9, (name, scores, baseline)
