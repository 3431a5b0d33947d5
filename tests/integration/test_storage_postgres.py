"""The worker's storage protocol over a real PostgreSQL: one commit per job, re-commits
that write nothing, and psycopg's errors as the protocol's (ConnectionLost, StoreError)."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from mpitrack import store
from mpitrack.storage.base import ConnectionLost, JobResult, StoreError
from mpitrack.storage.postgres import PostgresJobStore
from mpitrack.track.result import TrackRow

pytestmark = pytest.mark.integration

NAME = "mpitrack-storage-test"


@pytest.fixture
def job_store(database_url: str, run_name: str) -> Iterator[PostgresJobStore]:
    with store.connect(database_url, run_name, retries=0) as conn:
        store.ensure_regions(conn, [(1, "one")])
    opened = PostgresJobStore(database_url, run_name, retries=0, application_name=NAME)
    yield opened
    opened.close()


def result(scan: int) -> JobResult:
    rows = [TrackRow(1, scan, True, False, {"position": {"omega": 1.0}})]
    return JobResult(1, scan, scan, rows, f"state-{scan}".encode(), 1)


def test_a_commit_is_written_once_and_read_back(job_store: PostgresJobStore) -> None:
    assert job_store.committed_scan(1) is None and job_store.load_checkpoint(1) is None
    assert job_store.commit(result(0)) is True
    assert job_store.commit(result(0)) is False  # a re-commit writes nothing
    assert job_store.committed_scan(1) == 0
    checkpoint = job_store.load_checkpoint(1)
    assert checkpoint is not None and (checkpoint.scan, checkpoint.state) == (0, b"state-0")


def test_a_lost_connection_is_connection_lost_and_reconnect_recovers(
    job_store: PostgresJobStore, database_url: str
) -> None:
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (NAME,),
        )
    with pytest.raises(ConnectionLost):
        job_store.commit(result(0))
    job_store.reconnect()
    assert job_store.commit(result(0)) is True


def test_other_database_errors_are_store_errors_naming_their_class(
    job_store: PostgresJobStore, database_url: str
) -> None:
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute("DROP TABLE test.job_failures")
    with pytest.raises(StoreError, match=r"^UndefinedTable: ") as caught:
        job_store.record_failure(1, 0, "a frame was truncated")
    assert not isinstance(caught.value, ConnectionLost)
    assert job_store.committed_scan(1) is None  # the connection is usable afterwards
