"""The roles built from a config: the one place `mpitrack run` and process mode share.

runtime.py lays the roles on MPI ranks and process_mode.py runs each as its
own process; both build them here, so a dispatcher, a worker's job runner and
the statistics role are configured the same way whatever carries their
messages. Only the links (transport/) and the choice of who runs what differ
between the two.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import redis

from mpitrack import redis_client, store
from mpitrack.config import Config
from mpitrack.errors import ServiceUnavailable, UsageError
from mpitrack.frames import DirectoryScanner, FramePattern
from mpitrack.regions import windows_of
from mpitrack.registry import FrameRegistry, MemoryRegistry, RedisRegistry
from mpitrack.roles.dispatcher import Dispatcher, FrameFeed, JobLog, RunSummary
from mpitrack.roles.stats import ScanStatistics
from mpitrack.roles.worker import JobRunner
from mpitrack.schedule import Scheduler
from mpitrack.stopflag import StopFlag
from mpitrack.storage.postgres import PostgresJobStore, PostgresStatsStore
from mpitrack.track.checkpoint import READABLE_VERSIONS, CheckpointVersionError
from mpitrack.transport.base import DispatcherLink
from mpitrack.urls import redact_text, redact_url

if TYPE_CHECKING:
    from mpitrack.detector.cutter import Cutter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunOptions:
    """What the command line adds to the config for a dispatcher (`run`, `dispatch`).

    follow: keep waiting for scans past the last one.
    idle_timeout: overrides ``runtime.idle_timeout`` when given.
    retry_failed: track the regions with failed jobs again from their first scan
        (after their frames were fixed).
    """

    follow: bool = False
    idle_timeout: float | None = None
    retry_failed: bool = False


def prepare_database(
    config: Config, database_url: str, retry_failed: bool = False
) -> dict[int, int]:
    """Apply the schema to the experiment's own schema (named after ``config.run``),
    record the regions, and return the committed scan per region.

    retry_failed: first forget what the regions with failed jobs committed, so
    that the run tracks them again from their first scan (docs/admin.md).
    Raises UsageError when a region of the config has a checkpoint this mpitrack
    cannot resume: every job of that region would fail, so the run does not start.
    """
    with store.connect(database_url, config.run, retries=config.runtime.connect_retries) as conn:
        store.apply_schema(conn, config.frames.axes)
        store.ensure_regions(conn, [(r.id, r.description) for r in config.regions])
        if retry_failed:
            _reset_failed_regions(config, conn)
        formats = store.checkpoint_formats(conn)
    check_checkpoint_formats(formats, {r.id for r in config.regions})
    return {region: scan for region, (scan, _version) in formats.items()}


def check_checkpoint_formats(formats: dict[int, tuple[int, int]], regions: set[int]) -> None:
    """Refuse checkpoints of a format this mpitrack cannot read, naming their regions.

    formats: region -> (committed scan, format version), as `store.checkpoint_formats`.
    One message per unreadable version, with what to do (an upgrade leaves every
    region in the old format: the message must not list them one line each).
    """
    by_version: dict[int, list[tuple[int, int]]] = {}
    for region, (scan, version) in sorted(formats.items()):
        if region in regions and version not in READABLE_VERSIONS:
            by_version.setdefault(version, []).append((region, scan))
    if not by_version:
        return
    problems = []
    for version, found in sorted(by_version.items()):
        shown = ", ".join(f"region {r} (after scan {s})" for r, s in found[:10])
        more = f" and {len(found) - 10} more regions" if len(found) > 10 else ""
        problems.append(f"{shown}{more}: {CheckpointVersionError(version)}")
    raise UsageError(
        "cannot resume from the stored tracker checkpoints: "
        + "; ".join(problems)
        + ". To track a region again from its first scan, delete its rows from "
        "measurements, tracks and tracker_checkpoints (or use a new database)."
    )


def _reset_failed_regions(config: Config, conn) -> None:
    configured = {r.id for r in config.regions}
    failed = {r: s for r, s in store.failed_regions(conn).items() if r in configured}
    if not failed:
        log.info("--retry-failed: no failed jobs to retry")
        return
    # The first failed scan's commit may revise the scans of the MHT window before it.
    stats_from = min(failed.values()) - max(config.tracking.n_scan - 1, 0)
    store.reset_regions(conn, sorted(failed), stats_from)
    log.warning(
        "--retry-failed: tracking again from scan %d: %s",
        config.scans.first,
        ", ".join(f"region {r} (failed at scan {s})" for r, s in sorted(failed.items())),
    )


def connect_redis(config: Config, url: str) -> redis.Redis:
    """A Redis client with the config's retry policy (redis_client.py)."""
    return redis_client.connect(url, config.runtime.connect_retries, config.redis.reconnect_seconds)


def job_runner(config: Config, database_url: str, worker: int) -> JobRunner:
    """Worker ``worker``'s job runner, over its own database connection."""
    job_store = PostgresJobStore(
        database_url,
        config.run,
        retries=config.runtime.connect_retries,
        application_name=f"mpitrack-worker-{worker}",
        synchronous_commit=config.database.synchronous_commit,
    )
    return JobRunner(config, job_store, worker, windows_of(config))


