"""Raw detector frames end to end: a synthetic detector experiment (two panels, one
tilted and flipped, HDF5 stacks) is cut with `mpitrack detector cut` and tracked with
`mpiexec -n 4 mpitrack run`; spot centres must match the truth within 0.1 px and the
tracks must be those of the per-region-file path on the same spots.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import yaml
from harness import kill_rank_mid_run
from test_run import (  # helpers beside this file
    MPIEXEC,
    MPITRACK,
    env_for,
    make_database,
    query,
    rows,
    run_mpitrack,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

SCANS = 4


def detector(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mpitrack.cli.detector", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def simulate_detector(out: Path, scans: int = SCANS) -> Path:
    """A small synthetic detector experiment (two 128 px panels, 36 frames per scan)."""
    made = detector(
        "simulate",
        "--out",
        str(out),
        "--scans",
        str(scans),
        "--panel-size",
        "128",
        "--frames-per-scan",
        "36",
    )
    assert made.returncode == 0, made.stderr
    return out


def tracks(database_url: str, run: str) -> dict[tuple[int, int], dict[int, np.ndarray]]:
    """(region, track) -> scan -> detected position (omega, eta, tth)."""
    out: dict[tuple[int, int], dict[int, np.ndarray]] = defaultdict(dict)
    for region, track, scan, detected, _overlap, features in rows(database_url, run):
        if detected:
            p = features["position"]
            out[(region, track)][scan] = np.array([p["omega"], p["eta"], p["tth"]])
    return dict(out)


def match_truth(found, truth) -> dict[tuple[int, int], tuple[int, int]]:
    """(region, spot) -> (region, track): the track whose scan-0 position is nearest."""
    out = {}
    for spot in truth["spots"]:
        region, first = spot["region"], np.array(spot["positions"][0])
        candidates = [
            (float(np.linalg.norm(scans[min(scans)] - first)), key)
            for key, scans in found.items()
            if key[0] == region and scans
        ]
        out[(region, spot["spot"])] = min(candidates)[1]
    return out


def test_synthetic_detector_is_tracked_like_the_per_region_files(
    tmp_path: Path, postgres_server_url: str, redis_url: str
) -> None:
    out = simulate_detector(tmp_path / "det")
    # Cutting waits for the raw files to settle (mtime 0.5 s old), then cuts them once.
    cut = detector("cut", "--config", str(out / "experiment.yaml"), "--idle-timeout", "5")
    assert cut.returncode == 0, cut.stderr
    assert "scans cut through 3" in cut.stdout, cut.stdout
    again = detector("cut", "--config", str(out / "experiment.yaml"))
    assert again.returncode == 0 and again.stdout.startswith("0 region frames written from 0 raw")

    results = {}
    for name, config in (("cut", "experiment.yaml"), ("direct", "experiment-direct.yaml")):
        url = make_database(postgres_server_url, f"e2e_detector_{name}")
        env = env_for(url, redis_url, f"det_{name}")
        env["MPITRACK_WORKDIR"] = str(tmp_path / f"work_{name}")
        run = run_mpitrack(out / config, 4, env)
        assert run.returncode == 0, run.stderr
        assert f"{8 * SCANS} jobs committed, 0 failed" in run.stderr, run.stderr
        results[name] = tracks(url, f"det_{name}")

    truth = json.loads((out / "truth.json").read_text())
    for name, found in results.items():
        matched = match_truth(found, truth)
        assert len(set(matched.values())) == len(matched), f"{name}: two spots share a track"
        assert len(found) == len(truth["spots"]), f"{name}: extra or missing tracks"
        for spot in truth["spots"]:
            track = found[matched[(spot["region"], spot["spot"])]]
            assert sorted(track) == list(range(SCANS)), f"{name}: spot {spot} not detected always"
            for scan in range(SCANS):
                error = np.abs(track[scan] - np.array(spot["positions"][scan]))
                if name == "cut":
                    assert error.max() < 0.1, (spot["region"], spot["spot"], scan, error)
    # The same tracks both ways: same count per region and the same spot -> scans.
    cut_tracks, direct_tracks = results["cut"], results["direct"]
    by_region = lambda found: sorted(  # noqa: E731
        (r, len([k for k in found if k[0] == r])) for r in {k[0] for k in found}
    )
    assert by_region(cut_tracks) == by_region(direct_tracks)
    cut_match, direct_match = match_truth(cut_tracks, truth), match_truth(direct_tracks, truth)
    for spot, track in cut_match.items():
        a, b = cut_tracks[track], direct_tracks[direct_match[spot]]
        assert sorted(a) == sorted(b)
        assert max(np.abs(a[s] - b[s]).max() for s in a) < 0.1


def live_configs(out: Path) -> None:
    """experiment-files.yaml (rank 0 writes cut files, workers read them) and
    experiment-memory.yaml (the default: cuts kept in memory and sent with the jobs),
    each cutting into its own directory."""
    experiment = yaml.safe_load((out / "experiment.yaml").read_text())
    settings = yaml.safe_load((out / "detector.yaml").read_text())
    for name, cut_files in (("files", True), ("memory", False)):
        live = dict(experiment, detector=dict(settings, cut_files=cut_files))
        live["frames"] = dict(experiment["frames"], directory=f"cuts-{name}")
        (out / f"experiment-{name}.yaml").write_text(yaml.safe_dump(live))


def test_rank_0_cuts_the_raw_frames_when_the_config_has_a_detector_section(
    tmp_path: Path, postgres_server_url: str, redis_url: str
) -> None:
    """The run itself reads the raw files (rank 0, once each) and gives the rows that
    cutting beforehand with `mpitrack detector cut` gives, whether it writes cut files
    (detector.cut_files) or sends each job's volume from memory (no cut files at all,
    and with memory_scans 1 the tightest memory bound)."""
    out = simulate_detector(tmp_path / "det")
    live_configs(out)
    cut = detector("cut", "--config", str(out / "experiment.yaml"), "--idle-timeout", "5")
    assert cut.returncode == 0, cut.stderr

    results = {}
    for name in ("", "-files", "-memory"):
        url = make_database(postgres_server_url, f"e2e_detector_section{name.replace('-', '_')}")
        env = env_for(url, redis_url, f"det_section{name}")
        env["MPITRACK_WORKDIR"] = str(tmp_path / f"work{name}")
        if name == "-memory":
            env["MPITRACK_DETECTOR__MEMORY_SCANS"] = "1"
        run = run_mpitrack(out / f"experiment{name}.yaml", 4, env)
        assert run.returncode == 0, run.stderr
        assert f"{8 * SCANS} jobs committed, 0 failed" in run.stderr, run.stderr
        results[name] = rows(url, f"det_section{name}")
    assert results[""], "no rows"
    assert results["-files"] == results[""]
    assert results["-memory"] == results[""]
    assert "cut in memory and sent with the jobs: at most 1 scans" in run.stderr
    assert len(list((out / "cuts-files").rglob("*.npy"))) == len(
        list((out / "cuts").rglob("*.npy"))
    )
    assert not list((out / "cuts-memory").rglob("*.npy")), "in-memory fan-out wrote cut files"


def test_killed_rank_0_with_volumes_in_memory_then_rerun_gives_the_uninterrupted_rows(
    tmp_path: Path, postgres_server_url: str, redis_url: str
) -> None:
    """Rank 0 dies holding cut volumes that no worker has yet: a re-run reads the raw
    frames of the scans not committed again and ends with the rows of a run that was
    never interrupted."""
    scans = 12
    out = simulate_detector(tmp_path / "det", scans)
    live_configs(out)
    config = out / "experiment-memory.yaml"
    reference = make_database(postgres_server_url, "e2e_detector_memory_reference")
    env = env_for(reference, redis_url, "det_memory_reference")
    env["MPITRACK_WORKDIR"] = str(tmp_path / "reference")
    done = run_mpitrack(config, 4, env)
    assert done.returncode == 0, done.stderr

    crashed = make_database(postgres_server_url, "e2e_detector_memory_crashed")
    env = env_for(crashed, redis_url, "det_memory_crashed")
    workdir = tmp_path / "crashed"
    env["MPITRACK_WORKDIR"] = str(workdir)
    command = [MPIEXEC, "-n", "4", MPITRACK, "run", "--config", str(config)]
    kill_rank_mid_run(command, env, workdir, after_done=20, rank=0)
    last = scans - 1
    sql = f"SELECT count(*) FROM tracker_checkpoints WHERE scan_number = {last}"
    assert query(crashed, "det_memory_crashed", sql)[0][0] < 8, "the run finished before the kill"
    resumed = run_mpitrack(config, 4, env)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stderr
    assert rows(crashed, "det_memory_crashed") == rows(reference, "det_memory_reference")
