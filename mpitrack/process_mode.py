"""Separate-process mode: each role of `mpitrack run` as its own process, over Redis.

This mirrors runtime.py, which lays the same roles on MPI ranks: the role
loops in roles/ are reused as they are, over the links of transport/redis.py.

    mpitrack listen     frame directory -> Redis registry
    mpitrack dispatch   readiness, order, termination -> the ``jobs`` stream
    mpitrack work       (any number) jobs -> PostgreSQL, reports -> ``events``
    mpitrack stats      ``scan_complete`` events -> scan_stats

Servers are never started here: the processes share them, and one that
started an embedded server would stop it under the others when it exits.
With no URL configured, a process attaches to the embedded servers that
`mpitrack services up` started under the work directory.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import redis

from mpitrack import services, store
from mpitrack.config import Config
from mpitrack.errors import ServiceUnavailable
from mpitrack.frames import DirectoryScanner, FramePattern
from mpitrack.registry import RedisRegistry
from mpitrack.roles.dispatcher import Dispatcher, JobLog
from mpitrack.roles.stats import serve
from mpitrack.roles.worker import JobRunner, work
from mpitrack.runtime import (
    StopFlag,
    job_log_path,
    prepare_database,
    scheduler_for,
    statistics_for,
    windows_of,
)
from mpitrack.schedule import Job
from mpitrack.transport.redis import (
    Keys,
    RedisDispatcherLink,
    RedisStatsLink,
    RedisWorkerLink,
    connect,
    run_finished,
)
from mpitrack.urls import redact_url

log = logging.getLogger(__name__)

DEFAULT_SLOTS = 64


@dataclass(frozen=True)
class DispatchOptions:
    follow: bool = False
    idle_timeout: float | None = None
    slots: int | None = None  # None: min(regions, DEFAULT_SLOTS)


@dataclass(frozen=True)
class WorkOptions:
    lease: float = 60.0
    max_attempts: int = 3
    reconnect_seconds: float = 60.0


def attach_services(
    config: Config, *, need_database: bool = True, need_redis: bool = True
) -> services.ServiceURLs:
    """The servers' URLs: the configured ones, else the running embedded ones."""
    base = services.services_dir(config.workdir)
    database_url, redis_url = config.database.url, config.redis.url
    hint = f"start them with `mpitrack services up --config {config.source}` or set"
    if need_database and database_url is None:
        postgres = services.EmbeddedPostgres(base / "postgres")
        if postgres.running_pid() is None:
            raise ServiceUnavailable(
                f"no database URL configured and no embedded PostgreSQL running in "
                f"{postgres.directory}: {hint} MPITRACK_DATABASE_URL"
            )
        database_url = postgres.start()
    if need_redis and redis_url is None:
        redis_server = services.EmbeddedRedis(base / "redis")
        if redis_server.running_pid() is None:
            raise ServiceUnavailable(
                f"no Redis URL configured and no embedded Redis running in "
                f"{redis_server.directory}: {hint} MPITRACK_REDIS_URL"
            )
        redis_url = redis_server.url
    return services.ServiceURLs(database_url, redis_url)


def _redis(config: Config, url: str | None, reconnect_seconds: float = 60.0) -> redis.Redis:
    assert url is not None
    return connect(url, config.runtime.connect_retries, reconnect_seconds)


@contextlib.contextmanager
def _lost_redis_is_unavailable(url: str | None) -> Iterator[None]:
    """Redis gone for longer than the reconnect time: exit code 3, not a traceback."""
    try:
        yield
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        raise ServiceUnavailable(f"lost Redis at {redact_url(str(url))}: {exc}") from exc


# mpitrack dispatch -------------------------------------------------------------------


def run_dispatcher(config: Config, options: DispatchOptions) -> int:
    """The dispatcher process; returns the exit code (1 when jobs failed)."""
    stop = StopFlag()
    stop.install(graceful=True)
    urls = attach_services(config)
    assert urls.database_url is not None
    committed = prepare_database(config, urls.database_url)
    client = _redis(config, urls.redis_url)
    with contextlib.ExitStack() as stack:
        stack.callback(client.close)
        registry = RedisRegistry(client, config.run)
        registry.clear_stop()
        windows = windows_of(config)
        scheduler = scheduler_for(config, committed, options.follow)
        slots = options.slots or min(len(windows), DEFAULT_SLOTS)
        link = RedisDispatcherLink(client, Keys(config.run), slots)
        log.info(
            "run %s: %s jobs to run%s, database %s, redis %s",
            config.run,
            scheduler.total_jobs if scheduler.total_jobs is not None else "open-ended",
            f" (resuming: {len(committed)} regions have checkpoints)" if committed else "",
            redact_url(urls.database_url),
            redact_url(str(urls.redis_url)),
        )
        job_log = JobLog.open(job_log_path(config.workdir))
        stack.callback(job_log.close)
        dispatcher = Dispatcher(
            scheduler=scheduler,
            registry=registry,
            link=link,
            windows=windows,
            scanner=None,  # `mpitrack listen` registers the frames
            poll_interval=config.runtime.poll_interval,
            stop_requested=lambda: stop.requested or registry.stop_requested(),
            idle_timeout=options.idle_timeout
            if options.idle_timeout is not None
            else config.runtime.idle_timeout,
            job_log=job_log,
        )
        with _lost_redis_is_unavailable(urls.redis_url):
            summary = dispatcher.run()
        if link.duplicates:
            log.info("%d duplicate or stale reports ignored", link.duplicates)
    for line in summary.lines():
        (log.info if summary.ok else log.error)("%s", line)
    return 0 if summary.ok else 1


