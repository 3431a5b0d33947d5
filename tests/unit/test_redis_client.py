"""An unreachable Redis: bounded retries, then an error naming the server, not its password."""

from __future__ import annotations

import socket

import pytest

from mpitrack import redis_client
from mpitrack.errors import ServiceUnavailable


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_unreachable_redis_names_the_server_and_hides_the_password() -> None:
    port = closed_port()
    with pytest.raises(ServiceUnavailable) as caught:
        redis_client.connect(f"redis://:hunter2@127.0.0.1:{port}/0", retries=1, backoff=0.01)
    message = str(caught.value)
    assert f"127.0.0.1:{port}" in message and "after 2 attempts" in message
    assert "hunter2" not in message
    assert caught.value.exit_code == 3


def test_reachable_redis_answers(redis_url: str) -> None:
    client = redis_client.connect(redis_url, retries=0)
    try:
        assert client.ping()
    finally:
        client.close()
