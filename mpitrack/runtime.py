"""`mpitrack run`: the roles laid out on MPI ranks.

- size >= 3: rank 0 dispatcher, ranks 1..size-2 workers, rank size-1 statistics.
- size == 2: rank 0 dispatcher and statistics, rank 1 worker.
- size == 1: every role in one process.

Rank 0 resolves the servers (starting embedded ones when no URL is given),
applies the schema, reads the checkpoints to resume, and broadcasts the URLs;
every rank then runs its role loop. A failure before the loops start is
broadcast too, so all ranks exit with the same clear error instead of hanging.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from mpitrack import redis_client, services, store
from mpitrack.config import Config
from mpitrack.errors import MpitrackError
from mpitrack.frames import DirectoryScanner, FramePattern
from mpitrack.regions import omega_window
from mpitrack.roles.dispatcher import Dispatcher, FrameFeed, JobLog, RunSummary
from mpitrack.roles.stats import ScanStatistics, serve
from mpitrack.roles.worker import JobRunner, work
from mpitrack.schedule import Scheduler
from mpitrack.urls import redact_url

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Layout:
    """Which rank does what for a communicator of ``size`` ranks."""

    size: int

    @property
    def workers(self) -> tuple[int, ...]:
        if self.size == 1:
            return ()
        if self.size == 2:
            return (1,)
        return tuple(range(1, self.size - 1))

    @property
    def stats_rank(self) -> int | None:
        return self.size - 1 if self.size >= 3 else None

    def role(self, rank: int) -> str:
        if rank == 0:
            return "dispatcher" if self.size > 1 else "all roles"
        return "stats" if rank == self.stats_rank else "worker"


@dataclass(frozen=True)
class RunOptions:
    follow: bool = False
    idle_timeout: float | None = None


class StopFlag:
    """Set by SIGTERM/SIGINT, and by SIGUSR1/SIGUSR2: SGE's -notify sends SIGUSR2 before
    a kill and SIGUSR1 before a suspend or at s_rt, and MPICH's mpiexec forwards them."""

    def __init__(self) -> None:
        self.requested = False

    def install(self, graceful: bool) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2):
            signal.signal(signum, self._on_signal if graceful else self._ignore)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        log.warning(
            "%s received: finishing in-flight jobs, then stopping", signal.Signals(signum).name
        )
        self.requested = True

    @staticmethod
    def _ignore(signum: int, frame: FrameType | None) -> None:
        log.info("%s received: rank 0 decides when to stop", signal.Signals(signum).name)


def windows_of(config: Config) -> dict[int, tuple[int, ...]]:
    n = config.frames.frames_per_scan
    return {r.id: omega_window(r.frames[0], r.frames[1], n) for r in config.regions}


def statistics_for(conn, config: Config) -> ScanStatistics:
    """The statistics role of this run, with its live report as configured."""
    return ScanStatistics(
        conn,
        config,
        config.report.directory,
        report=config.report.enabled,
        refresh_interval=config.report.refresh_interval,
    )


def scheduler_for(config: Config, committed: dict[int, int], follow: bool) -> Scheduler:
    """The run's scheduler: resuming after the committed scans, open-ended when following."""
    last_scan = None if follow else config.scans.last
    return Scheduler(
        windows_of(config), config.scans.first, last_scan, committed, config.runtime.on_failure
    )


def prepare_database(config: Config, database_url: str) -> dict[int, int]:
    """Apply the schema, record the regions, and return the committed scan per region."""
    with store.connect(database_url, retries=config.runtime.connect_retries) as conn:
        store.apply_schema(conn)
        store.ensure_regions(conn, [(r.id, r.description) for r in config.regions])
        return store.committed_scans(conn)