# mpitrack work ---------------------------------------------------------------------


def _committed_scan(conn: psycopg.Connection, region: int) -> int | None:
    # One region's row only (store.committed_scans reads every region).
    row = conn.execute(
        "SELECT scan_number FROM tracker_checkpoints WHERE region_id = %s", (region,)
    ).fetchone()
    conn.commit()
    return None if row is None else int(row[0])


def run_worker(config: Config, options: WorkOptions) -> int:
    """One worker process; returns 0 when the run is over or after SIGTERM."""
    stop = StopFlag()
    stop.install(graceful=True)
    urls = attach_services(config)
    assert urls.database_url is not None
    client = _redis(config, urls.redis_url, options.reconnect_seconds)
    pid = os.getpid()
    consumer = f"{socket.gethostname()}-{pid}"
    runner = JobRunner(config, urls.database_url, pid, windows_of(config))

    def already_committed(job: Job) -> bool:
        try:
            scan = _committed_scan(runner.conn, job.region)
        except psycopg.Error as exc:
            # Let the job run: the runner reports the database problem.
            log.warning("could not read region %d's checkpoint: %s", job.region, exc)
            with contextlib.suppress(psycopg.Error):
                runner.conn.rollback()
            return False
        return scan is not None and scan >= job.scan

    def record_abandoned(job: Job, error: str) -> None:
        try:
            store.record_failure(runner.conn, job.region, job.scan, error)
        except psycopg.Error as exc:
            log.error("could not record region %d scan %d's failure: %s", job.region, job.scan, exc)

    link = RedisWorkerLink(
        client,
        Keys(config.run),
        pid,
        consumer,
        lease=options.lease,
        max_attempts=options.max_attempts,
        stop_requested=lambda: stop.requested,
        already_committed=already_committed,
        record_abandoned=record_abandoned,
    )
    log.info("worker %s ready for run %s", consumer, config.run)
    try:
        with _lost_redis_is_unavailable(urls.redis_url):
            count = work(runner, link)
    finally:
        link.close()
        runner.close()
        client.close()
    log.info("worker %s: %d jobs run, %d reclaimed", consumer, count, link.reclaimed)
    return 0


# mpitrack stats ------------------------------------------------------------------


def run_stats(config: Config) -> int:
    stop = StopFlag()
    stop.install(graceful=True)
    urls = attach_services(config)
    assert urls.database_url is not None
    client = _redis(config, urls.redis_url)
    link = RedisStatsLink(client, Keys(config.run), stop_requested=lambda: stop.requested)
    try:
        with (
            store.connect(urls.database_url, retries=config.runtime.connect_retries) as conn,
            _lost_redis_is_unavailable(urls.redis_url),
        ):
            count = serve(statistics_for(conn, config), link)
    finally:
        client.close()
    log.info("statistics for %d scans", count)
    return 0


# mpitrack listen -------------------------------------------------------------------


def run_listener(config: Config, poll_interval: float | None = None, settle: float = 0.0) -> int:
    """Register complete frames until the run is over or SIGTERM.

    Restart-safe: a (re)started listener registers every frame it finds, and
    registering is idempotent. It also re-registers everything when the
    registry vanished (a Redis restart without persistence).
    """
    stop = StopFlag()
    stop.install(graceful=True)
    urls = attach_services(config, need_database=False)
    client = _redis(config, urls.redis_url)
    keys = Keys(config.run)
    registry = RedisRegistry(client, config.run)
    pattern = FramePattern(config.frames.pattern)
    interval = config.runtime.poll_interval if poll_interval is None else poll_interval

    def scanner() -> DirectoryScanner:
        return DirectoryScanner(config.frames.directory, pattern, settle_s=settle)

    current = scanner()
    registered = 0
    log.info("listening on %s for run %s", config.frames.directory, config.run)
    with contextlib.closing(client), _lost_redis_is_unavailable(urls.redis_url):
        while not stop.requested:
            started = time.monotonic()
            frames = current.poll()
            if frames:
                registry.add(frames)
                registered += len(frames)
                log.debug("registered %d frames", len(frames))
            if registered and not client.exists(registry.prefix + "frame_sets"):
                log.warning("the frame registry is gone (Redis restarted?): registering again")
                current = scanner()
                registered = 0
                continue
            if run_finished(client, keys):
                log.info("the dispatcher declared run %s finished", config.run)
                break
            time.sleep(max(0.0, interval - (time.monotonic() - started)))
    log.info("listener stopped; %d frames registered", registered)
    return 0


# mpitrack stop ---------------------------------------------------------------------


def request_stop(config: Config) -> str:
    """Set the run's stop key; returns the key."""
    urls = attach_services(config, need_database=False)
    client = _redis(config, urls.redis_url)
    try:
        registry = RedisRegistry(client, config.run)
        registry.request_stop()
    finally:
        client.close()
    return registry.prefix + "stop"
