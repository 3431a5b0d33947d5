"""Real servers for tests: PostgreSQL and Redis, embedded unless URLs are given.

MPITRACK_TEST_DATABASE_URL / MPITRACK_TEST_REDIS_URL point the suite at
existing servers (each test still gets its own fresh database; the Redis
database is flushed, so give one that holds nothing else). Without them one
embedded PostgreSQL and one embedded Redis serve the whole session.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from mpitrack import services, store


@pytest.fixture(scope="session")
def services_workdir() -> Iterator[Path]:
    """Where the embedded servers live: not under pytest's temp root, which every new
    pytest session chmods to 0700, locking out the unprivileged user that an embedded
    PostgreSQL runs as when the tests run as root."""
    path = Path(tempfile.mkdtemp(prefix="mpitrack-test-services-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server_url(services_workdir: Path) -> Iterator[str]:
    """URL of a PostgreSQL server (its maintenance database)."""
    given = os.environ.get("MPITRACK_TEST_DATABASE_URL")
    if given:
        yield given
        return
    with services.resolved_services(services_workdir, None, None, need_redis=False) as urls:
        assert urls.database_url is not None
        yield urls.database_url


@pytest.fixture
def empty_database_url(postgres_server_url: str) -> Iterator[str]:
    """A fresh, empty database on the test server, dropped afterwards."""
    url = store.create_database(postgres_server_url, "mpitrack_test")
    try:
        yield url
    finally:
        store.drop_database(postgres_server_url, url)


@pytest.fixture
def run_name() -> str:
    """The experiment (its run name: the schema) that `database_url` prepares; a test
    module whose config has another run overrides it."""
    return "test"


@pytest.fixture
def database_url(empty_database_url: str, run_name: str) -> str:
    """A fresh database with the tables of experiment `run_name` (its schema) applied."""
    with store.connect(empty_database_url, run_name, retries=0) as conn:
        store.apply_schema(conn)
    return empty_database_url


@pytest.fixture(scope="session")
def redis_server_url(services_workdir: Path) -> Iterator[str]:
    given = os.environ.get("MPITRACK_TEST_REDIS_URL")
    if given:
        yield given
        return
    with services.resolved_services(services_workdir, None, None, need_database=False) as urls:
        assert urls.redis_url is not None
        yield urls.redis_url


@pytest.fixture
def redis_url(redis_server_url: str) -> str:
    """A real Redis, flushed before the test."""
    import redis

    client = redis.Redis.from_url(redis_server_url)
    try:
        client.flushdb()
    finally:
        client.close()
    return redis_server_url


class TrackedExperiment:
    """A simulated experiment tracked scan by scan by a real worker's job runner.

    Regions 0 and 1 are the crossing and merge_then_split scenarios (two spots
    that overlap for a few scans and separate again); ``track(scan)`` commits
    every region's job of that scan to the database, as a run does.
    """

    def __init__(self, out: Path, database_url: str, scans: int, overrides: dict) -> None:
        from mpitrack.config import load_config
        from mpitrack.sim.writer import ExperimentSpec, simulate
        from mpitrack.wiring import job_runner, prepare_database

        spec = ExperimentSpec(
            out_dir=out,
            scenarios=("crossing", "merge_then_split"),
            regions=2,
            scans=scans,
            seed=1,
            run="spots",
        )
        summary = simulate(spec, progress_interval=1e9)
        self.config = load_config(
            summary.config, env={}, overrides={"database.url": database_url, **overrides}
        )
        self.database_url = database_url
        self.committed = prepare_database(self.config, database_url)
        self.runner = job_runner(self.config, database_url, worker=1)

    def track(self, scan: int) -> None:
        from mpitrack.schedule import Job

        for region in sorted(r.id for r in self.config.regions):
            after = self.committed.get(region)
            report = self.runner.run(Job(region, scan, after))
            assert report.ok, report
            self.committed[region] = scan

    def close(self) -> None:
        self.runner.close()


@pytest.fixture
def tracked_experiment(database_url: str, tmp_path: Path) -> Iterator:
    """Factory: ``tracked_experiment(scans, **config_overrides)`` -> a `TrackedExperiment`."""
    made: list[TrackedExperiment] = []

    def make(scans: int = 10, **overrides) -> TrackedExperiment:
        experiment = TrackedExperiment(
            tmp_path / f"experiment{len(made)}", database_url, scans, overrides
        )
        made.append(experiment)
        return experiment

    yield make
    for experiment in made:
        experiment.close()
