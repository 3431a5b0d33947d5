"""The worker: load a region's volume, advance its tracker, commit results and checkpoint.

A worker keeps the trackers of the regions it ran in memory, at most
``runtime.tracker_cache`` of them (the least recently run is dropped first);
a job whose region has no cached tracker, or whose ``after_scan`` doesn't
match the cached state (the region ran elsewhere in between, or this worker
restarted), loads the checkpoint instead. Any failure
drops the cached tracker, whose in-memory state may have moved past what was
committed, and is reported as a failed job, never a dead rank.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from mpitrack.config import Config
from mpitrack.detector.fanout import received_volume
from mpitrack.frames import (
    FrameError,
    FrameMasks,
    FramePattern,
    load_volume,
    read_settled,
    refuse_outside_links,
)
from mpitrack.schedule import Job
from mpitrack.storage.base import ConnectionLost, JobResult, JobStore, StoreError
from mpitrack.track.checkpoint import FORMAT_VERSION, CheckpointError
from mpitrack.track.result import StepResult, TrackRow
from mpitrack.track.tracker import RegionTracker
from mpitrack.transport.base import JobReport, WorkerLink

log = logging.getLogger(__name__)


class StateMismatch(RuntimeError):
    """The region's checkpoint is not at the scan the dispatcher expects."""


class AlreadyCommitted(Exception):
    """The job's scan is committed already (a redelivered or repeated job)."""


