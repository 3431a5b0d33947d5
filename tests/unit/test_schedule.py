"""Scheduling rules, with constructed sequences of events."""

from __future__ import annotations

import pytest

from mpitrack.schedule import Job, Scheduler


def ready_all(s: Scheduler, regions: list[int], scans: range) -> None:
    for region in regions:
        for scan in scans:
            s.frames_complete(region, scan)


def test_job_waits_for_frames_and_for_the_previous_scan() -> None:
    s = Scheduler([1], first_scan=0, last_scan=2)
    s.worker_idle(10)
    s.worker_idle(11)
    assert s.assign() == []
    s.frames_complete(1, 1)  # scan 1 is complete, but scan 0 is not done
    assert s.assign() == []
    s.frames_complete(1, 0)
    assert s.assign() == [(10, Job(1, 0, None))]
    # Scan 1's frames are complete, yet the region has a job in flight: never two.
    assert s.assign() == []
    s.job_done(Job(1, 0, None), 10)
    s.worker_idle(10)
    assert s.assign() == [(10, Job(1, 1, 0))]


def test_region_sticks_to_its_worker_unless_that_worker_is_busy() -> None:
    s = Scheduler([1, 2], first_scan=0, last_scan=5)
    ready_all(s, [1, 2], range(6))
    s.worker_idle(10)
    s.worker_idle(11)
    first = dict((job.region, worker) for worker, job in s.assign())
    assert first == {1: 10, 2: 11}
    # Both report back in the opposite order; each gets its own region again.
    s.job_done(Job(2, 0, None), 11)
    s.worker_idle(11)
    s.job_done(Job(1, 0, None), 10)
    s.worker_idle(10)
    again = dict((job.region, worker) for worker, job in s.assign())
    assert again == {1: 10, 2: 11}
    # Region 1 is ready again but its owner 10 has not asked for work; the idle
    # worker 12 takes it (and will load the checkpoint).
    s.job_done(Job(1, 1, 0), 10)
    s.worker_idle(12)
    assert s.assign() == [(12, Job(1, 2, 1))]


def test_older_scans_go_first() -> None:
    s = Scheduler([1, 2], first_scan=0, last_scan=9, committed={1: 4})
    ready_all(s, [1, 2], range(10))
    s.worker_idle(10)
    assert s.assign() == [(10, Job(2, 0, None))]


def test_resume_starts_after_the_committed_scan_and_counts_remaining_jobs() -> None:
    s = Scheduler([1, 2], first_scan=0, last_scan=9, committed={1: 9, 2: 3})
    assert s.total_jobs == 6
    ready_all(s, [1, 2], range(10))
    s.worker_idle(10)
    assert s.assign() == [(10, Job(2, 4, 3))]


def test_skip_policy_moves_on_and_the_next_job_knows_the_last_committed_scan() -> None:
    s = Scheduler([1], first_scan=0, last_scan=2, on_failure="skip")
    ready_all(s, [1], range(3))
    s.worker_idle(10)
    s.assign()
    s.job_done(Job(1, 0, None), 10)
    s.worker_idle(10)
    [(_, job)] = s.assign()
    s.job_failed(job, 10)
    s.worker_idle(10)
    assert s.assign() == [(10, Job(1, 2, 0))]


def test_stop_region_policy_stops_only_that_region() -> None:
    s = Scheduler([1, 2], first_scan=0, last_scan=1, on_failure="stop_region")
    ready_all(s, [1, 2], range(2))
    s.worker_idle(10)
    s.worker_idle(11)
    jobs = dict((job.region, (w, job)) for w, job in s.assign())
    s.job_failed(jobs[1][1], jobs[1][0])
    s.job_done(jobs[2][1], jobs[2][0])
    s.worker_idle(10)
    s.worker_idle(11)
    assert s.assign() == [(jobs[2][0], Job(2, 1, 0))]
    assert s.stopped_regions == [1]
    assert not s.finished


def test_abort_policy_ends_the_run_once_nothing_is_in_flight() -> None:
    s = Scheduler([1, 2], first_scan=0, last_scan=3, on_failure="abort")
    ready_all(s, [1, 2], range(4))
    s.worker_idle(10)
    s.worker_idle(11)
    (w1, j1), (w2, j2) = s.assign()
    s.job_failed(j1, w1)
    assert s.aborted and not s.finished  # the other job is still in flight
    s.job_done(j2, w2)
    s.worker_idle(w1)
    assert s.assign() == []
    assert s.finished


def test_scans_complete_in_order_when_every_live_region_has_passed_them() -> None:
    s = Scheduler([1, 2], first_scan=0, last_scan=1)
    ready_all(s, [1, 2], range(2))
    s.worker_idle(10)
    s.worker_idle(11)
    (wa, ja), (wb, jb) = s.assign()
    s.job_done(ja, wa)
    assert s.scans_completed() == []
    s.job_done(jb, wb)
    assert s.scans_completed() == [0]
    assert s.scans_completed() == []


def test_run_finishes_after_the_last_scan_and_drain_stops_open_ended_runs() -> None:
    s = Scheduler([1], first_scan=0, last_scan=0)
    s.frames_complete(1, 0)
    s.worker_idle(10)
    [(w, job)] = s.assign()
    assert not s.finished
    s.job_done(job, w)
    assert s.finished
    follow = Scheduler([1], first_scan=0, last_scan=None)
    assert follow.total_jobs is None
    follow.frames_complete(1, 0)
    follow.worker_idle(10)
    [(w, job)] = follow.assign()
    follow.drain()
    assert not follow.finished
    follow.job_done(job, w)
    assert follow.finished


def test_waiting_for_lists_each_idle_regions_next_scan() -> None:
    s = Scheduler([1, 2], first_scan=3, last_scan=5)
    s.frames_complete(2, 3)
    assert s.waiting_for() == [(1, 3)]


def test_reports_for_jobs_not_in_flight_are_refused() -> None:
    s = Scheduler([1], first_scan=0, last_scan=3)
    with pytest.raises(ValueError, match="not in flight"):
        s.job_done(Job(1, 0, None), 10)


def test_unfinished_names_regions_short_of_the_last_scan() -> None:
    s = Scheduler([1, 2], first_scan=0, last_scan=1, committed={1: 1})
    assert s.unfinished() == [(2, 0)]
    s.drain()
    assert s.finished and s.unfinished() == [(2, 0)]
    assert Scheduler([1], first_scan=0, last_scan=None).unfinished() == []


def test_needs_says_which_frames_are_still_worth_reading() -> None:
    """What rank 0 cuts into memory (detector frames): a committed, skipped, stopped or
    out-of-range (region, scan) is not needed, nor anything after a stop request."""
    s = Scheduler([1, 2], first_scan=0, last_scan=3, committed={2: 1}, on_failure="stop_region")
    assert s.needs(1, 0) and s.needs(2, 2) and s.needs(1, 3)
    assert not s.needs(2, 1), "committed before this run"
    assert not s.needs(1, 4) and not s.needs(7, 0)
    ready_all(s, [1], range(1))
    s.worker_idle(10)
    (worker, job), *_ = s.assign()
    assert s.needs(1, 0), "in flight: its volume is on its way, later scans still needed"
    s.job_done(job, worker)
    assert not s.needs(1, 0) and s.needs(1, 1)
    s.frames_complete(2, 2)
    s.worker_idle(10)
    (worker, job), *_ = s.assign()
    s.job_failed(job, worker)
    assert not s.needs(2, 3), "region 2 stopped"
    s.drain()
    assert not s.needs(1, 1)