def run(config: Config, options: RunOptions, comm=None) -> int:
    """Run the experiment on ``comm`` (default MPI.COMM_WORLD); every rank of it calls this.

    Returns the exit code (the same on every rank).
    """
    from mpi4py import MPI

    comm = MPI.COMM_WORLD if comm is None else comm
    rank, size = comm.Get_rank(), comm.Get_size()
    layout = Layout(size)
    started_wall, started_cpu = time.monotonic(), time.process_time()
    _tag_log_lines(rank, size, layout.role(rank))
    stop = StopFlag()
    stop.install(graceful=rank == 0)
    with contextlib.ExitStack() as stack:
        setup: dict[str, object]
        cutter = None
        setup_error: Exception | None = None
        if rank == 0:
            try:
                urls = stack.enter_context(
                    services.resolved_services(
                        config.workdir, config.database.url, config.redis.url
                    )
                )
                assert urls.database_url is not None and urls.redis_url is not None
                committed = prepare_database(config, urls.database_url)
                if config.detector is not None:
                    from mpitrack.detector.settings import make_cutter

                    cutter = make_cutter(config, config.detector)
                redis_client.connect(urls.redis_url, config.runtime.connect_retries).close()
                setup = {
                    "database_url": urls.database_url,
                    "redis_url": urls.redis_url,
                    "committed": committed,
                }
                log.info(
                    "run %s: %d regions, %d ranks (%d workers), database %s, redis %s",
                    config.run,
                    len(config.regions),
                    size,
                    max(1, len(layout.workers)),
                    redact_url(urls.database_url),
                    redact_url(urls.redis_url),
                )
            except Exception as exc:  # every rank must learn of it, or they wait for ever
                setup_error = exc
                code = exc.exit_code if isinstance(exc, MpitrackError) else 1
                setup = {"error": str(exc), "exit_code": code}
        else:
            setup = {}
        # Rank 0 may take seconds (initdb of an embedded server): the others
        # wait without spinning, then the broadcast is immediate.
        _quiet_barrier(comm)
        setup = comm.bcast(setup, root=0)
        if "error" in setup:
            if setup_error is not None:
                raise setup_error
            return int(setup["exit_code"])  # type: ignore[arg-type]
        database_url = str(setup["database_url"])
        exit_code = 0
        if rank == 0:
            summary = _run_dispatcher(
                comm,
                layout,
                config,
                options,
                database_url,
                str(setup["redis_url"]),
                setup["committed"],  # type: ignore[arg-type]
                stop,
                cutter,
            )
            for line in summary.lines():
                (log.info if summary.ok else log.error)("%s", line)
            exit_code = 0 if summary.ok else 1
        elif rank == layout.stats_rank:
            from mpitrack.transport.mpi import MPIStatsLink

            with store.connect(database_url, retries=config.runtime.connect_retries) as conn:
                serve(statistics_for(conn, config), MPIStatsLink(comm))
        else:
            from mpitrack.transport.mpi import MPIWorkerLink

            runner = JobRunner(config, database_url, rank, windows_of(config))
            try:
                work(runner, MPIWorkerLink(comm))
            finally:
                runner.close()
        wall, cpu = time.monotonic() - started_wall, time.process_time() - started_cpu
        # Waiting ranks must not spin (see transport/mpi.py): this line shows it.
        log.info(
            "rank %d (%s) used %.2f s CPU in %.1f s (%.0f%%)",
            rank,
            layout.role(rank),
            cpu,
            wall,
            100.0 * cpu / wall if wall > 0 else 0.0,
        )
        _quiet_barrier(comm)
        return int(comm.bcast(exit_code, root=0))


def _run_dispatcher(
    comm,
    layout: Layout,
    config: Config,
    options: RunOptions,
    database_url: str,
    redis_url: str,
    committed: dict[int, int],
    stop: StopFlag,
    cutter: FrameFeed | None = None,
) -> RunSummary:
    from mpitrack.registry import RedisRegistry

    client = redis_client.connect(redis_url, config.runtime.connect_retries)
    registry = RedisRegistry(client, config.run)
    registry.clear_stop()
    windows = windows_of(config)
    scheduler = scheduler_for(config, committed, options.follow)
    log.info(
        "%s jobs to run%s",
        scheduler.total_jobs if scheduler.total_jobs is not None else "open-ended",
        f" (resuming: {len(committed)} regions have checkpoints)" if committed else "",
    )
    # With a detector, rank 0 reads each raw frame once and writes the region
    # frames (docs/detector.md); otherwise producers write region frames.
    scanner: FrameFeed = cutter or DirectoryScanner(
        config.frames.directory, FramePattern(config.frames.pattern)
    )
    job_log = JobLog.open(job_log_path(config.workdir))
    with contextlib.ExitStack() as stack:
        stack.callback(job_log.close)
        if cutter is not None:
            stack.callback(cutter.close)
        stack.callback(client.close)
        stats_conn = None
        if layout.stats_rank is None:
            stats_conn = stack.enter_context(
                store.connect(database_url, retries=config.runtime.connect_retries)
            )
        local_stats = statistics_for(stats_conn, config) if stats_conn is not None else None
        if layout.size == 1:
            from mpitrack.transport.local import LOCAL_WORKER, LocalLink

            runner = JobRunner(config, database_url, LOCAL_WORKER, windows)
            stack.callback(runner.close)
            link = LocalLink(runner.run, local_stats)
        else:
            from mpitrack.transport.mpi import MPIDispatcherLink

            link = MPIDispatcherLink(comm, layout.workers, layout.stats_rank, local_stats)
        dispatcher = Dispatcher(
            scheduler=scheduler,
            registry=registry,
            link=link,
            windows=windows,
            scanner=scanner,
            poll_interval=config.runtime.poll_interval,
            stop_requested=lambda: stop.requested or registry.stop_requested(),
            idle_timeout=options.idle_timeout
            if options.idle_timeout is not None
            else config.runtime.idle_timeout,
            job_log=job_log,
        )
        summary = dispatcher.run()
        if local_stats is not None:
            local_stats.finish()
        return summary


def _quiet_barrier(comm) -> None:
    """A barrier that sleeps instead of spinning while other ranks finish."""
    request = comm.Ibarrier()
    delay = 1e-4
    while not request.Test():
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def _tag_log_lines(rank: int, size: int, role: str) -> None:
    tag = f"[rank {rank}/{size} {role}] " if size > 1 else ""
    for handler in logging.getLogger().handlers:
        formatter = handler.formatter
        fmt = formatter._fmt if formatter is not None and formatter._fmt else "%(message)s"
        handler.setFormatter(
            logging.Formatter(
                fmt.replace("%(message)s", tag + "%(message)s"), datefmt="%Y-%m-%dT%H:%M:%S"
            )
        )


def job_log_path(workdir: Path) -> Path:
    return workdir / "logs" / "jobs.jsonl"