@contextlib.contextmanager
def statistics(config: Config, database_url: str) -> Iterator[ScanStatistics]:
    """The statistics role, with its live report as configured, over its own connection."""
    stats_store = PostgresStatsStore.open(
        database_url, config.run, retries=config.runtime.connect_retries
    )
    with contextlib.closing(stats_store):
        yield ScanStatistics(
            stats_store,
            config,
            config.report.directory,
            report=config.report.enabled,
            refresh_interval=config.report.refresh_interval,
        )


def statistics_exit_code(statistics: ScanStatistics) -> int:
    """1 (logged) when some scan's statistics could not be stored, else 0."""
    if not statistics.failed:
        return 0
    log.error(
        "the statistics of scan(s) %s could not be stored; run the same command again to "
        "fill them in",
        ", ".join(str(s) for s in sorted(statistics.failed)),
    )
    return 1


def job_log_path(workdir: Path) -> Path:
    return workdir / "logs" / "jobs.jsonl"


def frame_scanner(config: Config) -> DirectoryScanner:
    """An incremental scan of the frame directory (rank 0's, `mpitrack listen`'s)."""
    return DirectoryScanner(
        config.frames.directory,
        FramePattern(config.frames.pattern),
        settle_s=config.frames.settle_s,
    )


@contextlib.contextmanager
def lost_redis_is_unavailable(url: str | None) -> Iterator[None]:
    """Redis gone for longer than ``redis.reconnect_seconds``: ServiceUnavailable (exit
    code 3, one line naming the server without its password), not a traceback."""
    try:
        yield
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        raise ServiceUnavailable(
            f"lost Redis at {redact_url(str(url))}: {redact_text(str(exc), url)}"
        ) from exc


def run_dispatcher(
    config: Config,
    options: RunOptions,
    committed: dict[int, int],
    *,
    registry: RedisRegistry,
    link: DispatcherLink,
    scanner: FrameFeed | None,
    stop: StopFlag,
    fanout: Cutter | None = None,
) -> RunSummary:
    """Build the run's dispatcher and run it to the end.

    committed: the last committed scan per region (the run resumes after it).
    scanner: rank 0's frame feed; None when `mpitrack listen` registers frames.
        With a feed, a registry that forgot its frames (a Redis restart) is
        filled again from a full scan of the frame directory.
    fanout: rank 0's cutter keeping the cuts in memory (``detector.cut_files: false``):
        it is the frame feed, it cuts only what the scheduler still needs, and the
        jobs carry its volumes. Frames are then registered in this process only
        (a MemoryRegistry): frames Redis remembers from an earlier run were never
        cut by this one, so they must not make a job ready. Redis still carries
        the stop request.
    A stop request left in the registry by an earlier run is withdrawn first.
    Every dispatch and report goes to ``<workdir>/logs/jobs.jsonl``.
    """
    registry.clear_stop()
    windows = windows_of(config)
    last_scan = None if options.follow else config.scans.last
    scheduler = Scheduler(
        windows, config.scans.first, last_scan, committed, config.runtime.on_failure
    )
    log.info(
        "%s jobs to run%s",
        scheduler.total_jobs if scheduler.total_jobs is not None else "open-ended",
        f" (resuming: {len(committed)} regions have checkpoints)" if committed else "",
    )
    idle_timeout = config.runtime.idle_timeout
    if options.idle_timeout is not None:
        idle_timeout = options.idle_timeout
    frames: FrameRegistry = registry
    rescan = None if scanner is None else lambda: frame_scanner(config).poll()
    if fanout is not None:
        fanout.needed = scheduler.needs
        fanout.skip_through(min(committed.get(r, config.scans.first - 1) for r in windows))
        frames, scanner, rescan = MemoryRegistry(), fanout, None
        log.info(
            "detector frames cut in memory and sent with the jobs: at most %d scans of "
            "volumes held (%.1f MB each)",
            config.detector.memory_scans if config.detector else 0,
            (fanout.buffer.scan_bytes if fanout.buffer else 0) / 1e6,
        )
    with contextlib.closing(JobLog.open(job_log_path(config.workdir))) as job_log:
        dispatcher = Dispatcher(
            scheduler=scheduler,
            registry=frames,
            link=link,
            windows=windows,
            scanner=scanner,
            volumes=fanout,
            rescan=rescan,
            poll_interval=config.runtime.poll_interval,
            stop_requested=lambda: stop.requested or registry.stop_requested(),
            idle_timeout=idle_timeout,
            job_log=job_log,
        )
        return dispatcher.run()


def exit_code(summary: RunSummary) -> int:
    """Log the run's summary; 0 when every job committed, else 1."""
    for line in summary.lines():
        (log.info if summary.ok else log.error)("%s", line)
    return 0 if summary.ok else 1
