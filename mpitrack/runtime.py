"""`mpitrack run`: the roles laid out on MPI ranks.

- size >= 3: rank 0 dispatcher, ranks 1..size-2 workers, rank size-1 statistics.
- size == 2: rank 0 dispatcher and statistics, rank 1 worker.
- size == 1: every role in one process.

Rank 0 resolves the servers (starting embedded ones when no URL is given),
applies the schema, reads the checkpoints to resume, and broadcasts the URLs;
every rank then runs its role loop. A failure before the loops start is
broadcast too, so all ranks exit with the same clear error instead of hanging.
Once the loops run, an error that a rank cannot recover from (a server gone for
longer than its retries, a bug) ends the whole MPI job at once (MPI_Abort) with
one message naming the rank and the cause: no rank waits for ever for a rank
that is gone. The exit code is the largest of the ranks' (the statistics rank's
is 1 when a scan's statistics could not be stored).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, NoReturn

from mpitrack import services, wiring
from mpitrack.config import Config
from mpitrack.errors import MpitrackError, UsageError
from mpitrack.registry import RedisRegistry
from mpitrack.roles.dispatcher import FrameFeed
from mpitrack.roles.stats import serve
from mpitrack.roles.worker import work
from mpitrack.stopflag import StopFlag
from mpitrack.urls import redact_url
from mpitrack.wiring import RunOptions

if TYPE_CHECKING:
    from mpitrack.detector.cutter import Cutter

log = logging.getLogger(__name__)

# Seconds an aborting rank waits for mpiexec to pass its last log line on (_abort).
ABORT_OUTPUT_GRACE_S = 1.0


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


def check_launch(size: int, environ: Mapping[str, str]) -> None:
    """Refuse a one-rank run inside a Slurm step of several tasks.

    srun with no PMI that the MPI library speaks (``--mpi=none``, a site's
    default) starts every task as a separate one-rank MPI job; each would then
    dispatch every region of the same experiment against the same database.
    """
    tasks = environ.get("SLURM_STEP_NUM_TASKS", "")
    if size == 1 and tasks.isdigit() and int(tasks) > 1:
        raise UsageError(
            f"srun started {tasks} tasks but each is a one-rank MPI job (the MPI library and "
            "srun share no PMI): launch with srun --mpi=pmi2 (MPICH) or with mpiexec"
        )


def run(config: Config, options: RunOptions, comm=None) -> int:
    """Run the experiment on ``comm`` (default MPI.COMM_WORLD); every rank of it calls this.

    Returns the exit code (the same on every rank).
    """
    from mpi4py import MPI

    comm = MPI.COMM_WORLD if comm is None else comm
    rank, size = comm.Get_rank(), comm.Get_size()
    check_launch(size, os.environ)
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
                committed = wiring.prepare_database(config, urls.database_url, options.retry_failed)
                if config.detector is not None:
                    from mpitrack.detector.settings import make_cutter

                    cutter = make_cutter(
                        config, config.detector, in_memory=not config.detector.cut_files
                    )
                wiring.connect_redis(config, urls.redis_url).close()
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
        try:
            exit_code = _run_role(comm, layout, config, options, setup, stop, cutter)
        except BaseException as exc:  # one rank gone must not leave the others waiting
            if size == 1:
                raise
            _abort(comm, layout.role(rank), exc)
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
        return int(comm.allreduce(exit_code, op=MPI.MAX))


def _run_role(
    comm,
    layout: Layout,
    config: Config,
    options: RunOptions,
    setup: dict[str, object],
    stop: StopFlag,
    cutter: Cutter | None,
) -> int:
    """This rank's role loop, to its end; the rank's exit code."""
    rank = comm.Get_rank()
    database_url = str(setup["database_url"])
    if rank == 0:
        redis_url = str(setup["redis_url"])
        with wiring.lost_redis_is_unavailable(redis_url):
            return _run_dispatcher(
                comm,
                layout,
                config,
                options,
                database_url,
                redis_url,
                setup["committed"],  # type: ignore[arg-type]
                stop,
                cutter,
            )
    if rank == layout.stats_rank:
        from mpitrack.transport.mpi import MPIStatsLink

        with wiring.statistics(config, database_url) as statistics:
            serve(statistics, MPIStatsLink(comm))
            return wiring.statistics_exit_code(statistics)
    from mpitrack.transport.mpi import MPIWorkerLink

    runner = wiring.job_runner(config, database_url, rank)
    try:
        work(runner, MPIWorkerLink(comm))
    finally:
        runner.close()
    return 0


def _abort(comm, role: str, exc: BaseException) -> NoReturn:
    """End every rank of the job now, after saying once which rank failed and why."""
    rank = comm.Get_rank()
    if isinstance(exc, MpitrackError):
        code, cause, trace = exc.exit_code, str(exc), None
    elif isinstance(exc, KeyboardInterrupt):
        code, cause, trace = 130, "interrupted", None
    else:
        code, cause, trace = 1, f"{type(exc).__name__}: {exc}", exc
    log.critical(
        "rank %d (%s) cannot go on: %s; ending the whole MPI job (exit code %d). "
        "Run the same command again to resume from the checkpoints.",
        rank,
        role,
        cause,
        code,
        exc_info=trace,
    )
    for handler in logging.getLogger().handlers:
        handler.flush()
    # mpiexec forwards each rank's stderr through a pipe, and MPI_Abort tears the
    # job down without draining it: without this pause the line above is lost
    # now and then (seen in CI), and the user gets exit code 3 with no reason.
    time.sleep(ABORT_OUTPUT_GRACE_S)
    comm.Abort(code)
    raise SystemExit(code)  # not reached: Abort ends the process


def _run_dispatcher(
    comm,
    layout: Layout,
    config: Config,
    options: RunOptions,
    database_url: str,
    redis_url: str,
    committed: dict[int, int],
    stop: StopFlag,
    cutter: Cutter | None = None,
) -> int:
    """Rank 0: the dispatcher over MPI (or in-process), and the statistics when no
    rank of their own is left for them; the exit code."""
    # With a detector, rank 0 reads each raw frame once and cuts the region frames,
    # into memory (sent with the jobs) or into files (docs/detector.md); otherwise
    # producers write region frames.
    scanner: FrameFeed = cutter or wiring.frame_scanner(config)
    fanout = cutter if cutter is not None and cutter.buffer is not None else None
    with contextlib.ExitStack() as stack:
        if cutter is not None:
            stack.callback(cutter.close)
        client = stack.enter_context(contextlib.closing(wiring.connect_redis(config, redis_url)))
        local_stats = None
        if layout.stats_rank is None:
            local_stats = stack.enter_context(wiring.statistics(config, database_url))
        if layout.size == 1:
            from mpitrack.transport.local import LOCAL_WORKER, LocalLink

            runner = wiring.job_runner(config, database_url, LOCAL_WORKER)
            stack.callback(runner.close)
            link = LocalLink(runner.run, local_stats)
        else:
            from mpitrack.transport.mpi import MPIDispatcherLink

            link = MPIDispatcherLink(comm, layout.workers, layout.stats_rank, local_stats)
        summary = wiring.run_dispatcher(
            config,
            options,
            committed,
            registry=RedisRegistry(client, config.run),
            link=link,
            scanner=scanner,
            stop=stop,
            fanout=fanout,
        )
        code = wiring.exit_code(summary)
        if local_stats is not None:
            local_stats.finish()
            code = max(code, wiring.statistics_exit_code(local_stats))
        return code


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
