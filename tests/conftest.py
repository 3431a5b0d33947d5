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
def database_url(empty_database_url: str) -> str:
    """A fresh database with the schema applied."""
    with store.connect(empty_database_url, retries=0) as conn:
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
