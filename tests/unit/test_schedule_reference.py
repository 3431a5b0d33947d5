"""The scheduler against its first, plainly written version on random event sequences.

The scheduler answers every event in O(log regions) with counters and a heap
of ready regions; the reference below (the version before that change) answers
by passing over every region. Both get the same random frames, idle workers,
completions and failures, under every failure policy, and must give the same
jobs to the same workers in the same order and the same answers to every
question after every event.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import pytest

from mpitrack.schedule import FailurePolicy, Job, Scheduler

pytestmark = pytest.mark.timeout(60)


@dataclass
class _RefRegion:
    next_scan: int
    last_committed: int | None
    owner: int | None = None
    in_flight: bool = False
    stopped: bool = False


@dataclass
class ReferenceScheduler:
    """The scheduler as first written: every question a pass over the regions.

    regions: region ids; first_scan/last_scan: inclusive range (last None: open-ended);
    committed: last committed scan per region (from the checkpoints, on resume).
    """

    regions: Iterable[int]
    first_scan: int
    last_scan: int | None
    committed: Mapping[int, int] = field(default_factory=dict)
    on_failure: FailurePolicy = "skip"

    def __post_init__(self) -> None:
        self._regions: dict[int, _RefRegion] = {}
        for region in sorted(set(self.regions)):
            last = self.committed.get(region)
            start = self.first_scan if last is None else max(last + 1, self.first_scan)
            self._regions[region] = _RefRegion(next_scan=start, last_committed=last)
        if not self._regions:
            raise ValueError("a run needs at least one region")
        self._complete: set[tuple[int, int]] = set()
        self._idle: list[int] = []
        self._busy: set[int] = set()
        self._aborted = False
        self._draining = False
        # Scans complete before this run are reported too (first of all), so that
        # statistics an earlier run could not store are filled in.
        self._scan_reported = self.first_scan - 1
        self._total_jobs = (
            None
            if self.last_scan is None
            else sum(max(0, self.last_scan + 1 - s.next_scan) for s in self._regions.values())
        )

    # What the dispatcher learns -------------------------------------------------

    def frames_complete(self, region: int, scan: int) -> None:
        """All frames of (region, scan) are registered."""
        state = self._regions.get(region)
        if state is not None and scan >= state.next_scan:
            self._complete.add((region, scan))

    def worker_idle(self, worker: int) -> None:
        """A worker asks for work."""
        self._busy.discard(worker)
        if worker not in self._idle:
            self._idle.append(worker)

    def job_done(self, job: Job, worker: int) -> None:
        """The job's results and checkpoint are committed."""
        state = self._finish(job, worker)
        state.last_committed = job.scan

    def job_failed(self, job: Job, worker: int) -> None:
        """The job failed; the failure policy decides what the region does next."""
        state = self._finish(job, worker)
        if self.on_failure == "stop_region":
            state.stopped = True
        elif self.on_failure == "abort":
            self._aborted = True

    def drain(self) -> None:
        """Stop issuing jobs; the run ends once the jobs in flight are finished."""
        self._draining = True

    # What the dispatcher does ------------------------------------------------------

    def assign(self) -> list[tuple[int, Job]]:
        """Match ready jobs to idle workers; the dispatcher sends each pair."""
        if self._aborted or self._draining or not self._idle:
            return []
        ready = [
            (state.next_scan, region)
            for region, state in self._regions.items()
            if self._is_ready(region, state)
        ]
        heapq.heapify(ready)
        assigned: list[tuple[int, Job]] = []
        while ready and self._idle:
            _, region = heapq.heappop(ready)
            state = self._regions[region]
            worker = state.owner if state.owner in self._idle else self._pick_idle()
            self._idle.remove(worker)
            self._busy.add(worker)
            state.in_flight = True
            state.owner = worker
            job = Job(region, state.next_scan, state.last_committed)
            self._complete.discard((region, state.next_scan))
            assigned.append((worker, job))
        return assigned

    def scans_completed(self) -> list[int]:
        """Scans newly finished for every region since the last call, in order; the
        first call includes the scans finished before this run."""
        live = [s.next_scan for s in self._regions.values() if not s.stopped]
        done_through = (min(live) if live else self._max_scan_seen()) - 1
        if self.last_scan is not None:
            done_through = min(done_through, self.last_scan)
        newly = list(range(self._scan_reported + 1, done_through + 1))
        self._scan_reported = max(self._scan_reported, done_through)
        return newly

    def wants(self, region: int, scan: int) -> bool:
        """Whether news of (region, scan)'s frames could still matter to this run."""
        state = self._regions.get(region)
        return (
            state is not None
            and not state.stopped
            and scan >= state.next_scan
            and self._within_range(scan)
            and (region, scan) not in self._complete
        )

    def needs(self, region: int, scan: int) -> bool:
        """Whether (region, scan) is still to be tracked in this run: its frames are worth
        reading (False once committed or skipped, for a stopped region, after a stop)."""
        state = self._regions.get(region)
        return (
            state is not None
            and not state.stopped
            and not self._aborted
            and not self._draining
            and scan >= state.next_scan
            and self._within_range(scan)
        )

    def idle_workers(self) -> set[int]:
        """Workers that asked for work and have none."""
        return set(self._idle)

    def waiting_for(self) -> list[tuple[int, int]]:
        """(region, scan) pairs whose frames the run is waiting for, one per idle region."""
        return [
            (region, state.next_scan)
            for region, state in self._regions.items()
            if not state.in_flight
            and not state.stopped
            and self._within_range(state.next_scan)
            and (region, state.next_scan) not in self._complete
        ]

    # State -------------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        return sum(state.in_flight for state in self._regions.values())

    @property
    def draining(self) -> bool:
        return self._draining

    @property
    def aborted(self) -> bool:
        return self._aborted

    @property
    def finished(self) -> bool:
        if self.in_flight:
            return False
        if self._aborted or self._draining:
            return True
        return all(
            state.stopped or not self._within_range(state.next_scan)
            for state in self._regions.values()
        )

    def unfinished(self) -> list[tuple[int, int]]:
        """(region, next scan) of regions that did not reach the last scan (none if open-ended)."""
        if self.last_scan is None:
            return []
        return [
            (region, state.next_scan)
            for region, state in self._regions.items()
            if not state.stopped and state.next_scan <= self.last_scan
        ]

    @property
    def stopped_regions(self) -> list[int]:
        return [region for region, state in self._regions.items() if state.stopped]

    @property
    def total_jobs(self) -> int | None:
        """Jobs this run had to do when it started (None when open-ended)."""
        return self._total_jobs

    # Internals ---------------------------------------------------------------------

    def _finish(self, job: Job, worker: int) -> _RefRegion:
        state = self._regions[job.region]
        if not state.in_flight or state.next_scan != job.scan:
            raise ValueError(
                f"region {job.region} scan {job.scan} is not in flight "
                f"(region is at scan {state.next_scan})"
            )
        state.in_flight = False
        state.next_scan = job.scan + 1
        self._busy.discard(worker)
        return state

    def _is_ready(self, region: int, state: _RefRegion) -> bool:
        return (
            not state.in_flight
            and not state.stopped
            and self._within_range(state.next_scan)
            and (region, state.next_scan) in self._complete
        )

    def _within_range(self, scan: int) -> bool:
        return self.last_scan is None or scan <= self.last_scan

    def _pick_idle(self) -> int:
        # Prefer an idle worker that owns no region with work pending soon, so
        # affinity survives; otherwise the longest-waiting worker.
        owners = {s.owner for s in self._regions.values() if not s.stopped}
        for worker in self._idle:
            if worker not in owners:
                return worker
        return self._idle[0]

    def _max_scan_seen(self) -> int:
        return max(s.next_scan for s in self._regions.values())


