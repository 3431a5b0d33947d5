"""The worker's Redis link: jobs pulled through the consumer group, acknowledged after commit.

A job's lease is kept fresh by a thread while it runs; a worker that dies
leaves its entry pending, and another worker reclaims it once the lease has
expired (XAUTOCLAIM). A failed job goes back onto the stream until its last
attempt, then to the dead-letter stream. See transport/redis.py for the whole
protocol and redis_streams.py for the entries.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from mpitrack.redis_keys import GROUP, RedisKeys
from mpitrack.schedule import Job
from mpitrack.transport.base import JobReport
from mpitrack.transport.redis_streams import (
    MAX_DEAD,
    MAX_EVENTS,
    MAX_JOBS,
    as_text,
    decode_job,
    encode_event,
    encode_job,
    ensure_group,
    finished_epoch,
    report_event,
    run_finished,
)

log = logging.getLogger(__name__)

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
        keys: RedisKeys,
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
        self._ended_before = finished_epoch(client, keys)
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
                if self.exit_when_finished and run_finished(
                    self.client, self.keys, self._ended_before
                ):
                    log.info("the dispatcher declared run %s finished", self.keys.run)
                    return None
                continue
            job = self._start(*entry)
            if job is not None:
                return job

    def volume(self) -> None:
        """Process mode carries no volumes: the worker reads frame files."""
        return None

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
                log.warning(
                    "reclaimed job entry %s (its worker's lease expired)", as_text(entry_id)
                )
                return as_text(entry_id), fields
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
                return as_text(entry_id), fields
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
