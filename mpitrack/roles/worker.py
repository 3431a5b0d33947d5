"""The worker: load a region's volume, advance its tracker, commit results and checkpoint.

A worker keeps the trackers of the regions it ran in memory; a job whose
``after_scan`` doesn't match the cached state (the region ran elsewhere in
between, or this worker restarted) loads the checkpoint instead. Any failure
drops the cached tracker, whose in-memory state may have moved past what was
committed, and is reported as a failed job, never a dead rank.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import psycopg

from mpitrack import store
from mpitrack.config import Config
from mpitrack.frames import FrameError, FramePattern, load_volume
from mpitrack.schedule import Job
from mpitrack.track.checkpoint import FORMAT_VERSION
from mpitrack.track.result import StepResult, TrackRow
from mpitrack.track.tracker import RegionTracker
from mpitrack.transport.base import JobReport, WorkerLink

log = logging.getLogger(__name__)


class StateMismatch(RuntimeError):
    """The region's checkpoint is not at the scan the dispatcher expects."""


class AlreadyCommitted(Exception):
    """The job's scan is committed already (a redelivered or repeated job)."""


def merge_steps(results: Sequence[StepResult]) -> tuple[int, list[TrackRow]]:
    """Combine consecutive step results into one commit: (first open scan, rows).

    Each result supersedes the rows of the scans in its own open window;
    rows of scans an earlier result left behind stay as they were.
    """
    by_scan: dict[int, list[TrackRow]] = {}
    for result in results:
        for scan in [s for s in by_scan if s >= result.first_open_scan]:
            del by_scan[scan]
        for row in result.rows:
            by_scan.setdefault(row.scan, []).append(row)
    first_open = min(result.first_open_scan for result in results)
    rows = [row for scan in sorted(by_scan) for row in by_scan[scan]]
    return first_open, rows


@dataclass
class JobRunner:
    """Runs jobs for one worker over one database connection."""

    config: Config
    database_url: str
    worker: int
    windows: Mapping[int, Sequence[int]]
    trackers: dict[int, RegionTracker] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.pattern = FramePattern(self.config.frames.pattern)
        self._connect()

    def _connect(self) -> None:
        self.conn = store.connect(
            self.database_url,
            retries=self.config.runtime.connect_retries,
            application_name=f"mpitrack-worker-{self.worker}",
        )
        self.writer = store.JobWriter(self.conn, self.config.database.synchronous_commit)

    def close(self) -> None:
        self.conn.close()

    def run(self, job: Job) -> JobReport:
        """Run a job; a lost database connection is re-established and the job run again.

        Losing the connection is not the job's fault, and counting it as a failed
        job would make the failure policy skip a scan whose frames were fine.
        """
        try:
            return self._run_once(job)
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            log.warning(
                "region %d scan %d: database connection lost (%s); reconnecting and retrying",
                job.region,
                job.scan,
                str(exc).strip().splitlines()[0] if str(exc) else exc,
            )
            self.trackers.pop(job.region, None)
            self._reconnect()
        try:
            return self._run_once(job)
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            self._reconnect()
            return self._failed(job, time.perf_counter(), f"database error: {exc}".strip())

    def _run_once(self, job: Job) -> JobReport:
        started = time.perf_counter()
        try:
            tracker = self._tracker_for(job)
            volume = load_volume(
                self.config.frames.directory,
                self.pattern,
                job.region,
                job.scan,
                self.windows[job.region],
                self.config.frames.shape,
            )
            compute_started = time.perf_counter()
            first = self.config.scans.first if job.after_scan is None else job.after_scan + 1
            results = [tracker.step(skipped, None) for skipped in range(first, job.scan)]
            results.append(tracker.step(job.scan, volume))
            first_open, rows = merge_steps(results)
            checkpoint = tracker.to_checkpoint()
            compute = time.perf_counter() - compute_started
            written = self.writer.commit(
                [
                    store.JobResult(
                        job.region, job.scan, first_open, rows, checkpoint, FORMAT_VERSION
                    )
                ]
            )
            if not written:
                # Someone committed this scan already: our state is not the stored one.
                self.trackers.pop(job.region, None)
            return JobReport(
                self.worker,
                job,
                ok=True,
                rows=len(rows) if written else 0,
                seconds=time.perf_counter() - started,
                compute_seconds=compute,
            )
        except AlreadyCommitted:
            log.info("region %d scan %d is committed already: nothing to do", job.region, job.scan)
            return JobReport(self.worker, job, ok=True, seconds=time.perf_counter() - started)
        except FrameError as exc:
            return self._failed(job, started, str(exc), file=str(exc.path))
        except (psycopg.OperationalError, psycopg.InterfaceError):
            raise
        except Exception as exc:
            log.exception("region %d scan %d: tracker error", job.region, job.scan)
            return self._failed(job, started, f"{type(exc).__name__}: {exc}")

    def _tracker_for(self, job: Job) -> RegionTracker:
        cached = self.trackers.get(job.region)
        if cached is not None and cached.last_scan == job.after_scan:
            return cached
        self.trackers.pop(job.region, None)
        detect, mht, axes = self.config.detection, self.config.tracking, self.config.frames.axes
        checkpoint = store.load_checkpoint(self.conn, job.region)
        found = None if checkpoint is None else checkpoint.scan
        if found is not None and found >= job.scan:
            raise AlreadyCommitted
        if found != job.after_scan:
            raise StateMismatch(
                f"region {job.region}: checkpoint is at scan {found}, "
                f"the dispatcher expected {job.after_scan}"
            )
        tracker = (
            RegionTracker(detect, mht, axes)
            if checkpoint is None
            else RegionTracker.from_checkpoint(checkpoint.state, detect, mht, axes)
        )
        self.trackers[job.region] = tracker
        return tracker

    def _failed(self, job: Job, started: float, error: str, file: str | None = None) -> JobReport:
        self.trackers.pop(job.region, None)
        try:
            if self.conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                self.conn.rollback()
            store.record_failure(self.conn, job.region, job.scan, error, file=file)
        except psycopg.Error as exc:
            log.error(
                "region %d scan %d: could not record the failure: %s", job.region, job.scan, exc
            )
        return JobReport(
            self.worker,
            job,
            ok=False,
            seconds=time.perf_counter() - started,
            error=error,
            file=file,
        )

    def _reconnect(self) -> None:
        self.conn.close()
        self._connect()


def work(runner: JobRunner, link: WorkerLink) -> int:
    """Ask for jobs until told to stop; return the number of jobs run."""
    count = 0
    while (job := link.next_job()) is not None:
        report = runner.run(job)
        link.report(report)
        count += 1
    return count