def observe(s) -> tuple:
    return (
        s.in_flight,
        s.finished,
        s.idle_workers(),
        s.waiting_for(),
        s.unfinished(),
        s.stopped_regions,
    )


@pytest.mark.parametrize("seed", range(40))
def test_the_scheduler_decides_as_the_reference(seed: int) -> None:
    rng = random.Random(seed)
    regions = rng.sample(range(100), rng.randint(1, 8))
    first = rng.randint(0, 3)
    last = rng.choice([None, first + rng.randint(0, 6)])
    committed = {r: rng.randint(first - 2, first + 3) for r in regions if rng.random() < 0.3}
    policy: FailurePolicy = rng.choice(["skip", "stop_region", "abort"])
    args = dict(
        regions=regions, first_scan=first, last_scan=last, committed=committed, on_failure=policy
    )
    new, ref = Scheduler(**args), ReferenceScheduler(**args)
    workers = list(range(1, rng.randint(2, 5)))
    running: list[tuple[int, Job]] = []
    drain_at = rng.choice([None, None, rng.randrange(500)])
    for step in range(500):
        event = rng.random()
        if event < 0.4:
            region = rng.choice([*regions, 999])
            state = ref._regions.get(region)
            near = state.next_scan if state is not None else first
            pair = (region, near + rng.choice([-1, 0, 0, 0, 1, 2]))
            new.frames_complete(*pair)
            ref.frames_complete(*pair)
        elif event < 0.6:
            worker = rng.choice(workers)
            if all(w != worker for w, _ in running):
                new.worker_idle(worker)
                ref.worker_idle(worker)
        elif event < 0.9 and running:
            worker, job = running.pop(rng.randrange(len(running)))
            if rng.random() < 0.8:
                new.job_done(job, worker)
                ref.job_done(job, worker)
            else:
                new.job_failed(job, worker)
                ref.job_failed(job, worker)
        if step == drain_at:
            new.drain()
            ref.drain()
        got = new.assign()
        assert got == ref.assign()
        running.extend(got)
        assert new.scans_completed() == ref.scans_completed()
        assert observe(new) == observe(ref)
