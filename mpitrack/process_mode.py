"""Separate-process mode: each role of `mpitrack run` as its own process, over Redis.

runtime.py lays the same roles on MPI ranks; both build them in wiring.py,
and the role loops in roles/ run as they are, here over the links of
transport/redis.py and transport/redis_worker.py.

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
from dataclasses import dataclass

import redis

from mpitrack import services, wiring
from mpitrack.config import Config
from mpitrack.errors import ServiceUnavailable
from mpitrack.redis_keys import RedisKeys
from mpitrack.registry import RedisRegistry
from mpitrack.roles.stats import serve
from mpitrack.roles.worker import work
from mpitrack.stopflag import StopFlag
from mpitrack.transport.redis import RedisDispatcherLink, RedisStatsLink
from mpitrack.transport.redis_streams import finished_epoch, run_finished
from mpitrack.transport.redis_worker import RedisWorkerLink
from mpitrack.urls import redact_url
from mpitrack.wiring import RunOptions

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DispatchOptions(RunOptions):
    """`mpitrack dispatch`'s options: those of a run, and the number of job slots.

    slots: jobs outstanding on the stream at most (None: one per region, at most
        ``process.max_slots``).
    """

    slots: int | None = None


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


def _redis(config: Config, url: str | None) -> redis.Redis:
    assert url is not None
    return wiring.connect_redis(config, url)


# mpitrack dispatch -------------------------------------------------------------------


def run_dispatcher(config: Config, options: DispatchOptions) -> int:
    """The dispatcher process; returns the exit code (1 when jobs failed)."""
    stop = StopFlag()
    stop.install(graceful=True)
    urls = attach_services(config)
    assert urls.database_url is not None
    committed = wiring.prepare_database(config, urls.database_url, options.retry_failed)
    with contextlib.closing(_redis(config, urls.redis_url)) as client:
        slots = options.slots or min(len(config.regions), config.process.max_slots)
        link = RedisDispatcherLink(client, RedisKeys(config.run), slots)
        log.info(
            "run %s: database %s, redis %s",
            config.run,
            redact_url(urls.database_url),
            redact_url(str(urls.redis_url)),
        )
        with wiring.lost_redis_is_unavailable(urls.redis_url):
            summary = wiring.run_dispatcher(
                config,
                options,
                committed,
                registry=RedisRegistry(client, config.run),
                link=link,
                scanner=None,  # `mpitrack listen` registers the frames
                stop=stop,
            )
        if link.duplicates:
            log.info("%d duplicate or stale reports ignored", link.duplicates)
    return wiring.exit_code(summary)


# mpitrack work ---------------------------------------------------------------------


def run_worker(config: Config) -> int:
    """One worker process; returns 0 when the run is over or after SIGTERM."""
    stop = StopFlag()
    stop.install(graceful=True)
    urls = attach_services(config)
    assert urls.database_url is not None
    client = _redis(config, urls.redis_url)
    pid = os.getpid()
    consumer = f"{socket.gethostname()}-{pid}"
    runner = wiring.job_runner(config, urls.database_url, pid)
    link = RedisWorkerLink(
        client,
        RedisKeys(config.run),
        pid,
        consumer,
        lease=config.process.lease,
        max_attempts=config.process.max_attempts,
        stop_requested=lambda: stop.requested,
        already_committed=runner.already_committed,
        record_abandoned=runner.record_failure,
    )
    log.info("worker %s ready for run %s", consumer, config.run)
    try:
        with wiring.lost_redis_is_unavailable(urls.redis_url):
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
    link = RedisStatsLink(client, RedisKeys(config.run), stop_requested=lambda: stop.requested)
    try:
        with (
            wiring.statistics(config, urls.database_url) as statistics,
            wiring.lost_redis_is_unavailable(urls.redis_url),
        ):
            count = serve(statistics, link)
            code = wiring.statistics_exit_code(statistics)
    finally:
        client.close()
    log.info("statistics for %d scans", count)
    return code


# mpitrack listen -------------------------------------------------------------------


def run_listener(config: Config, poll_interval: float | None = None) -> int:
    """Register complete frames until the run is over or SIGTERM.

    Restart-safe: a (re)started listener registers every frame it finds, and
    registering is idempotent. It also re-registers everything when the
    registry vanished (a Redis restart without persistence).
    """
    stop = StopFlag()
    stop.install(graceful=True)
    urls = attach_services(config, need_database=False)
    client = _redis(config, urls.redis_url)
    keys = RedisKeys(config.run)
    registry = RedisRegistry(client, config.run)
    interval = config.runtime.poll_interval if poll_interval is None else poll_interval
    current = wiring.frame_scanner(config)
    ended_before = finished_epoch(client, keys)
    registered = 0
    log.info("listening on %s for run %s", config.frames.directory, config.run)
    with contextlib.closing(client), wiring.lost_redis_is_unavailable(urls.redis_url):
        while not stop.requested:
            started = time.monotonic()
            frames = current.poll()
            if frames:
                registry.add(frames)
                registered += len(frames)
                log.debug("registered %d frames", len(frames))
            if registry.forgot() or (registered and not client.exists(keys.frame_sets)):
                log.warning("the frame registry is gone (Redis restarted?): registering again")
                current = wiring.frame_scanner(config)
                registered = 0
                continue
            if run_finished(client, keys, ended_before):
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
    return registry.keys.stop
