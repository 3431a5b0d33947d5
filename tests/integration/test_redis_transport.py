"""The Redis links against a real Redis: delivery, acknowledgement, reclaim, retries,
dead letters, deduplication of reports, and recovery from a Redis that lost its data."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import redis

from mpitrack.redis_client import connect
from mpitrack.redis_keys import GROUP, RedisKeys
from mpitrack.schedule import Job
from mpitrack.transport.base import JobReport, JobRequest
from mpitrack.transport.redis import DispatcherReplaced, RedisDispatcherLink, RedisStatsLink
from mpitrack.transport.redis_streams import decode_job, encode_job
from mpitrack.transport.redis_worker import RedisWorkerLink

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

KEYS = RedisKeys("transport")
# A lease for the tests where a lease must hold: its heartbeat (every third of it)
# would have to be late by two thirds of a second before anything could reclaim it.
HELD_LEASE = 1.0


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    c = connect(redis_url, retries=0, reconnect_seconds=5)
    yield c
    c.close()


def worker_link(client: redis.Redis, name: str, **kwargs) -> RedisWorkerLink:
    kwargs.setdefault("block", 0.05)
    return RedisWorkerLink(client, KEYS, worker=hash(name) % 1000, consumer=name, **kwargs)


def receive_until(
    link: RedisDispatcherLink, want: Callable[[list], bool], timeout: float = 10.0
) -> list:
    got: list = []
    deadline = time.monotonic() + timeout
    while not want(got):
        assert time.monotonic() < deadline, f"gave up waiting; received {got}"
        got.extend(link.receive(0.05))
    return got


def reports(messages: list) -> list[JobReport]:
    return [m for m in messages if isinstance(m, JobReport)]


def start_dispatcher(client: redis.Redis, slots: int = 2) -> RedisDispatcherLink:
    link = RedisDispatcherLink(client, KEYS, slots, audit_interval=0.05)
    first = link.receive(0.01)
    assert first == [JobRequest(s) for s in range(1, slots + 1)]
    return link


def test_a_job_goes_to_a_worker_and_its_report_frees_the_slot(client: redis.Redis) -> None:
    dispatcher = start_dispatcher(client)
    job = Job(3, 7, 6)
    dispatcher.send_job(2, job)
    worker = worker_link(client, "w1")
    assert worker.next_job() == job
    worker.report(JobReport(worker.worker, job, ok=True, rows=5, seconds=0.1))
    got = receive_until(dispatcher, lambda m: len(m) >= 2)
    assert got == [JobReport(2, job, ok=True, rows=5, seconds=0.1), JobRequest(2)]
    assert client.xpending(KEYS.jobs, GROUP)["pending"] == 0


def test_messages_are_json_and_malformed_jobs_go_to_the_dead_letter_stream(
    client: redis.Redis,
) -> None:
    fields = encode_job("e-1", Job(1, 2, None))
    assert json.loads(fields["data"]) == {"id": "e-1", "region": 1, "scan": 2, "after_scan": None}
    assert decode_job(fields) == ("e-1", Job(1, 2, None))
    with pytest.raises(ValueError):
        decode_job({"data": json.dumps({"id": "x", "region": "1", "scan": 2})})
    start_dispatcher(client)
    client.xadd(KEYS.jobs, {"data": b"\x80\x04\x95 not json"})
    deadline = time.monotonic() + 30
    worker = worker_link(
        client,
        "w1",
        exit_when_finished=False,
        stop_requested=lambda: client.xlen(KEYS.dead) > 0 or time.monotonic() > deadline,
    )
    assert worker.next_job() is None
    dead = client.xrange(KEYS.dead)
    assert len(dead) == 1 and b"malformed job" in dead[0][1][b"error"]
    assert client.xpending(KEYS.jobs, GROUP)["pending"] == 0


def test_a_dead_workers_job_is_reclaimed_and_reported_once(client: redis.Redis) -> None:
    dispatcher = start_dispatcher(client)
    job = Job(0, 0, None)
    dispatcher.send_job(1, job)
    dead_worker = worker_link(client, "dies", lease=0.2)
    assert dead_worker.next_job() == job
    dead_worker._heartbeat.stop()  # the process is gone: nobody refreshes the lease
    survivor = worker_link(client, "survives", lease=0.2)
    assert survivor.next_job() == job
    assert survivor.reclaimed == 1
    survivor.report(JobReport(survivor.worker, job, ok=True, rows=1))
    # The first worker was only stalled: it finishes too and reports the same dispatch.
    dead_worker.report(JobReport(dead_worker.worker, job, ok=True, rows=0))
    # Both reports are in the events stream: receive until the second was seen.
    got = receive_until(dispatcher, lambda m: len(m) >= 2 and dispatcher.duplicates >= 1)
    assert reports(got) == [JobReport(1, job, ok=True, rows=1)]
    assert dispatcher.duplicates == 1
    assert client.xpending(KEYS.jobs, GROUP)["pending"] == 0


def test_a_running_job_keeps_its_lease(client: redis.Redis) -> None:
    dispatcher = start_dispatcher(client)
    job = Job(0, 0, None)
    dispatcher.send_job(1, job)
    busy = worker_link(client, "busy", lease=HELD_LEASE)
    assert busy.next_job() == job
    started = time.monotonic()
    refreshes, last_idle = 0, 0

    def outlived_two_leases_with_refreshes() -> bool:
        nonlocal refreshes, last_idle
        (pending,) = client.xpending_range(KEYS.jobs, GROUP, "-", "+", 10)
        idle = pending["time_since_delivered"]
        refreshes += idle < last_idle
        last_idle = idle
        return refreshes >= 3 and time.monotonic() - started > 2 * HELD_LEASE

    # The other worker polls for expired leases all along; it must never get the job.
    other = worker_link(
        client,
        "other",
        lease=HELD_LEASE,
        exit_when_finished=False,
        stop_requested=outlived_two_leases_with_refreshes,
    )
    assert other.next_job() is None
    assert other.reclaimed == 0
    busy.report(JobReport(busy.worker, job, ok=True))
    assert reports(receive_until(dispatcher, lambda m: len(m) >= 2))[0].ok


def test_a_failing_job_is_retried_then_dead_lettered_with_its_error(client: redis.Redis) -> None:
    dispatcher = start_dispatcher(client)
    job = Job(4, 2, 1)
    dispatcher.send_job(1, job)
    worker = worker_link(client, "w1", max_attempts=3)
    for attempt in range(3):
        assert worker.next_job() == job, f"attempt {attempt + 1}"
        worker.report(
            JobReport(worker.worker, job, ok=False, error=f"bad frame {attempt}", file="/f.npy")
        )
    got = receive_until(dispatcher, lambda m: len(m) >= 2)
    assert reports(got) == [JobReport(1, job, ok=False, error="bad frame 2", file="/f.npy")]
    dead = client.xrange(KEYS.dead)
    assert len(dead) == 1
    fields = dead[0][1]
    assert fields[b"error"] == b"bad frame 2" and fields[b"attempts"] == b"3"
    assert decode_job(fields)[1] == job
    assert client.xpending(KEYS.jobs, GROUP)["pending"] == 0
    assert not client.hexists(KEYS.attempts, decode_job(fields)[0])


def test_a_job_whose_workers_keep_dying_is_abandoned(client: redis.Redis) -> None:
    dispatcher = start_dispatcher(client)
    job = Job(1, 0, None)
    dispatcher.send_job(1, job)
    abandoned: list[tuple[Job, str]] = []
    for name in ("a", "b"):
        victim = worker_link(client, name, lease=0.1, max_attempts=2)
        assert victim.next_job() == job
        victim._heartbeat.stop()
    last = worker_link(
        client,
        "c",
        lease=0.1,
        max_attempts=2,
        record_abandoned=lambda j, e: abandoned.append((j, e)),
        stop_requested=lambda: client.xlen(KEYS.dead) > 0,
    )
    assert last.next_job() is None
    got = receive_until(dispatcher, lambda m: len(m) >= 2, timeout=10)
    # The third claim found the job over its attempts: never run, reported failed.
    assert last._current is None
    (report,) = reports(got)
    assert not report.ok and "abandoned after 2 attempts" in (report.error or "")
    assert abandoned and abandoned[0][0] == job
    assert len(client.xrange(KEYS.dead)) == 1


def test_a_redelivered_job_that_already_committed_is_reported_done_without_running(
    client: redis.Redis,
) -> None:
    dispatcher = start_dispatcher(client)
    job = Job(2, 5, 4)
    dispatcher.send_job(1, job)
    worker = worker_link(
        client,
        "w",
        already_committed=lambda j: j == job,
        stop_requested=lambda: client.xlen(KEYS.events) > 0,
    )
    assert worker.next_job() is None
    got = receive_until(dispatcher, lambda m: len(m) >= 2)
    assert reports(got) == [JobReport(1, job, ok=True, rows=0)]


def test_after_redis_loses_its_data_jobs_in_flight_are_sent_again(client: redis.Redis) -> None:
    dispatcher = start_dispatcher(client)
    jobs = [Job(0, 0, None), Job(1, 0, None)]
    for slot, job in enumerate(jobs, start=1):
        dispatcher.send_job(slot, job)
    worker = worker_link(client, "w")
    first = worker.next_job()
    assert first == jobs[0]
    client.flushdb()  # what a restart without persistence leaves
    # The worker finishes its job; the report lands in the new events stream.
    worker.report(JobReport(worker.worker, first, ok=True, rows=3))
    got = receive_until(dispatcher, lambda m: len(reports(m)) >= 1)
    # The dispatcher's audit notices the loss (its key is gone) and re-claims the run.
    got += receive_until(dispatcher, lambda m: client.get(KEYS.dispatcher) is not None)
    # The lost queue was rebuilt: the second job (and a harmless copy of the
    # first, which a real worker reports done without running) reach a worker.
    seen = []
    while jobs[1] not in seen:
        job = worker.next_job()
        assert job is not None
        seen.append(job)
        worker.report(JobReport(worker.worker, job, ok=True))
    got += receive_until(dispatcher, lambda m: len(reports(m)) >= 1)
    assert sorted(r.job.region for r in reports(got)) == [0, 1]
    assert dispatcher.in_flight == 0
    assert client.get(KEYS.dispatcher) == dispatcher.epoch.encode()


def test_a_second_dispatcher_takes_over_and_the_first_stops(client: redis.Redis) -> None:
    first = start_dispatcher(client)
    first.send_job(1, Job(0, 0, None))
    second = start_dispatcher(client)
    assert client.xlen(KEYS.jobs) == 0, "the new dispatcher must drop the old one's jobs"
    with pytest.raises(DispatcherReplaced):
        receive_until(first, lambda m: False, timeout=5)
    second.close()
    assert client.get(KEYS.finished) == second.epoch.encode()


def test_stats_link_yields_completed_scans_then_stops_when_the_run_is_finished(
    client: redis.Redis,
) -> None:
    dispatcher = start_dispatcher(client)
    stats = RedisStatsLink(client, KEYS, block=0.05)
    dispatcher.scan_complete(0)
    dispatcher.scan_complete(1)
    assert stats.next_scan() == 0
    assert stats.next_scan() == 1
    dispatcher.scan_complete(2)
    dispatcher.close()
    assert stats.next_scan() == 2
    assert stats.next_scan() is None
    early = worker_link(client, "early")
    dispatcher = start_dispatcher(client)
    dispatcher.close()
    assert early.next_job() is None, "a worker exits once the run is finished"


def scan_0_announced_and_read(client: redis.Redis) -> tuple[RedisDispatcherLink, RedisStatsLink]:
    """A dispatcher link and a statistics link that has read its announcement of scan 0."""
    dispatcher = start_dispatcher(client)
    stats = RedisStatsLink(client, KEYS, block=0.05)
    dispatcher.scan_complete(0)
    assert stats.next_scan() == 0
    return dispatcher, stats


def test_scans_announced_before_redis_lost_its_data_are_announced_again(
    client: redis.Redis,
) -> None:
    dispatcher, stats = scan_0_announced_and_read(client)
    dispatcher.scan_complete(1)  # not read before the loss
    client.flushdb()  # a restart without persistence
    receive_until(dispatcher, lambda m: client.get(KEYS.dispatcher) is not None)
    assert stats.next_scan() == 0, "the repeat of a scan read before the loss"
    assert stats.next_scan() == 1, "the scan whose event was lost"
    # A partial restore (persistence that lags) keeps the counter and the events
    # of the same moment: only the scans after it are announced again, by the
    # audit or, as here, when the run is declared over before the next audit.
    dispatcher.scan_complete(2)
    dispatcher.scan_complete(3)
    last = client.xrevrange(KEYS.events, count=1)[0][0]
    client.xdel(KEYS.events, last)
    client.decr(KEYS.announced)
    dispatcher.close()
    assert [stats.next_scan() for _ in range(3)] == [2, 3, None]


def test_stats_link_rereads_an_events_stream_that_started_again_behind_it(
    client: redis.Redis,
) -> None:
    _, stats = scan_0_announced_and_read(client)
    client.delete(KEYS.events)
    # A new stream whose ids sort before what the link has read (a re-announcement
    # in the millisecond of the last entry read has such an id).
    client.xadd(KEYS.events, {"data": '{"type": "scan_complete", "scan": 1}'}, id="1-1")
    assert stats.next_scan() == 1


def test_a_run_ends_for_everyone_even_if_redis_lost_its_keys_just_before(
    client: redis.Redis,
) -> None:
    worker = worker_link(client, "w")
    dispatcher = start_dispatcher(client)
    client.flushdb()  # a restart without persistence, after the dispatcher's last audit
    dispatcher.close()
    assert client.get(KEYS.finished) == dispatcher.epoch.encode()
    assert worker.next_job() is None


def test_processes_started_after_a_run_ended_wait_for_the_next_dispatcher(
    client: redis.Redis,
) -> None:
    """Roles started again right after a run stopped (to resume it) must not take the
    old run's end for theirs, or the new dispatcher would be left without workers."""
    start_dispatcher(client).close()  # a run that ended (finished is set)
    worker = worker_link(client, "resumed")
    stats = RedisStatsLink(client, KEYS, block=0.05)
    got: list = []
    waiting = threading.Thread(target=lambda: got.append(worker.next_job()), daemon=True)
    waiting.start()
    waiting.join(0.5)
    assert waiting.is_alive(), f"the worker took the old run's end for its own: {got}"
    dispatcher = start_dispatcher(client)
    dispatcher.scan_complete(0)
    dispatcher.close()
    waiting.join(10)
    assert got == [None]
    assert stats.next_scan() == 0
    assert stats.next_scan() is None
