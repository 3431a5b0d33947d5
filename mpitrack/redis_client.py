"""Connecting to Redis with bounded retries, and errors that name the server."""

from __future__ import annotations

import logging
import time

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from mpitrack.errors import ServiceUnavailable
from mpitrack.urls import redact_url

log = logging.getLogger(__name__)


def connect(url: str, retries: int = 5, backoff: float = 0.5) -> redis.Redis:
    """A client whose server answered PING; ServiceUnavailable after ``retries`` retries.

    Once connected, each command is retried by redis-py itself (3 times, with
    exponential backoff up to 2 s), so a blip in a long run is ridden out
    while a dead server still surfaces as an error within seconds.
    """
    client = redis.Redis.from_url(
        url,
        socket_connect_timeout=10,
        health_check_interval=30,
        retry=Retry(ExponentialBackoff(cap=2.0, base=0.05), retries=3),
    )
    for attempt in range(retries + 1):
        try:
            client.ping()
            return client
        except redis.exceptions.ConnectionError as exc:
            if attempt == retries:
                client.close()
                raise ServiceUnavailable(
                    f"cannot connect to Redis at {redact_url(url)} after {retries + 1} "
                    f"attempts: {exc}"
                ) from None
            delay = backoff * 2**attempt
            log.warning(
                "Redis at %s not reachable (attempt %d/%d), retrying in %.1f s",
                redact_url(url),
                attempt + 1,
                retries + 1,
                delay,
            )
            time.sleep(delay)
    raise AssertionError("unreachable")
