"""The worker's job runner against a real database and real frames."""

from __future__ import annotations

import dataclasses
import logging
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psycopg
import pytest

from mpitrack import store
from mpitrack.config import Config, load_config
from mpitrack.frames import FramePattern
from mpitrack.roles.worker import JobRunner
from mpitrack.schedule import Job
from mpitrack.storage.base import JobResult
from mpitrack.storage.postgres import PostgresJobStore
from mpitrack.track.checkpoint import FORMAT_VERSION, read_format_version
from mpitrack.transport.base import JobReport
from mpitrack.wiring import job_runner, prepare_database, windows_of

pytestmark = pytest.mark.integration
MPITRACK = str(Path(sys.executable).parent / "mpitrack")
FORMAT_1 = Path(__file__).resolve().parents[1] / "data" / "checkpoints" / "format1.npz"


@pytest.fixture
def run_name() -> str:
    """The simulated experiment's run name."""
    return "sim"


@pytest.fixture
def config(database_url: str, tmp_path: Path) -> Config:
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
            "2",
            "--scans",
            "4",
        ],
        check=True,
        timeout=120,
    )
    config = load_config(out / "experiment.yaml", env={}, overrides={"database.url": database_url})
    prepare_database(config, database_url)
    return config


@pytest.fixture
def runner(config: Config, database_url: str):
    worker = job_runner(config, database_url, worker=1)
    yield worker
    worker.close()


