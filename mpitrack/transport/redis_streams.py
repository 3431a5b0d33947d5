"""The Redis streams of separate-process mode: what their entries hold, shared by both sides.

Keys, all under ``mpitrack:{run}:`` (named in redis_keys.py; docs/process-mode.md is the
reference):

- ``jobs`` (stream, consumer group ``workers``): one entry per dispatch, field
  ``data`` = JSON ``{"id", "region", "scan", "after_scan"}``. ``id`` is the
  dispatch id ``{epoch}-{n}``: a retry or a re-dispatch keeps it, so the
  dispatcher counts one completion per dispatch however often it is reported.
- ``jobs:attempts`` (hash): dispatch id -> attempts started.
- ``jobs:dead`` (stream): jobs given up after ``max_attempts``, with the error.
- ``events`` (stream): field ``data`` = JSON; ``type`` is ``report`` (a job's
  final outcome), ``attempt_failed`` (a failure that will be retried) or
  ``scan_complete``.
- ``dispatcher`` (string): the epoch of the dispatcher that owns the run.
- ``finished`` (string, expires): that epoch once the run is over.

Why JSON: nothing that comes from Redis is ever unpickled; a malformed entry
is a ValueError for its reader, never a crash of a role.
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from mpitrack.redis_keys import GROUP, RedisKeys
from mpitrack.schedule import Job
from mpitrack.transport.base import JobReport

#: Seconds the ``finished`` flag lives: long enough for every process of the run
#: to see it, short enough that processes started for a new run of the same name
#: before its dispatcher do not exit at once (docs/process-mode.md).
FINISHED_TTL_S = 60
#: Approximate caps (XADD MAXLEN ~) of the streams, so a long run's Redis
#: memory stays bounded: entries far older than anything in flight are dropped.
MAX_EVENTS = 100_000
MAX_JOBS = 100_000
MAX_DEAD = 10_000


def ensure_group(client: redis.Redis, keys: RedisKeys) -> None:
    """Create the consumer group (and the stream) unless it exists.

    Reading from id 0, so jobs added before the group existed are not skipped.
    """
    try:
        client.xgroup_create(keys.jobs, GROUP, id="0", mkstream=True)
    except redis.exceptions.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def run_finished(client: redis.Redis, keys: RedisKeys, ended_before: bytes | None = None) -> bool:
    """Whether the dispatcher that owns the run has declared it over.

    ended_before: the epoch that had declared the run over when the caller
    started (`finished_epoch`); that declaration is old news, not an order to
    exit: a process started right after a run ended (to run it again) waits
    for the next dispatcher's declaration instead.
    """
    epoch = finished_epoch(client, keys)
    return epoch is not None and epoch != ended_before


def finished_epoch(client: redis.Redis, keys: RedisKeys) -> bytes | None:
    """The epoch of the dispatcher that has declared the run over, if one has."""
    owner, finished = client.mget([keys.dispatcher, keys.finished])
    return owner if owner is not None and owner == finished else None


def entry_order(entry_id: bytes | str) -> tuple[int, int]:
    """A stream entry id (``ms-seq``) as a tuple that sorts as Redis orders entries."""
    ms, _, seq = as_text(entry_id).partition("-")
    return int(ms), int(seq or 0)


def as_text(value: bytes | str) -> str:
    """A Redis reply as text, whether the client decodes responses or not."""
    return value.decode() if isinstance(value, bytes) else value


def _field(fields: dict[Any, Any] | None, name: str = "data") -> str:
    if not fields:
        raise ValueError("empty entry")
    value = fields.get(name, fields.get(name.encode()))
    if value is None:
        raise ValueError(f"entry has no field {name!r}")
    return as_text(value)


def as_int(value: object, what: str) -> int:
    """``value`` when it is an integer (JSON true is not), else a ValueError naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what} must be an integer, got {value!r}")
    return value


def encode_job(dispatch_id: str, job: Job) -> dict[str, str]:
    data = {"id": dispatch_id, "region": job.region, "scan": job.scan, "after_scan": job.after_scan}
    return {"data": json.dumps(data)}


def decode_job(fields: dict[Any, Any] | None) -> tuple[str, Job]:
    """(dispatch id, job) of a ``jobs`` entry; ValueError when it is malformed."""
    try:
        data = json.loads(_field(fields))
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("id"), str):
        raise ValueError(f"not a job: {data!r}")
    after = data.get("after_scan")
    job = Job(
        as_int(data.get("region"), "region"),
        as_int(data.get("scan"), "scan"),
        None if after is None else as_int(after, "after_scan"),
    )
    return data["id"], job


def encode_event(data: dict[str, object]) -> dict[str, str]:
    return {"data": json.dumps(data)}


def decode_event(fields: dict[Any, Any] | None) -> dict[str, Any]:
    data = json.loads(_field(fields))
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        raise ValueError(f"not an event: {data!r}")
    return data


def report_event(dispatch_id: str, report: JobReport, consumer: str, attempt: int) -> dict:
    job = report.job
    return {
        "type": "report",
        "id": dispatch_id,
        "region": job.region,
        "scan": job.scan,
        "after_scan": job.after_scan,
        "ok": report.ok,
        "rows": report.rows,
        "seconds": report.seconds,
        "compute_seconds": report.compute_seconds,
        "rejected": report.rejected,
        "error": report.error,
        "file": report.file,
        "worker": consumer,
        "attempt": attempt,
        "t": time.time(),
    }
