"""The runtime on real MPI ranks (run by scripts/test as `mpiexec -n 4 pytest --with-mpi`)."""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from mpitrack import services, store
from mpitrack.config import load_config
from mpitrack.frames import FrameKey
from mpitrack.registry import MemoryRegistry
from mpitrack.roles.dispatcher import Dispatcher
from mpitrack.schedule import Job, Scheduler
from mpitrack.transport.base import JobReport

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A directory made by rank 0 and known to every rank. Not under pytest's temp
    root: each rank's pytest session chmods that to 0700, which would lock out the
    unprivileged user an embedded PostgreSQL runs as when the tests run as root."""
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    made = None
    if comm.rank == 0:
        made = tempfile.mkdtemp(prefix="mpitrack-mpi-test-")
        Path(made).chmod(0o755)
    path = Path(comm.bcast(made, root=0))
    yield path
    comm.Barrier()
    if comm.rank == 0:
        shutil.rmtree(path, ignore_errors=True)


def on_rank0(comm, step):
    """Run ``step`` on rank 0 only; every rank fails if it fails, so none hangs."""
    error = None
    if comm.rank == 0:
        try:
            step()
        except BaseException as exc:  # re-raised below on every rank
            error = f"{type(exc).__name__}: {exc}"
    error = comm.bcast(error, root=0)
    if error is not None:
        pytest.fail(f"rank 0 failed: {error}")


class TrivialRunner:
    """A job that does nothing but record that it ran: the transport is what is tested."""

    def __init__(self, rank: int) -> None:
        self.rank = rank
        self.ran: list[Job] = []

    def run(self, job: Job, volume=None) -> JobReport:
        self.ran.append(job)
        return JobReport(self.rank, job, ok=True, rows=1)


@pytest.mark.mpi(min_size=3)
def test_every_job_runs_exactly_once_and_scans_complete_in_order() -> None:
    from mpi4py import MPI

    from mpitrack.roles.stats import serve
    from mpitrack.roles.worker import work
    from mpitrack.runtime import Layout
    from mpitrack.transport.mpi import MPIDispatcherLink, MPIStatsLink, MPIWorkerLink

    comm = MPI.COMM_WORLD
    layout = Layout(comm.size)
    regions, scans = range(5), range(20)
    if comm.rank == 0:
        registry = MemoryRegistry()
        registry.add(FrameKey(r, f, s) for r in regions for s in scans for f in range(3))
        dispatcher = Dispatcher(
            scheduler=Scheduler(regions, 0, scans[-1]),
            registry=registry,
            link=MPIDispatcherLink(comm, layout.workers, layout.stats_rank),
            windows={r: (0, 1, 2) for r in regions},
            poll_interval=0.01,
        )
        summary = dispatcher.run()
        assert summary.ok and summary.jobs_done == len(regions) * len(scans)
        ran = None
        completed = None
    elif comm.rank == layout.stats_rank:
        completed: list[int] = []

        class Collect:
            def __call__(self, scan: int) -> None:
                completed.append(scan)

        serve(Collect(), MPIStatsLink(comm))  # type: ignore[arg-type]
        ran = None
    else:
        runner = TrivialRunner(comm.rank)
        work(runner, MPIWorkerLink(comm))  # type: ignore[arg-type]
        ran = [(job.region, job.scan) for job in runner.ran]
        completed = None
    all_ran = comm.gather(ran, root=0)
    all_completed = comm.gather(completed, root=0)
    if comm.rank == 0:
        jobs = [pair for part in all_ran if part for pair in part]
        assert sorted(jobs) == [(r, s) for r in regions for s in scans]
        stats = next(scans for scans in all_completed if scans is not None)
        assert stats == list(scans)


@pytest.mark.mpi(min_size=4)
def test_run_on_all_ranks_equals_a_one_process_run(shared_tmp: Path) -> None:
    from mpi4py import MPI

    from mpitrack.runtime import run
    from mpitrack.sim.writer import ExperimentSpec, simulate
    from mpitrack.wiring import RunOptions

    comm = MPI.COMM_WORLD
    base = shared_tmp
    spec = ExperimentSpec(base / "exp", scenarios=("crossing", "drifting"), regions=4, scans=5)
    on_rank0(comm, lambda: simulate(spec))
    config = load_config(
        base / "exp" / "experiment.yaml", env={}, overrides={"workdir": str(base / "world")}
    )
    assert run(config, RunOptions(), comm=comm) == 0

    def compare_with_one_process() -> None:
        single = load_config(
            base / "exp" / "experiment.yaml", env={}, overrides={"workdir": str(base / "self")}
        )
        assert run(single, RunOptions(), comm=MPI.COMM_SELF) == 0
        rows = {}
        for name in ("world", "self"):
            with (
                services.resolved_services(base / name, None, None, need_redis=False) as urls,
                store.connect(urls.database_url, single.run, retries=0) as conn,
            ):
                rows[name] = conn.execute(
                    "SELECT region_id, track_id, scan_number, detected, overlapping, features "
                    "FROM measurements ORDER BY 1, 3, 2"
                ).fetchall()
        assert rows["world"], "no rows written"
        assert rows["world"] == rows["self"]

    on_rank0(comm, compare_with_one_process)


def digest(volume) -> str:
    return hashlib.sha256(volume.tobytes()).hexdigest()


class VolumeRunner:
    """Records the volume each job came with (the in-memory fan-out's transport)."""

    def __init__(self, rank: int) -> None:
        self.rank = rank
        self.got: list[tuple[int, int, tuple[int, ...], str, str]] = []

    def run(self, job: Job, volume=None) -> JobReport:
        assert volume is not None, f"job {job} came without its volume"
        self.got.append((job.region, job.scan, volume.shape, volume.dtype.str, digest(volume)))
        return JobReport(self.rank, job, ok=True, rows=1)


class Volumes:
    """A distinct volume per (region, scan), each handed out once."""

    def __init__(self) -> None:
        self.taken: list[tuple[int, int]] = []

    @staticmethod
    def volume(region: int, scan: int):
        import numpy as np

        rng = np.random.default_rng(1000 * region + scan)
        return rng.random((3, 40 + region, 50), dtype=np.float32)

    def take(self, region: int, scan: int):
        self.taken.append((region, scan))
        return self.volume(region, scan)


@pytest.mark.mpi(min_size=3)
def test_each_job_arrives_with_its_own_volume_intact() -> None:
    """Volumes go as buffer messages after the job's header (transport/mpi.py): every
    worker gets exactly the array rank 0 cut for that (region, scan)."""
    from mpi4py import MPI

    from mpitrack.roles.stats import serve
    from mpitrack.roles.worker import work
    from mpitrack.runtime import Layout
    from mpitrack.transport.mpi import MPIDispatcherLink, MPIStatsLink, MPIWorkerLink

    comm = MPI.COMM_WORLD
    layout = Layout(comm.size)
    regions, scans = range(4), range(6)
    got = None
    if comm.rank == 0:
        registry = MemoryRegistry()
        registry.add(FrameKey(r, f, s) for r in regions for s in scans for f in range(3))
        volumes = Volumes()
        link = MPIDispatcherLink(comm, layout.workers, layout.stats_rank)
        dispatcher = Dispatcher(
            scheduler=Scheduler(regions, 0, scans[-1]),
            registry=registry,
            link=link,
            windows={r: (0, 1, 2) for r in regions},
            poll_interval=0.01,
            volumes=volumes,
        )
        summary = dispatcher.run()
        assert summary.ok and summary.jobs_done == len(regions) * len(scans)
        assert sorted(volumes.taken) == [(r, s) for r in regions for s in scans]
        assert link.volumes_in_flight == 0
    elif comm.rank == layout.stats_rank:
        serve(lambda scan: None, MPIStatsLink(comm))  # type: ignore[arg-type]
    else:
        runner = VolumeRunner(comm.rank)
        work(runner, MPIWorkerLink(comm))  # type: ignore[arg-type]
        got = runner.got
    everything = comm.gather(got, root=0)
    if comm.rank == 0:
        received = sorted(item for part in everything if part for item in part)
        expected = sorted(
            (r, s, v.shape, v.dtype.str, digest(v))
            for r in regions
            for s in scans
            for v in [Volumes.volume(r, s)]
        )
        assert received == expected