def test_a_lost_database_connection_is_reconnected_and_the_job_still_commits(
    runner: JobRunner, database_url: str, run_name: str
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
    with store.connect(database_url, run_name, retries=0) as conn:
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


def test_a_frame_linked_out_of_the_frame_directory_is_refused_without_echoing_it(
    runner: JobRunner, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"s3cr3t: the target's bytes must appear nowhere\n")
    frames = runner.config.frames.directory
    victim = frames / runner.pattern.format(region=0, frame=runner.windows[0][2], scan=0)
    victim.unlink()
    victim.symlink_to(secret)
    report = runner.run(Job(0, 0, None))
    assert not report.ok
    assert "symbolic link out of the frame directory" in (report.error or ""), report
    assert "s3cr3t" not in (report.error or "")


def test_a_frame_still_being_written_is_read_once_complete(runner: JobRunner) -> None:
    frames = runner.config.frames.directory
    path = frames / runner.pattern.format(region=0, frame=runner.windows[0][3], scan=0)
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 3])  # a producer writing in place, paused

    def finish() -> None:
        time.sleep(0.5)
        with path.open("ab") as out:
            out.write(whole[len(whole) // 3 :])

    writer = threading.Thread(target=finish)
    writer.start()
    try:
        report = runner.run(Job(0, 0, None))
    finally:
        writer.join()
    assert report.ok, report


def test_the_report_counts_what_detection_rejected(runner: JobRunner, config: Config) -> None:
    window = windows_of(config)[0]
    frame = config.frames.directory / FramePattern(config.frames.pattern).format(0, window[2], 0)
    data = np.load(frame)
    data[3, 4] += 50_000.0  # a zinger: one pixel of one frame
    np.save(frame, data)
    report = runner.run(Job(0, 0, None))
    assert report.ok, report
    assert report.rejected["zingers"] >= 1
    assert set(report.rejected) == {"zingers", "hot_pixels", "masked_voxels"}
    clean = runner.run(Job(1, 0, None))
    assert clean.ok and clean.rejected["zingers"] == 0


def test_a_checkpoint_of_an_unreadable_format_fails_its_job_clearly_and_nothing_else(
    runner: JobRunner, database_url: str, run_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A real format-1 checkpoint (tests/data/checkpoints) stored for region 0: its next
    job fails with one message naming the region and what to do, no traceback; the
    worker runs region 1 as before."""
    assert runner.run(Job(0, 0, None)).ok and runner.run(Job(0, 1, 0)).ok
    old = FORMAT_1.read_bytes()
    assert read_format_version(old) == 1
    with store.connect(database_url, run_name, retries=0) as conn:
        conn.execute(
            "UPDATE tracker_checkpoints SET state = %s, format_version = 1 WHERE region_id = 0",
            (old,),
        )
    runner.trackers.clear()  # a fresh worker: it must load the checkpoint
    with caplog.at_level(logging.INFO, logger="mpitrack"):
        report = runner.run(Job(0, 2, 1))
    assert not report.ok
    error = report.error or ""
    assert error.startswith("region 0: its checkpoint after scan 1 cannot be resumed: ")
    assert "format version 1" in error and "re-run the region from its first scan" in error
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == [error]
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    with store.connect(database_url, run_name, retries=0) as conn:
        assert conn.execute(
            "SELECT region_id, scan_number, error FROM job_failures"
        ).fetchall() == [(0, 2, error)]
        assert store.committed_scans(conn) == {0: 1}
        assert store.load_checkpoint(conn, 0).state == old  # type: ignore[union-attr]
    other = runner.run(Job(1, 0, None))
    assert other.ok and other.rows > 0


class HeldCommit(PostgresJobStore):
    """A store whose commit keeps its transaction open until released: the lock point
    that makes a race between two workers deterministic."""

    def __init__(self, url: str, experiment: str, application_name: str) -> None:
        super().__init__(url, experiment, retries=0, application_name=application_name)
        self.inside = threading.Event()
        self.release = threading.Event()

    def commit(self, result: JobResult) -> bool:
        with self.conn.transaction():
            written = super().commit(result)
            self.inside.set()
            assert self.release.wait(60), "never released"
        return written


def test_two_workers_committing_the_same_first_job_at_once_commit_it_once(
    config: Config, database_url: str, run_name: str
) -> None:
    """A stalled worker and the one that reclaimed its job: the second commit waits for
    the first, then finds the job committed and reports it done, writing nothing."""
    held = HeldCommit(database_url, run_name, "mpitrack-worker-1")
    first = JobRunner(config, held, 1, windows_of(config))
    second = job_runner(config, database_url, worker=2)
    job = Job(0, 0, None)
    reports: dict[int, JobReport] = {}
    try:
        one = threading.Thread(target=lambda: reports.__setitem__(1, first.run(job)))
        one.start()
        assert held.inside.wait(60), "the first worker never reached its commit"
        two = threading.Thread(target=lambda: reports.__setitem__(2, second.run(job)))
        two.start()
        with psycopg.connect(database_url, autocommit=True) as observer:
            deadline = time.monotonic() + 60
            while two.is_alive():
                waiting = observer.execute(
                    "SELECT wait_event_type FROM pg_stat_activity "
                    "WHERE application_name = 'mpitrack-worker-2'"
                ).fetchone()
                if waiting == ("Lock",):
                    break
                assert time.monotonic() < deadline, "the second worker never reached its commit"
                time.sleep(0.01)
        assert two.is_alive(), f"the second worker did not wait for the first: {reports}"
        held.release.set()
        one.join(60)
        two.join(60)
    finally:
        held.release.set()
        first.close()
        second.close()
    assert reports[1].ok and reports[1].rows > 0, reports[1]
    assert reports[2].ok and reports[2].rows == 0, reports[2]
    assert 0 not in second.trackers, "the loser kept a state that is not the stored one"
    with store.connect(database_url, run_name, retries=0) as conn:
        assert conn.execute("SELECT count(*) FROM job_failures").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM measurements WHERE region_id = 0").fetchone() == (
            reports[1].rows,
        )
        assert store.committed_scans(conn) == {0: 0}
        stored = store.load_checkpoint(conn, 0)
        assert stored is not None and stored.format_version == FORMAT_VERSION


def test_a_tracker_dropped_from_the_cache_resumes_from_its_checkpoint_with_the_same_rows(
    config: Config, database_url: str
) -> None:
    """runtime.tracker_cache = 1 with two regions: every job finds its tracker dropped
    and resumes from the checkpoint; the rows equal those of a run that kept both."""
    rows = {}
    for cache in (1, 2):
        cached = dataclasses.replace(
            config,
            run=f"cache{cache}",
            runtime=dataclasses.replace(config.runtime, tracker_cache=cache),
        )
        prepare_database(cached, database_url)
        worker = job_runner(cached, database_url, worker=1)
        try:
            for scan in range(4):
                for region in (0, 1):
                    assert worker.run(Job(region, scan, scan - 1 if scan else None)).ok
                    assert len(worker.trackers) <= cache
        finally:
            worker.close()
        with store.connect(database_url, cached.run, retries=0) as conn:
            rows[cache] = conn.execute(
                "SELECT region_id, track_id, scan_number, detected, overlapping, features "
                "FROM measurements ORDER BY region_id, scan_number, track_id"
            ).fetchall()
    assert rows[1] and rows[1] == rows[2]
