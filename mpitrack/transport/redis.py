"""Redis links: the MPI roles as separate processes, coordinated through streams.

The role loops (roles/dispatcher.py, roles/worker.py, roles/stats.py) run
unchanged over these links; only the carrying differs from transport/mpi.py.

Keys, all under ``mpitrack:{run}:`` (docs/process-mode.md is the reference):

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

Why virtual worker slots: the dispatcher hands jobs to idle workers
(`JobRequest`), but here workers pull from a stream and the dispatcher does
not know them. So the dispatcher link presents ``slots`` virtual workers, one
per job allowed to be outstanding, and a report frees its slot. Affinity then
has no meaning; a worker whose cached tracker is not at the job's
``after_scan`` loads the checkpoint.

Why JSON: nothing that comes from Redis is ever unpickled.

Redis restarts. Clients retry every command for ``reconnect_seconds`` (redis-py
`Retry`), so a restart is a pause. A restarted Redis without persistence has
lost everything: the dispatcher notices (its ``dispatcher`` key is gone),
re-creates the group and re-sends every job in flight; entries lost by a
partial restore (persistence that lags) are found by the same audit, which
checks each in-flight job's stream entry every second. A job running during
the loss may then run twice, even at once; the store's checkpoint lock makes
the second commit a no-op, and a worker reports a job whose scan is already
committed as done without running it.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from mpitrack import redis_client
from mpitrack.errors import UsageError
from mpitrack.schedule import Job
from mpitrack.transport.base import JobReport, JobRequest, WorkerMessage

log = logging.getLogger(__name__)

GROUP = "workers"
FINISHED_TTL_S = 60
MAX_EVENTS = 100_000
MAX_JOBS = 100_000
MAX_DEAD = 10_000


@dataclass(frozen=True)
class Keys:
    """The Redis keys of one run (see the module docstring)."""

    run: str

    @property
    def prefix(self) -> str:
        return f"mpitrack:{self.run}:"

    @property
    def jobs(self) -> str:
        return self.prefix + "jobs"

    @property
    def attempts(self) -> str:
        return self.prefix + "jobs:attempts"

    @property
    def dead(self) -> str:
        return self.prefix + "jobs:dead"

    @property
    def events(self) -> str:
        return self.prefix + "events"

    @property
    def dispatcher(self) -> str:
        return self.prefix + "dispatcher"

    @property
    def finished(self) -> str:
        return self.prefix + "finished"


# Connection ------------------------------------------------------------------------


def connect(url: str, retries: int = 5, reconnect_seconds: float = 60.0) -> redis.Redis:
    """A client that rides out a Redis restart of up to ``reconnect_seconds``.

    The first contact is bounded by ``retries`` (exit code 3 when the server is
    simply not there); after that every command retries with backoff.
    """
    redis_client.connect(url, retries).close()
    cap = 1.0
    attempts = max(1, math.ceil(reconnect_seconds / cap) + 5)
    return redis.Redis.from_url(
        url,
        socket_connect_timeout=5,
        socket_timeout=30,
        health_check_interval=30,
        retry=Retry(ExponentialBackoff(cap=cap, base=0.05), attempts),
        retry_on_error=[redis.exceptions.ConnectionError, redis.exceptions.TimeoutError],
    )


def ensure_group(client: redis.Redis, keys: Keys) -> None:
    """Create the consumer group (and the stream) unless it exists.

    Reading from id 0, so jobs added before the group existed are not skipped.
    """
    try:
        client.xgroup_create(keys.jobs, GROUP, id="0", mkstream=True)
    except redis.exceptions.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def run_finished(client: redis.Redis, keys: Keys) -> bool:
    """Whether the dispatcher that owns the run has declared it over."""
    owner, finished = client.mget([keys.dispatcher, keys.finished])
    return owner is not None and owner == finished


# Messages -----------------------------------------------------------------------------


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _field(fields: dict[Any, Any] | None, name: str = "data") -> str:
    if not fields:
        raise ValueError("empty entry")
    value = fields.get(name, fields.get(name.encode()))
    if value is None:
        raise ValueError(f"entry has no field {name!r}")
    return _text(value)


def _int(value: object, what: str) -> int:
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
        _int(data.get("region"), "region"),
        _int(data.get("scan"), "scan"),
        None if after is None else _int(after, "after_scan"),
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
        "error": report.error,
        "file": report.file,
        "worker": consumer,
        "attempt": attempt,
        "t": time.time(),
    }


# Dispatcher side -------------------------------------------------------------------


class DispatcherReplaced(UsageError):
    """Another dispatcher took over this run: two would hand out the same jobs."""


@dataclass
class _Outstanding:
    slot: int
    job: Job
    entry: str


class RedisDispatcherLink:
    """The dispatcher's link: jobs onto the ``jobs`` stream, reports from ``events``.

    Starting one claims the run: jobs left by an earlier dispatcher are
    dropped (this one re-derives everything from the checkpoints and the
    registry, and a stale copy running beside a new one would be two jobs of
    one region in flight).
    """

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        slots: int,
        *,
        audit_interval: float = 1.0,
    ) -> None:
        if slots < 1:
            raise ValueError("slots must be >= 1")
        self.client = client
        self.keys = keys
        self.epoch = uuid.uuid4().hex[:12]
        self.audit_interval = audit_interval
        self._slots = tuple(range(1, slots + 1))
        self._queue: list[WorkerMessage] = [JobRequest(slot) for slot in self._slots]
        self._outstanding: dict[str, _Outstanding] = {}
        self._count = 0
        self._next_audit = 0.0
        self.duplicates = 0
        self._claim()

    def _claim(self) -> None:
        previous = self.client.get(self.keys.dispatcher)
        if previous is not None:
            log.info("taking over run %s from dispatcher %s", self.keys.run, _text(previous))
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(self.keys.jobs, self.keys.attempts, self.keys.finished)
        pipe.set(self.keys.dispatcher, self.epoch)
        pipe.xgroup_create(self.keys.jobs, GROUP, id="0", mkstream=True)
        pipe.xrevrange(self.keys.events, count=1)
        last = pipe.execute()[-1]
        self._cursor = _text(last[0][0]) if last else "0-0"
        log.info(
            "dispatcher %s owns run %s (%d job slots)", self.epoch, self.keys.run, len(self._slots)
        )

    @property
    def workers(self) -> Sequence[int]:
        return self._slots

    @property
    def in_flight(self) -> int:
        return len(self._outstanding)

    def receive(self, timeout: float) -> list[WorkerMessage]:
        if time.monotonic() >= self._next_audit:
            self._audit()
            self._next_audit = time.monotonic() + self.audit_interval
        messages, self._queue = self._queue, []
        block = None if messages else max(1, int(timeout * 1000))
        answer = self.client.xread({self.keys.events: self._cursor}, count=1000, block=block)
        for _stream, entries in answer or []:
            for entry_id, fields in entries:
                self._cursor = _text(entry_id)
                messages.extend(self._on_event(fields))
        return messages

    def _on_event(self, fields: dict[Any, Any]) -> list[WorkerMessage]:
        try:
            event = decode_event(fields)
        except ValueError as exc:
            log.warning("ignoring a malformed event in %s: %s", self.keys.events, exc)
            return []
        if event["type"] == "attempt_failed":
            log.warning(
                "region %s scan %s: attempt %s failed on %s, retrying: %s",
                event.get("region"),
                event.get("scan"),
                event.get("attempt"),
                event.get("worker"),
                event.get("error"),
            )
            return []
        if event["type"] != "report":
            return []
        outstanding = self._outstanding.pop(str(event.get("id")), None)
        if outstanding is None:
            # A second report of one dispatch (a reclaimed or re-sent job), or
            # a report for an earlier dispatcher: never a second completion.
            self.duplicates += 1
            log.debug("ignoring a report for dispatch %s (not in flight)", event.get("id"))
            return []
        report = JobReport(
            outstanding.slot,
            outstanding.job,
            ok=bool(event.get("ok")),
            rows=int(event.get("rows") or 0),
            seconds=float(event.get("seconds") or 0.0),
            compute_seconds=float(event.get("compute_seconds") or 0.0),
            error=event.get("error"),
            file=event.get("file"),
        )
        return [report, JobRequest(outstanding.slot)]

    def send_job(self, worker: int, job: Job) -> None:
        self._count += 1
        dispatch_id = f"{self.epoch}-{self._count}"
        entry = self._add(dispatch_id, job)
        self._outstanding[dispatch_id] = _Outstanding(worker, job, entry)

    def _add(self, dispatch_id: str, job: Job) -> str:
        entry = self.client.xadd(
            self.keys.jobs, encode_job(dispatch_id, job), maxlen=MAX_JOBS, approximate=True
        )
        return _text(entry)

    def _audit(self) -> None:
        """Detect a Redis that lost data, or another dispatcher, and repair what was lost."""
        owner = self.client.get(self.keys.dispatcher)
        if owner is not None and _text(owner) != self.epoch:
            raise DispatcherReplaced(
                f"run {self.keys.run}: another dispatcher ({_text(owner)}) took over; "
                "stopping this one so that no job is handed out twice"
            )
        if owner is None:
            log.warning(
                "Redis lost the run's keys (restarted without persistence?): re-creating the "
                "consumer group and re-sending %d jobs in flight",
                len(self._outstanding),
            )
            self.client.set(self.keys.dispatcher, self.epoch)
            self._cursor = "0-0"
        ensure_group(self.client, self.keys)
        if not self._outstanding:
            return
        pipe = self.client.pipeline(transaction=False)
        items = list(self._outstanding.items())
        for _dispatch_id, outstanding in items:
            pipe.xrange(self.keys.jobs, min=outstanding.entry, max=outstanding.entry, count=1)
        for (dispatch_id, outstanding), found in zip(items, pipe.execute(), strict=True):
            if not found:
                log.warning(
                    "region %d scan %d: its job entry is gone from Redis; sending it again",
                    outstanding.job.region,
                    outstanding.job.scan,
                )
                outstanding.entry = self._add(dispatch_id, outstanding.job)

    def send_stop(self, worker: int) -> None:
        """Nothing to send: a slot is not a process. Workers watch ``finished``."""

    def scan_complete(self, scan: int) -> None:
        self.client.xadd(
            self.keys.events,
            encode_event({"type": "scan_complete", "scan": scan, "t": time.time()}),
            maxlen=MAX_EVENTS,
            approximate=True,
        )

    def close(self) -> None:
        """Declare the run over (workers, listener and statistics then exit)."""
        owner = self.client.get(self.keys.dispatcher)
        if owner is not None and _text(owner) == self.epoch:
            self.client.set(self.keys.finished, self.epoch, ex=FINISHED_TTL_S)


# Worker side ---------------------------------------------------------------------

# Refresh a job's lease only while this consumer still owns it: a plain XCLAIM
# would steal back a job that was already reclaimed by another worker.
_REFRESH_LEASE = """
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if #p == 0 then return 0 end
if p[1][2] ~= ARGV[3] then return -1 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[3], 0, ARGV[2], 'JUSTID')
return 1
"""


@dataclass
class _Current:
    entry: str
    dispatch_id: str
    job: Job
    attempt: int
    data: dict[str, str]


class _Heartbeat:
    """Keeps a running job's lease fresh from a thread, so long jobs are not reclaimed."""

    def __init__(self, link: RedisWorkerLink, current: _Current) -> None:
        self.link = link
        self.current = current
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lease", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        link, current = self.link, self.current
        interval = max(0.05, link.lease / 3)
        while not self._stop.wait(interval):
            try:
                owned = link._refresh(
                    keys=[link.keys.jobs], args=[GROUP, current.entry, link.consumer]
                )
            except redis.exceptions.RedisError as exc:
                log.warning("could not refresh the lease of %s: %s", current.entry, exc)
                continue
            if owned != 1:
                log.warning(
                    "region %d scan %d: lease lost (reclaimed by another worker or Redis "
                    "restarted); finishing anyway, the store keeps one commit",
                    current.job.region,
                    current.job.scan,
                )
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


