"""Two experiments in one PostgreSQL database: each sees only its own rows, checkpoints,
statistics and status, and gives the rows it gives alone."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from harness import MPIEXEC, MPITRACK, experiment_query, experiment_rows, simulate

from mpitrack.store import create_database

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


def run_env(database_url: str, redis_url: str, workdir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        MPITRACK_DATABASE_URL=database_url,
        MPITRACK_REDIS_URL=redis_url,
        MPITRACK_WORKDIR=str(workdir),
        MPITRACK_RUNTIME__POLL_INTERVAL="0.05",
        MPITRACK_REPORT__ENABLED="false",
    )
    return env


def mpitrack(env: dict[str, str], *args: str, ranks: int = 0) -> subprocess.CompletedProcess:
    command = [MPITRACK, *args]
    if ranks:
        command = [MPIEXEC, "-n", str(ranks), *command]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)


def test_two_experiments_in_one_database_stay_apart(
    postgres_server_url: str, redis_url: str, tmp_path: Path
) -> None:
    config_a = simulate(
        tmp_path / "A", "--run", "expA", "--seed", "1", "--regions", "3", "--scans", "5"
    )
    config_b = simulate(
        tmp_path / "B",
        "--run",
        "expB",
        "--seed",
        "2",
        "--scenario",
        "crossing",
        "--regions",
        "3",
        "--scans",
        "5",
    )
    alone = create_database(postgres_server_url, "e2e_alone")
    env = run_env(alone, redis_url, tmp_path / "alone")
    done = mpitrack(env, "run", "-c", str(config_b), ranks=3)
    assert done.returncode == 0, done.stderr
    b_alone = experiment_rows(alone, "expB")

    shared = create_database(postgres_server_url, "e2e_shared")
    env_a = run_env(shared, redis_url, tmp_path / "A" / "work")
    env_b = run_env(shared, redis_url, tmp_path / "B" / "work")
    first = mpitrack(env_a, "run", "-c", str(config_a), ranks=3)
    assert first.returncode == 0, first.stderr
    a_rows = experiment_rows(shared, "expA")
    second = mpitrack(env_b, "run", "-c", str(config_b), ranks=3)
    assert second.returncode == 0, second.stderr
    assert "15 jobs committed, 0 failed" in second.stderr, second.stderr
    assert experiment_rows(shared, "expB") == b_alone
    assert experiment_rows(shared, "expA") == a_rows != b_alone
    for run in ("expA", "expB"):
        assert experiment_query(shared, run, "SELECT count(*) FROM scan_stats") == [(5,)]
        assert experiment_query(
            shared, run, "SELECT region_id, scan_number FROM tracker_checkpoints ORDER BY 1"
        ) == [(0, 4), (1, 4), (2, 4)]

    status = mpitrack(env_b, "db", "status", "-c", str(config_b))
    assert status.returncode == 0, status.stderr
    assert "experiment expB" in status.stdout
    measurements = len(b_alone)
    assert any(
        line.split() == ["measurements", str(measurements)] for line in status.stdout.splitlines()
    ), status.stdout
    listing = mpitrack(
        dict(env_b, MPITRACK_DATABASE_URL=shared), "db", "status", "--database-url", shared
    )
    assert listing.returncode == 0, listing.stderr
    assert "expA" in listing.stdout and "expB" in listing.stdout

    for config in (config_a, config_b):
        scores = mpitrack(env_b, "evaluate", "-c", str(config))
        assert scores.returncode == 0, scores.stderr
    report = mpitrack(env_a, "report", "-c", str(config_a), "-o", str(tmp_path / "report_a"))
    assert report.returncode == 0, report.stderr
    assert report.stdout.startswith("5 scans"), report.stdout
