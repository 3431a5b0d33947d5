"""Redis links: the MPI roles as separate processes, coordinated through streams.

The role loops (roles/dispatcher.py, roles/worker.py, roles/stats.py) run
unchanged over these links; only the carrying differs from transport/mpi.py.

Three modules: this one holds the dispatcher's and the statistics role's
links, redis_worker.py the worker's, and redis_streams.py the streams' keys
and entries that both sides read and write.

Why virtual worker slots: the dispatcher hands jobs to idle workers
(`JobRequest`), but here workers pull from a stream and the dispatcher does
not know them. So the dispatcher link presents ``slots`` virtual workers, one
per job allowed to be outstanding, and a report frees its slot. Affinity then
has no meaning; a worker whose cached tracker is not at the job's
``after_scan`` loads the checkpoint.

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

import logging
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import redis

from mpitrack.errors import UsageError
from mpitrack.redis_keys import GROUP, RedisKeys
from mpitrack.schedule import Job
from mpitrack.transport.base import JobReport, JobRequest, WorkerMessage
from mpitrack.transport.redis_streams import (
    FINISHED_TTL_S,
    MAX_EVENTS,
    MAX_JOBS,
    as_int,
    as_text,
    decode_event,
    encode_event,
    encode_job,
    ensure_group,
    entry_order,
    finished_epoch,
    run_finished,
)

log = logging.getLogger(__name__)


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
        keys: RedisKeys,
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
        # Scans announced complete, in order: the statistics role learns of a scan
        # only from its event, so a Redis that lost events is told again (_audit).
        self._announced: list[int] = []
        self._next_audit = 0.0
        self.duplicates = 0
        self._claim()

    def _claim(self) -> None:
        previous = self.client.get(self.keys.dispatcher)
        if previous is not None:
            log.info("taking over run %s from dispatcher %s", self.keys.run, as_text(previous))
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(self.keys.jobs, self.keys.attempts, self.keys.finished, self.keys.announced)
        pipe.set(self.keys.dispatcher, self.epoch)
        pipe.xgroup_create(self.keys.jobs, GROUP, id="0", mkstream=True)
        pipe.xrevrange(self.keys.events, count=1)
        last = pipe.execute()[-1]
        self._cursor = as_text(last[0][0]) if last else "0-0"
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
                self._cursor = as_text(entry_id)
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
            rejected={str(k): int(v) for k, v in (event.get("rejected") or {}).items()},
            file=event.get("file"),
        )
        return [report, JobRequest(outstanding.slot)]

    def send_job(self, worker: int, job: Job, volume: np.ndarray | None = None) -> None:
        if volume is not None:
            raise ValueError(
                "process mode carries no volumes: its workers read frame files "
                "(run `mpitrack detector cut --follow` for raw detector frames)"
            )
        self._count += 1
        dispatch_id = f"{self.epoch}-{self._count}"
        entry = self._add(dispatch_id, job)
        self._outstanding[dispatch_id] = _Outstanding(worker, job, entry)

    def _add(self, dispatch_id: str, job: Job) -> str:
        entry = self.client.xadd(
            self.keys.jobs, encode_job(dispatch_id, job), maxlen=MAX_JOBS, approximate=True
        )
        return as_text(entry)

    def _audit(self) -> None:
        """Detect a Redis that lost data, or another dispatcher, and repair what was lost."""
        owner = self.client.get(self.keys.dispatcher)
        if owner is not None and as_text(owner) != self.epoch:
            raise DispatcherReplaced(
                f"run {self.keys.run}: another dispatcher ({as_text(owner)}) took over; "
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
        pipe = self.client.pipeline(transaction=False)
        items = list(self._outstanding.items())
        for _dispatch_id, outstanding in items:
            pipe.xrange(self.keys.jobs, min=outstanding.entry, max=outstanding.entry, count=1)
        pipe.get(self.keys.announced)
        found = pipe.execute()
        for (dispatch_id, outstanding), entry in zip(items, found[: len(items)], strict=True):
            if not entry:
                log.warning(
                    "region %d scan %d: its job entry is gone from Redis; sending it again",
                    outstanding.job.region,
                    outstanding.job.scan,
                )
                outstanding.entry = self._add(dispatch_id, outstanding.job)
        self._announce_lost(found[-1])

    def _announce_lost(self, counted: bytes | None) -> None:
        """Publish again the completed scans whose events Redis lost: all but the
        first ``counted`` (the ``announced`` counter Redis holds). A statistics role
        that had not read them would never compute them. Counter and events are
        written in one transaction, so a partial restore keeps exactly the first
        ``counted``."""
        kept = int(counted or 0)
        if kept >= len(self._announced):
            return
        log.warning(
            "Redis lost %d scan_complete events: announcing those scans again",
            len(self._announced) - kept,
        )
        for scan in self._announced[kept:]:
            self._publish_scan(scan)

    def send_stop(self, worker: int) -> None:
        """Nothing to send: a slot is not a process. Workers watch ``finished``."""

    def scan_complete(self, scan: int) -> None:
        self._announced.append(scan)
        self._publish_scan(scan)

    def _publish_scan(self, scan: int) -> None:
        pipe = self.client.pipeline(transaction=True)
        pipe.xadd(
            self.keys.events,
            encode_event({"type": "scan_complete", "scan": scan, "t": time.time()}),
            maxlen=MAX_EVENTS,
            approximate=True,
        )
        pipe.incr(self.keys.announced)
        pipe.execute()

    def close(self) -> None:
        """Declare the run over (workers, listener and statistics then exit)."""
        owner = self.client.get(self.keys.dispatcher)
        if owner is None:
            # Redis lost the key since the last audit (a restart without persistence):
            # the run is still this dispatcher's, and the others wait for its word.
            self.client.set(self.keys.dispatcher, self.epoch, nx=True)
            owner = self.client.get(self.keys.dispatcher)
        if owner is not None and as_text(owner) == self.epoch:
            # Scans announced since the last audit may have been lost with Redis's data.
            self._announce_lost(self.client.get(self.keys.announced))
            self.client.set(self.keys.finished, self.epoch, ex=FINISHED_TTL_S)


# Statistics side -------------------------------------------------------------------


class RedisStatsLink:
    """The statistics role's link: ``scan_complete`` events from the ``events`` stream.

    It reads the whole stream from its start: recomputing a scan's statistics
    is idempotent, and a statistics process that (re)starts late misses nothing.
    """

    def __init__(
        self,
        client: redis.Redis,
        keys: RedisKeys,
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
        self._ended_before = finished_epoch(client, keys)
        self._cursor = "0-0"
        self._scans: deque[int] = deque()

    def next_scan(self) -> int | None:
        while not self._scans:
            if self.stop_requested():
                return None
            # Read the finished flag before the stream: everything published
            # before the flag was set is then in this read.
            finished = self.exit_when_finished and run_finished(
                self.client, self.keys, self._ended_before
            )
            answer = self.client.xread(
                {self.keys.events: self._cursor},
                count=1000,
                block=None if finished else max(1, int(self.block * 1000)),
            )
            for _stream, entries in answer or []:
                for entry_id, fields in entries:
                    self._cursor = as_text(entry_id)
                    self._take(fields)
            if not answer and self._stream_rebuilt():
                continue
            if finished and not self._scans and not answer:
                return None
        return self._scans.popleft()

    def _stream_rebuilt(self) -> bool:
        """Whether ``events`` now ends before what this link has read: Redis lost it
        and it started again (entries re-announced in the same millisecond would
        otherwise sort before the cursor). Read it again from the start then."""
        if self._cursor == "0-0":
            return False
        newest = self.client.xrevrange(self.keys.events, count=1)
        if newest and entry_order(newest[0][0]) >= entry_order(self._cursor):
            return False
        log.warning("the events stream was lost and started again: reading it from the start")
        self._cursor = "0-0"
        return True

    def _take(self, fields: dict[Any, Any]) -> None:
        try:
            event = decode_event(fields)
        except ValueError as exc:
            log.warning("ignoring a malformed event: %s", exc)
            return
        if event["type"] == "scan_complete":
            try:
                self._scans.append(as_int(event.get("scan"), "scan"))
            except ValueError as exc:
                log.warning("ignoring a malformed scan_complete event: %s", exc)
