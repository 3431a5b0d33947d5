"""The worker's job runner against a real database and real frames."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from mpitrack import store
from mpitrack.config import load_config
from mpitrack.roles.worker import JobRunner
from mpitrack.runtime import prepare_database, windows_of
from mpitrack.schedule import Job

pytestmark = pytest.mark.integration
MPITRACK = str(Path(sys.executable).parent / "mpitrack")


@pytest.fixture
def runner(database_url: str, tmp_path: Path):
    out = tmp_path / "exp"
    subprocess.run(
        [
            MPITRACK,
            "-q",
            "simulate",
            "--out",
            str(out),
            "--scenario",
            "drifting",
            "--regions",
            "1",
            "--scans",
            "4",
        ],
        check=True,
        timeout=120,
    )
    config = load_config(out / "experiment.yaml", env={}, overrides={"database.url": database_url})
    prepare_database(config, database_url)
    job_runner = JobRunner(config, database_url, worker=1, windows=windows_of(config))
    yield job_runner
    job_runner.close()


def test_a_lost_database_connection_is_reconnected_and_the_job_still_commits(
    runner: JobRunner, database_url: str
) -> None:
    assert runner.run(Job(0, 0, None)).ok
    with psycopg.connect(database_url, autocommit=True) as admin:
        killed = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'mpitrack-worker-1'"
        ).fetchall()
    assert killed == [(True,)]
    report = runner.run(Job(0, 1, 0))
    assert report.ok and report.rows > 0, report
    with psycopg.connect(database_url) as conn:
        assert store.committed_scans(conn) == {0: 1}
        assert conn.execute("SELECT count(*) FROM job_failures").fetchone() == (0,)


def test_a_repeated_job_is_done_without_running_again(runner: JobRunner) -> None:
    assert runner.run(Job(0, 0, None)).ok
    runner.trackers.clear()  # as a fresh worker that got a redelivered job
    again = runner.run(Job(0, 0, None))
    assert again.ok and again.rows == 0


def test_a_checkpoint_at_another_scan_fails_the_job_clearly(runner: JobRunner) -> None:
    assert runner.run(Job(0, 0, None)).ok
    runner.trackers.clear()
    report = runner.run(Job(0, 2, 1))  # the dispatcher claims scan 1 was committed
    assert not report.ok
    assert "checkpoint is at scan 0, the dispatcher expected 1" in (report.error or "")
