"""The fault matrix: each fault in MPI mode and in process mode must end (or be ridden
out) without a hang, and the run, re-run where the fault ended it, must give the rows
of an uninterrupted run.

    fault               MPI (mpiexec -n 3)                process mode (dispatch, listen,
                                                          work x2, stats)
    kill -9 worker      the job ends at once; re-run      the other worker goes on; a new
                                                          worker is started
    kill -9 rank 0 /    the job ends at once; re-run      a new dispatcher takes over
      the dispatcher
    SIGTERM             graceful stop (exit 1); re-run    the dispatcher stops gracefully
                                                          (exit 1); the roles are re-run
    PostgreSQL restart  ridden out (exit 0)               ridden out (exit 0)
    Redis restart       ridden out (exit 0)               ridden out (exit 0)
    PostgreSQL gone,    the job ends at once, exit 3;
      Redis gone        re-run once the server is back

Two experiments in one database: test_experiments.py. The experiment is tiny (3
regions x 6 scans) and its frames arrive in batches (harness.StagedFrames): scans 0-2
and half of scan 3's frames first, so the fault strikes while the run waits with a
scan half registered (what a Redis restart loses), then the rest. Every wait has a
deadline and every case a timeout, so a hang fails instead of blocking CI.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from harness import (
    MPIEXEC,
    MPITRACK,
    StagedFrames,
    copy_experiment,
    done_jobs,
    experiment_query,
    experiment_rows,
    kill_tree,
    rank_pid,
    simulate,
    wait_for,
)
from test_process_mode import Processes

from mpitrack import services, store
from mpitrack.redis_keys import RedisKeys

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

REGIONS, SCANS, FIRST_SCANS = 3, 6, 3
FAULTS = ("kill-worker", "kill-dispatcher", "sigterm", "postgres-restart", "redis-restart")
# A server that does not come back within the retries: the whole MPI job must end.
GONE = ("postgres-gone", "redis-gone")


class Servers:
    """A PostgreSQL and a Redis of the module's own, so a test may restart them."""

    def __init__(self, directory: Path) -> None:
        self.postgres = services.EmbeddedPostgres(directory / "postgres")
        self.redis = services.EmbeddedRedis(directory / "redis")
        self.postgres_url = self.postgres.start()
        self.redis_url = self.redis.start()

    def server(self, which: str) -> services.EmbeddedPostgres | services.EmbeddedRedis:
        return self.postgres if which == "postgres" else self.redis

    def ensure_running(self) -> None:
        self.postgres.start()
        self.redis.start()

    def stop(self) -> None:
        self.redis.stop()
        self.postgres.stop()


@pytest.fixture(scope="module")
def servers() -> Iterator[Servers]:
    # Not under pytest's temp root (mode 0700): an embedded PostgreSQL started by root
    # runs as an unprivileged user that must reach its directory.
    directory = Path(tempfile.mkdtemp(prefix="mpitrack-faults-"))
    directory.chmod(0o755)
    started = Servers(directory)
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="module")
def experiment(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("faults") / "exp"
    return simulate(
        out, "--scenario", "drifting,crossing,appear_vanish", "--regions", str(REGIONS),
        "--scans", str(SCANS), "--seed", "7", "--run", "faults",
    )  # fmt: skip


def environment(servers: Servers, run: str, workdir: Path) -> tuple[dict[str, str], str]:
    """The run's environment, on a fresh database of the module's server; and that URL."""
    url = store.create_database(servers.postgres_url, "faults")
    env = dict(os.environ)
    env.update(
        MPITRACK_DATABASE_URL=url,
        MPITRACK_REDIS_URL=servers.redis_url,
        MPITRACK_RUN=run,
        MPITRACK_WORKDIR=str(workdir),
        MPITRACK_RUNTIME__POLL_INTERVAL="0.05",
        MPITRACK_RUNTIME__CONNECT_RETRIES="3",
        MPITRACK_REDIS__RECONNECT_SECONDS="5",
        MPITRACK_REPORT__ENABLED="false",
    )
    return env, url


def mpi_run(config: Path, env: dict[str, str], log: Path) -> subprocess.Popen:
    command = [MPIEXEC, "-n", "3", MPITRACK, "run", "--config", str(config)]
    with log.open("a") as out:
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)


@pytest.fixture(scope="module")
def reference(experiment: Path, servers: Servers, tmp_path_factory) -> list[tuple]:
    """The rows of an uninterrupted run."""
    workdir = tmp_path_factory.mktemp("reference")
    env, url = environment(servers, "reference", workdir)
    log = workdir / "run.log"
    process = mpi_run(experiment, env, log)
    try:
        assert process.wait(timeout=120) == 0, log.read_text()
    finally:
        kill_tree(process)
    rows = experiment_rows(url, "reference")
    assert rows, "the uninterrupted run wrote no rows"
    return rows


def stage(experiment: Path, out: Path) -> StagedFrames:
    """A copy of the experiment with scans 0-2 and half of scan 3 delivered."""
    frames = StagedFrames(copy_experiment(experiment, out))
    frames.deliver(range(FIRST_SCANS))
    for path in sorted(frames.held.glob(f"*_scan_{FIRST_SCANS}.npy"))[::2]:
        os.replace(path, frames.frames / path.name)
    return frames