class RedisWorkerLink:
    """A worker's link: pull jobs through the consumer group, acknowledge after commit.

    stop_requested: polled between jobs (SIGTERM).
    already_committed: whether a job's scan is already committed (a redelivery
        whose first attempt committed): it is then reported done without running.
    record_abandoned: records a job given up without a report of its own (its
        workers died), so the failure is in the database like any other.
    exit_when_finished: stop once the dispatcher declared the run over.
    """

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        worker: int,
        consumer: str,
        *,
        lease: float = 60.0,
        max_attempts: int = 3,
        block: float = 1.0,
        stop_requested: Callable[[], bool] = lambda: False,
        already_committed: Callable[[Job], bool] = lambda job: False,
        record_abandoned: Callable[[Job, str], None] = lambda job, error: None,
        exit_when_finished: bool = True,
    ) -> None:
        if lease <= 0 or max_attempts < 1:
            raise ValueError("lease must be > 0 and max_attempts >= 1")
        self.client = client
        self.keys = keys
        self.worker = worker
        self.consumer = consumer
        self.lease = lease
        self.max_attempts = max_attempts
        self.block = block
        self.stop_requested = stop_requested
        self.already_committed = already_committed
        self.record_abandoned = record_abandoned
        self.exit_when_finished = exit_when_finished
        self._refresh = client.register_script(_REFRESH_LEASE)
        self._current: _Current | None = None
        self._heartbeat: _Heartbeat | None = None
        self.reclaimed = 0
        ensure_group(client, keys)

    def next_job(self) -> Job | None:
        while True:
            if self.stop_requested():
                return None
            entry = self._read()
            if entry is None:
                if self.exit_when_finished and run_finished(self.client, self.keys):
                    log.info("the dispatcher declared run %s finished", self.keys.run)
                    return None
                continue
            job = self._start(*entry)
            if job is not None:
                return job

    def _read(self) -> tuple[str, dict[Any, Any] | None] | None:
        """One entry: first a job whose lease expired, else a new one."""
        try:
            claimed = self.client.xautoclaim(
                self.keys.jobs,
                GROUP,
                self.consumer,
                min_idle_time=int(self.lease * 1000),
                start_id="0-0",
                count=1,
            )
            if claimed and claimed[1] and claimed[1][0][0] is not None:
                entry_id, fields = claimed[1][0]
                self.reclaimed += 1
                log.warning("reclaimed job entry %s (its worker's lease expired)", _text(entry_id))
                return _text(entry_id), fields
            answer = self.client.xreadgroup(
                GROUP,
                self.consumer,
                {self.keys.jobs: ">"},
                count=1,
                block=max(1, int(self.block * 1000)),
            )
        except redis.exceptions.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            log.warning("the consumer group is gone (Redis restarted?); re-creating it")
            ensure_group(self.client, self.keys)
            return None
        for _stream, entries in answer or []:
            for entry_id, fields in entries:
                return _text(entry_id), fields
        return None

    def _start(self, entry: str, fields: dict[Any, Any] | None) -> Job | None:
        try:
            dispatch_id, job = decode_job(fields)
        except ValueError as exc:
            log.error("dead-lettering malformed job entry %s: %s", entry, exc)
            pipe = self.client.pipeline(transaction=True)
            pipe.xadd(
                self.keys.dead,
                {"entry": entry, "error": f"malformed job: {exc}", "t": str(time.time())},
                maxlen=MAX_DEAD,
                approximate=True,
            )
            pipe.xack(self.keys.jobs, GROUP, entry)
            pipe.execute()
            return None
        attempt = int(self.client.hincrby(self.keys.attempts, dispatch_id, 1))
        current = _Current(entry, dispatch_id, job, attempt, encode_job(dispatch_id, job))
        if self.already_committed(job):
            log.info(
                "region %d scan %d is already committed (a redelivery): reported done",
                job.region,
                job.scan,
            )
            self._finish(current, JobReport(self.worker, job, ok=True))
            return None
        if attempt > self.max_attempts:
            error = (
                f"abandoned after {self.max_attempts} attempts that did not finish "
                "(the worker died or lost its lease)"
            )
            log.error("region %d scan %d: %s", job.region, job.scan, error)
            self.record_abandoned(job, error)
            self._give_up(current, JobReport(self.worker, job, ok=False, error=error))
            return None
        self._current = current
        self._heartbeat = _Heartbeat(self, current)
        return job

    def report(self, report: JobReport) -> None:
        current = self._current
        if current is None or report.job != current.job:
            raise RuntimeError(f"report for a job this worker is not running: {report.job}")
        if self._heartbeat is not None:
            self._heartbeat.stop()
            self._heartbeat = None
        self._current = None
        if report.ok:
            self._finish(current, report)
        elif current.attempt < self.max_attempts:
            self._retry(current, report)
        else:
            self._give_up(current, report)

    def _finish(self, current: _Current, report: JobReport) -> None:
        event = report_event(current.dispatch_id, report, self.consumer, current.attempt)
        pipe = self.client.pipeline(transaction=True)
        pipe.xadd(self.keys.events, encode_event(event), maxlen=MAX_EVENTS, approximate=True)
        pipe.xack(self.keys.jobs, GROUP, current.entry)
        pipe.hdel(self.keys.attempts, current.dispatch_id)
        self._execute(pipe)

    def _retry(self, current: _Current, report: JobReport) -> None:
        event = report_event(current.dispatch_id, report, self.consumer, current.attempt)
        event["type"] = "attempt_failed"
        pipe = self.client.pipeline(transaction=True)
        pipe.xadd(self.keys.jobs, current.data, maxlen=MAX_JOBS, approximate=True)
        pipe.xadd(self.keys.events, encode_event(event), maxlen=MAX_EVENTS, approximate=True)
        pipe.xack(self.keys.jobs, GROUP, current.entry)
        self._execute(pipe)

    def _give_up(self, current: _Current, report: JobReport) -> None:
        dead = {
            "data": current.data["data"],
            "error": report.error or "unknown error",
            "file": report.file or "",
            "attempts": str(current.attempt),
            "worker": self.consumer,
            "t": str(time.time()),
        }
        event = report_event(current.dispatch_id, report, self.consumer, current.attempt)
        pipe = self.client.pipeline(transaction=True)
        pipe.xadd(self.keys.dead, dead, maxlen=MAX_DEAD, approximate=True)
        pipe.xadd(self.keys.events, encode_event(event), maxlen=MAX_EVENTS, approximate=True)
        pipe.xack(self.keys.jobs, GROUP, current.entry)
        pipe.hdel(self.keys.attempts, current.dispatch_id)
        self._execute(pipe)

    @staticmethod
    def _execute(pipe: redis.client.Pipeline) -> None:
        # XACK of an entry that a restarted Redis no longer has answers 0, not
        # an error; the report itself still reaches the dispatcher.
        pipe.execute()

    def close(self) -> None:
        """Leave the group if nothing is pending for this consumer."""
        try:
            pending = self.client.xpending_range(
                self.keys.jobs, GROUP, min="-", max="+", count=1, consumername=self.consumer
            )
            if not pending:
                self.client.xgroup_delconsumer(self.keys.jobs, GROUP, self.consumer)
        except redis.exceptions.RedisError as exc:
            log.debug("could not leave the consumer group: %s", exc)