class UnreadableCheckpoint(RuntimeError):
    """The region's stored checkpoint cannot be resumed (another format, or corrupt).

    Not a bug of this worker: the message names the region and what to do,
    and the job fails without a traceback.
    """


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
    """Runs jobs for one worker over one store (one database connection)."""

    config: Config
    store: JobStore
    worker: int
    windows: Mapping[int, Sequence[int]]
    trackers: dict[int, RegionTracker] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.pattern = FramePattern(self.config.frames.pattern)
        self.masks = FrameMasks.from_config(self.config.frames.mask)

    def close(self) -> None:
        self.store.close()

    def run(self, job: Job, volume: np.ndarray | None = None) -> JobReport:
        """Run a job; a lost database connection is re-established and the job run again.

        volume: the region's volume sent with the job (in-memory fan-out of detector
        frames); None: load the job's frames from files.
        Losing the connection is not the job's fault, and counting it as a failed
        job would make the failure policy skip a scan whose frames were fine.
        """
        try:
            return self._run_once(job, volume)
        except ConnectionLost as exc:
            log.warning(
                "region %d scan %d: database connection lost (%s); reconnecting and retrying",
                job.region,
                job.scan,
                str(exc).strip().splitlines()[0] if str(exc) else exc,
            )
            self.trackers.pop(job.region, None)
            self.store.reconnect()
        try:
            return self._run_once(job, volume)
        except ConnectionLost as exc:
            self.store.reconnect()
            return self._failed(job, time.perf_counter(), f"database error: {exc}".strip())

    def already_committed(self, job: Job) -> bool:
        """Whether the job's scan is committed already (a redelivered job).

        False when the store cannot tell: the job then runs, and its runner
        reports the database problem.
        """
        try:
            scan = self.store.committed_scan(job.region)
        except StoreError as exc:
            log.warning("could not read region %d's checkpoint: %s", job.region, exc)
            return False
        return scan is not None and scan >= job.scan

    def record_failure(self, job: Job, error: str, file: str | None = None) -> None:
        """Record a failed job; a database that cannot record it is logged, not raised."""
        try:
            self.store.record_failure(job.region, job.scan, error, file=file)
        except StoreError as exc:
            log.error(
                "region %d scan %d: could not record the failure: %s", job.region, job.scan, exc
            )

    def _run_once(self, job: Job, sent: np.ndarray | None = None) -> JobReport:
        started = time.perf_counter()
        try:
            tracker = self._tracker_for(job)
            if sent is None:
                volume = read_settled(lambda: self._load(job), self.config.frames.settle_s)
            else:
                volume = received_volume(
                    sent,
                    job.region,
                    job.scan,
                    self.windows[job.region],
                    self.masks.for_region(job.region),
                    self.config.frames.shape,
                )
            compute_started = time.perf_counter()
            first = self.config.scans.first if job.after_scan is None else job.after_scan + 1
            results = [tracker.step(skipped, None) for skipped in range(first, job.scan)]
            results.append(tracker.step(job.scan, volume))
            rejected = tracker.rejected.counts()
            first_open, rows = merge_steps(results)
            checkpoint = tracker.to_checkpoint()
            compute = time.perf_counter() - compute_started
            written = self.store.commit(
                JobResult(job.region, job.scan, first_open, rows, checkpoint, FORMAT_VERSION)
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
                rejected=rejected,
            )
        except AlreadyCommitted:
            log.info("region %d scan %d is committed already: nothing to do", job.region, job.scan)
            return JobReport(self.worker, job, ok=True, seconds=time.perf_counter() - started)
        except FrameError as exc:
            return self._failed(job, started, str(exc), file=str(exc.path))
        except UnreadableCheckpoint as exc:
            log.error("%s", exc)
            return self._failed(job, started, str(exc))
        except ConnectionLost:
            raise
        except StoreError as exc:
            log.exception("region %d scan %d: database error", job.region, job.scan)
            return self._failed(job, started, str(exc))
        except Exception as exc:
            log.exception("region %d scan %d: tracker error", job.region, job.scan)
            return self._failed(job, started, f"{type(exc).__name__}: {exc}")

    def _load(self, job: Job) -> np.ndarray:
        """The job's volume, from the frame directory only (unless links out are allowed)."""
        frames = self.config.frames
        window = self.windows[job.region]
        if not frames.outside_links:
            refuse_outside_links(frames.directory, self.pattern, job.region, job.scan, window)
        return load_volume(
            frames.directory,
            self.pattern,
            job.region,
            job.scan,
            window,
            frames.shape,
            self.masks.for_region(job.region),
        )

    def _tracker_for(self, job: Job) -> RegionTracker:
        cached = self.trackers.pop(job.region, None)
        if cached is not None and cached.last_scan == job.after_scan:
            self.trackers[job.region] = cached  # now the most recently used
            return cached
        detect, mht, axes = self.config.detection, self.config.tracking, self.config.frames.axes
        checkpoint = self.store.load_checkpoint(job.region)
        found = None if checkpoint is None else checkpoint.scan
        if found is not None and found >= job.scan:
            raise AlreadyCommitted
        if found != job.after_scan:
            raise StateMismatch(
                f"region {job.region}: checkpoint is at scan {found}, "
                f"the dispatcher expected {job.after_scan}"
            )
        if checkpoint is None:
            tracker = RegionTracker(detect, mht, axes)
        else:
            try:
                tracker = RegionTracker.from_checkpoint(checkpoint.state, detect, mht, axes)
            except CheckpointError as exc:
                raise UnreadableCheckpoint(
                    f"region {job.region}: its checkpoint after scan {checkpoint.scan} "
                    f"cannot be resumed: {exc}"
                ) from exc
        self.trackers[job.region] = tracker
        while len(self.trackers) > self.config.runtime.tracker_cache:
            del self.trackers[next(iter(self.trackers))]  # the least recently run
        return tracker

    def _failed(self, job: Job, started: float, error: str, file: str | None = None) -> JobReport:
        self.trackers.pop(job.region, None)
        self.record_failure(job, error, file)
        return JobReport(
            self.worker,
            job,
            ok=False,
            seconds=time.perf_counter() - started,
            error=error,
            file=file,
        )


def settle_heap() -> None:
    """Exempt what the process holds before its first job from garbage collection.

    Imports (numpy, scipy, psycopg) leave ~65,000 objects that live for the
    whole run. Python's full collections walk all of them, and the tracker's
    many short-lived hypotheses trigger one every few dozen steps: a 50 ms
    pause in a 15 ms step (docs/throughput.md). Frozen, they are skipped; what
    the tracker allocates is collected as before.
    """
    gc.collect()
    gc.freeze()


def work(runner: JobRunner, link: WorkerLink) -> int:
    """Ask for jobs until told to stop; return the number of jobs run."""
    settle_heap()
    count = 0
    while (job := link.next_job()) is not None:
        link.report(runner.run(job, link.volume()))
        count += 1
    return count
