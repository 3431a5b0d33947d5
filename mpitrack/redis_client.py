"""Connecting to Redis: the one connect function every role uses, with one retry policy.

Two phases, because they fail for different reasons:

- First contact is bounded by ``retries`` (exponential backoff from
  ``backoff`` seconds): a server that is simply not there ends the command
  with ServiceUnavailable (exit code 3), naming the server but not its password.
- After that, every command retries with exponential backoff (50 ms doubling,
  at most 1 s a wait) for about ``reconnect_seconds``, so a Redis restart is a
  pause, not a crash; a server gone for longer surfaces as the command's
  ConnectionError or TimeoutError.
"""

from __future__ import annotations

import logging
import math
import time

import redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.retry import Retry

from mpitrack.errors import ServiceUnavailable
from mpitrack.urls import redact_text, redact_url

log = logging.getLogger(__name__)

# The longest wait between two tries of a command; the number of tries is then
# chosen so that their waits add up to at least reconnect_seconds.
_RETRY_CAP_S = 1.0


def connect(
    url: str, retries: int = 5, reconnect_seconds: float = 60.0, backoff: float = 0.5
) -> redis.Redis:
    """A client whose server answered PING and that rides out an outage of
    ``reconnect_seconds`` (see the module docstring)."""
    _first_contact(url, retries, backoff)
    attempts = max(1, math.ceil(reconnect_seconds / _RETRY_CAP_S) + 5)
    return redis.Redis.from_url(
        url,
        socket_connect_timeout=5,
        socket_timeout=30,
        health_check_interval=30,
        retry=Retry(ExponentialBackoff(cap=_RETRY_CAP_S, base=0.05), attempts),
        retry_on_error=[redis.exceptions.ConnectionError, redis.exceptions.TimeoutError],
    )


def _first_contact(url: str, retries: int, backoff: float) -> None:
    """PING until the server answers; ServiceUnavailable after ``retries`` retries."""
    probe = redis.Redis.from_url(url, socket_connect_timeout=10, retry=Retry(NoBackoff(), 0))
    try:
        for attempt in range(retries + 1):
            try:
                probe.ping()
                return
            except redis.exceptions.ConnectionError as exc:
                if attempt == retries:
                    raise ServiceUnavailable(
                        f"cannot connect to Redis at {redact_url(url)} after {retries + 1} "
                        f"attempts: {redact_text(str(exc), url)}"
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
    finally:
        probe.close()