def wait_for_the_stall(servers: Servers, run: str, workdir: Path, alive) -> None:
    """Until the first scans are committed and scan 3's first frames are registered."""
    client = redis.Redis.from_url(servers.redis_url)
    keys = RedisKeys(run)
    try:

        def stalled() -> bool:
            assert alive(), "the run ended before the fault"
            registered = sum(client.scard(keys.frames(r, FIRST_SCANS)) for r in range(REGIONS))
            return done_jobs(workdir) >= REGIONS * FIRST_SCANS and registered > 0

        wait_for(stalled, "the first scans' jobs and scan 3's first frames", timeout=90)
    finally:
        client.close()


def restart_while_frames_arrive(servers: Servers, fault: str, frames: StagedFrames) -> None:
    """Restart the server. Redis: the rest of the frames arrive while it is down, so
    that their registration races the restart (the hardest order for the registry).
    PostgreSQL: it is back within the workers' connection retries."""
    server = servers.server(fault.removesuffix("-restart"))
    assert server.stop(), f"{fault}: the server was not running"
    if fault == "redis-restart":
        frames.deliver(range(FIRST_SCANS, SCANS))
    server.start()


@pytest.mark.parametrize("fault", FAULTS + GONE)
def test_mpi_mode(
    fault: str, experiment: Path, reference: list, servers: Servers, tmp_path: Path
) -> None:
    run = f"mpi-{fault}"
    frames = stage(experiment, tmp_path / "exp")
    workdir = tmp_path / "work"
    env, url = environment(servers, run, workdir)
    log = tmp_path / "run.log"
    process = mpi_run(frames.config, env, log)
    try:
        wait_for_the_stall(servers, run, workdir, lambda: process.poll() is None)
        if fault in ("kill-worker", "kill-dispatcher"):
            pid = rank_pid(process.pid, 1 if fault == "kill-worker" else 0)
            assert pid is not None, "rank not found"
            os.kill(pid, signal.SIGKILL)
        elif fault == "sigterm":
            process.send_signal(signal.SIGTERM)
        elif fault in GONE:
            servers.server(fault.removesuffix("-gone")).stop()
        else:
            restart_while_frames_arrive(servers, fault, frames)
        frames.deliver(range(FIRST_SCANS, SCANS))
        code = process.wait(timeout=90)
        if fault.endswith("-restart"):
            assert code == 0, log.read_text()
        else:
            if fault in GONE:
                assert code == 3, log.read_text()
                assert "cannot go on" in log.read_text()
                servers.server(fault.removesuffix("-gone")).start()
            assert code != 0, log.read_text()
            if fault == "sigterm":
                assert "stopped before the last scan" in log.read_text()
            process = mpi_run(frames.config, env, log)
            assert process.wait(timeout=90) == 0, log.read_text()
            assert "resuming" in log.read_text()
    finally:
        kill_tree(process)
        servers.ensure_running()  # for the next case, whatever happened here
    assert experiment_rows(url, run) == reference
    assert experiment_query(url, run, "SELECT count(*) FROM scan_stats") == [(SCANS,)]


@pytest.mark.parametrize("fault", FAULTS)
def test_process_mode(
    fault: str, experiment: Path, reference: list, servers: Servers, tmp_path: Path
) -> None:
    run = f"pm-{fault}"
    frames = stage(experiment, tmp_path / "exp")
    workdir = tmp_path / "work"
    env, url = environment(servers, run, workdir)
    procs = Processes(frames.config, env, tmp_path / "logs", "--lease", "2", "--reconnect", "30")
    try:
        procs.start_all()
        wait_for_the_stall(servers, run, workdir, lambda: procs.role("dispatch")[0].poll() is None)
        if fault == "kill-worker":
            victim = procs.role("work")[0]
            victim.kill()
            victim.wait()
            procs.procs = [(r, p) for r, p in procs.procs if p is not victim]
            procs.start("work")
            # A supervisor's new worker joins the run (rather than arriving after its end).
            wait_for(lambda: "ready for run" in procs.log("work3"), "the new worker", 60)
        elif fault == "kill-dispatcher":
            victim = procs.role("dispatch")[0]
            victim.kill()
            victim.wait()
            procs.procs = [(r, p) for r, p in procs.procs if p is not victim]
            procs.start("dispatch")
        elif fault == "sigterm":
            dispatcher = procs.role("dispatch")[0]
            dispatcher.send_signal(signal.SIGTERM)
            assert dispatcher.wait(timeout=60) == 1, procs.all_logs()
            codes = procs.wait_all(timeout=60)
            assert codes == {"dispatch": [1], "listen": [0], "work": [0, 0], "stats": [0]}, (
                procs.all_logs()
            )
            procs.procs = []
            procs.start_all()
        else:
            restart_while_frames_arrive(servers, fault, frames)
        frames.deliver(range(FIRST_SCANS, SCANS))
        codes = procs.wait_all(timeout=90)
        assert set(codes) == {"dispatch", "listen", "work", "stats"}, procs.all_logs()
        assert all(code == 0 for runs in codes.values() for code in runs), (
            codes,
            procs.all_logs(),
        )
    finally:
        procs.kill_all()
        servers.ensure_running()
    assert experiment_rows(url, run) == reference
    assert experiment_query(url, run, "SELECT count(*) FROM scan_stats") == [(SCANS,)]
