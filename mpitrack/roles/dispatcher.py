"""The dispatcher loop: registers frames, decides readiness, hands out jobs, logs progress.

It owns no tracking logic and no transport details: the scheduler decides,
the registry knows which frames exist, the link reaches the workers.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol

import numpy as np

from mpitrack.frames import FrameKey
from mpitrack.progress import Progress
from mpitrack.registry import FrameRegistry
from mpitrack.schedule import Job, Scheduler
from mpitrack.transport.base import DispatcherLink, JobReport, JobRequest

log = logging.getLogger(__name__)


class FrameFeed(Protocol):
    """Where new frames come from: the directory scanner, or the detector cutter."""

    def poll(self) -> list[FrameKey]: ...


class Volumes(Protocol):
    """Volumes cut in memory at rank 0 (detector/fanout.py): each job carries its own."""

    def take(self, region: int, scan: int) -> np.ndarray: ...


@dataclass(frozen=True)
class Failure:
    region: int
    scan: int
    error: str
    file: str | None


@dataclass
class RunSummary:
    jobs_done: int = 0
    failures: list[Failure] = field(default_factory=list)
    stopped_regions: list[int] = field(default_factory=list)
    unfinished: list[tuple[int, int]] = field(default_factory=list)
    aborted: bool = False
    elapsed: float = 0.0
    compute_seconds: float = 0.0
    rejected: Counter[str] = field(default_factory=Counter)

    @property
    def ok(self) -> bool:
        return not self.failures and not self.aborted and not self.unfinished

    def lines(self) -> list[str]:
        lines = [
            f"{self.jobs_done} jobs committed, {len(self.failures)} failed in {self.elapsed:.1f} s"
        ]
        if any(self.rejected.values()):
            counts = ", ".join(f"{n} {what.replace('_', ' ')}" for what, n in self.rejected.items())
            lines.append(f"  detection rejected {counts} (per job in the job log)")
        for failure in self.failures[:20]:
            where = f" ({failure.file})" if failure.file else ""
            lines.append(f"  region {failure.region} scan {failure.scan}{where}: {failure.error}")
        if len(self.failures) > 20:
            lines.append(f"  ... and {len(self.failures) - 20} more (table job_failures)")
        if self.failures:
            lines.append(
                "  fix or replace those frames, then run again with --retry-failed to track "
                "their regions again"
            )
        if self.stopped_regions:
            lines.append(f"  regions stopped after a failure: {self.stopped_regions}")
        if self.aborted:
            lines.append("  run aborted after a failure (runtime.on_failure: abort)")
        if self.unfinished:
            shown = ", ".join(f"region {r} from scan {s}" for r, s in self.unfinished[:10])
            more = f" and {len(self.unfinished) - 10} more" if len(self.unfinished) > 10 else ""
            lines.append(
                f"  stopped before the last scan: {shown}{more}; run the same command "
                "again to resume"
            )
        return lines


class JobLog:
    """One JSON line per dispatch and per report: the run's audit trail.

    It proves that no region ever had two jobs in flight and gives the
    benchmarks their latencies. Times are wall-clock (time.time()).
    """

    def __init__(self, stream: IO[str] | None) -> None:
        self.stream = stream

    @classmethod
    def open(cls, path: Path | None) -> JobLog:
        if path is None:
            return cls(None)
        path.parent.mkdir(parents=True, exist_ok=True)
        return cls(path.open("a", encoding="utf-8"))

    def write(self, event: str, job: Job, worker: int, **extra: object) -> None:
        if self.stream is None:
            return
        record = {"event": event, "region": job.region, "scan": job.scan, "worker": worker}
        record.update(extra)
        record["t"] = time.time()
        self.stream.write(json.dumps(record) + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.stream is not None:
            self.stream.close()


@dataclass
class Dispatcher:
    """Runs a scheduler to completion over a link.

    windows: the omega window (frame numbers) of every region.
    scanner: rank 0's frame feed (None when an external listener registers frames).
    rescan: every frame on disk now; called when the registry forgot what was
        registered (a Redis restart), so that rank 0 registers it all again.
    stop_requested: polled each loop (SIGTERM flag, the Redis stop key).
    idle_timeout: drain after this many seconds without new frames or jobs.
    volumes: the jobs' volumes, cut in memory by the scanner (which then must be
        the only source of the registry's frames); None: workers load frame files.
    """

    scheduler: Scheduler
    registry: FrameRegistry
    link: DispatcherLink
    windows: Mapping[int, Sequence[int]]
    scanner: FrameFeed | None = None
    rescan: Callable[[], Sequence[FrameKey]] | None = None
    poll_interval: float = 0.5
    stop_requested: Callable[[], bool] = lambda: False
    idle_timeout: float | None = None
    job_log: JobLog = field(default_factory=lambda: JobLog(None))
    progress_interval: float = 5.0
    volumes: Volumes | None = None
    _unknown_regions: set[int] = field(default_factory=set, init=False, repr=False)

    def run(self) -> RunSummary:
        summary = RunSummary()
        progress = Progress("jobs", self.scheduler.total_jobs, log, interval=self.progress_interval)
        started = time.monotonic()
        last_activity = started
        next_poll = 0.0
        cursor: str | None = None
        next_waiting_log = started + self.progress_interval
        stopping_workers: set[int] = set()
        active_workers = set(self.link.workers)
        self._probe(self.scheduler.waiting_for())
        done_before = self.scheduler.scans_completed()
        if done_before:
            log.info(
                "scans %d..%d were complete before this run (their missing statistics are "
                "filled in)",
                done_before[0],
                done_before[-1],
            )
            for scan in done_before:
                self.link.scan_complete(scan)
        while active_workers:
            now = time.monotonic()
            if not self.scheduler.finished and now >= next_poll:
                next_poll = now + self.poll_interval
                if not self.scheduler.draining and self.stop_requested():
                    log.info("stop requested: finishing the jobs in flight")
                    self.scheduler.drain()
                if self.scanner is not None:
                    new_frames = self.scanner.poll()
                    if new_frames:
                        self.registry.add(new_frames)
                changed, cursor = self.registry.changed_since(cursor)
                if self.registry.forgot() and self.rescan is not None:
                    frames = self.rescan()
                    log.warning("registering the %d frames on disk again", len(frames))
                    self.registry.add(frames)
                    changed, cursor = self.registry.changed_since(None)
                if self._probe(changed):
                    last_activity = now
                if (
                    self.idle_timeout is not None
                    and not self.scheduler.draining
                    and self.scheduler.in_flight == 0
                    and now - last_activity > self.idle_timeout
                ):
                    log.info("no new frames for %.0f s: stopping (idle timeout)", self.idle_timeout)
                    self.scheduler.drain()
            for message in self.link.receive(timeout=min(self.poll_interval, 0.05)):
                if isinstance(message, JobReport):
                    self._on_report(message, summary, progress)
                    last_activity = time.monotonic()
                elif isinstance(message, JobRequest):
                    if self.scheduler.finished:
                        stopping_workers.add(message.worker)
                    else:
                        self.scheduler.worker_idle(message.worker)
            if self.scheduler.finished:
                # Workers still waiting for a job are told to stop; busy ones
                # are told when they report and ask again.
                for worker in (self.scheduler.idle_workers() | stopping_workers) & active_workers:
                    self.link.send_stop(worker)
                    active_workers.discard(worker)
            else:
                for worker, job in self.scheduler.assign():
                    self.job_log.write("dispatch", job, worker)
                    volume = (
                        None if self.volumes is None else self.volumes.take(job.region, job.scan)
                    )
                    self.link.send_job(worker, job, volume)
            for scan in self.scheduler.scans_completed():
                log.info("scan %d complete for all regions", scan)
                self.link.scan_complete(scan)
            progress.maybe_log()
            if time.monotonic() >= next_waiting_log and self.scheduler.in_flight == 0:
                next_waiting_log = time.monotonic() + self.progress_interval
                self._log_waiting()
        self.link.close()
        progress.maybe_log(force=True)
        summary.elapsed = time.monotonic() - started
        summary.stopped_regions = self.scheduler.stopped_regions
        summary.unfinished = self.scheduler.unfinished()
        summary.aborted = self.scheduler.aborted
        return summary

    def _log_waiting(self) -> None:
        """Say what an idle run is waiting for: a batch log must explain a stall."""
        waiting = self.scheduler.waiting_for()
        if not waiting or self.scheduler.finished:
            return
        details = []
        for region, scan in waiting[:3]:
            missing = self.registry.missing(region, scan, self.windows[region])
            shown = ", ".join(str(f) for f in missing[:5]) + (", ..." if len(missing) > 5 else "")
            details.append(
                f"region {region} scan {scan} (missing {len(missing)} of "
                f"{len(self.windows[region])} frames: {shown})"
            )
        more = f" and {len(waiting) - 3} more" if len(waiting) > 3 else ""
        log.info("waiting for frames: %s%s", "; ".join(details), more)

    def _probe(self, pairs: Sequence[tuple[int, int]]) -> bool:
        """Check completeness of (region, scan) pairs the scheduler still needs."""
        found = False
        for region, scan in pairs:
            window = self.windows.get(region)
            if window is None:
                if region not in self._unknown_regions:
                    self._unknown_regions.add(region)
                    log.warning(
                        "frames of region %d arrive (scan %d), but the config has no region "
                        "%d: ignored",
                        region,
                        scan,
                        region,
                    )
                continue
            if not self.scheduler.wants(region, scan):
                continue
            if self.registry.is_complete(region, scan, window):
                self.scheduler.frames_complete(region, scan)
                found = True
        return found

    def _on_report(self, report: JobReport, summary: RunSummary, progress: Progress) -> None:
        job = report.job
        if report.ok:
            self.scheduler.job_done(job, report.worker)
            summary.jobs_done += 1
            summary.compute_seconds += report.compute_seconds
            summary.rejected.update(report.rejected)
            self.job_log.write(
                "done",
                job,
                report.worker,
                rows=report.rows,
                seconds=report.seconds,
                compute_seconds=report.compute_seconds,
                **report.rejected,
            )
        else:
            self.scheduler.job_failed(job, report.worker)
            failure = Failure(job.region, job.scan, report.error or "unknown error", report.file)
            summary.failures.append(failure)
            self.job_log.write("failed", job, report.worker, error=failure.error, file=report.file)
            where = f" file {report.file}:" if report.file else ""
            log.error("region %d scan %d failed:%s %s", job.region, job.scan, where, failure.error)
        progress.advance(report.ok)