# Statistics side -------------------------------------------------------------------


class RedisStatsLink:
    """The statistics role's link: ``scan_complete`` events from the ``events`` stream.

    It reads the whole stream from its start: recomputing a scan's statistics
    is idempotent, and a statistics process that (re)starts late misses nothing.
    """

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        *,
        block: float = 1.0,
        stop_requested: Callable[[], bool] = lambda: False,
        exit_when_finished: bool = True,
    ) -> None:
        self.client = client
        self.keys = keys
        self.block = block
        self.stop_requested = stop_requested
        self.exit_when_finished = exit_when_finished
        self._cursor = "0-0"
        self._scans: deque[int] = deque()

    def next_scan(self) -> int | None:
        while not self._scans:
            if self.stop_requested():
                return None
            # Read the finished flag before the stream: everything published
            # before the flag was set is then in this read.
            finished = self.exit_when_finished and run_finished(self.client, self.keys)
            answer = self.client.xread(
                {self.keys.events: self._cursor},
                count=1000,
                block=None if finished else max(1, int(self.block * 1000)),
            )
            for _stream, entries in answer or []:
                for entry_id, fields in entries:
                    self._cursor = _text(entry_id)
                    self._take(fields)
            if finished and not self._scans and not answer:
                return None
        return self._scans.popleft()

    def _take(self, fields: dict[Any, Any]) -> None:
        try:
            event = decode_event(fields)
        except ValueError as exc:
            log.warning("ignoring a malformed event: %s", exc)
            return
        if event["type"] == "scan_complete":
            try:
                self._scans.append(_int(event.get("scan"), "scan"))
            except ValueError as exc:
                log.warning("ignoring a malformed scan_complete event: %s", exc)
