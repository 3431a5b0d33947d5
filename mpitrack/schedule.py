"""Pure scheduling: which (region, scan) job runs next, where, and when a run is over.

No I/O here: the dispatcher feeds in what it learns (frames complete, workers
idle, jobs done or failed) and carries out what comes back. The rules:

- A job (region, scan) is ready when all frames of the region's omega window
  are registered for that scan and the region's previous scan is finished
  (committed, or failed and skipped).
- A region has at most one job in flight; its scans finish in order.
- A region sticks to the worker that last ran it (that worker holds its
  tracker state in memory); another idle worker takes it only when the owner
  is busy, and then loads the checkpoint.
- Ready jobs of older scans go first, so scans complete in order and the
  statistics can follow the experiment.
- The run is over when every region is finished through the last scan (or
  stopped), or, after `drain()`, as soon as nothing is in flight.

Every event and every question costs O(log regions) or less, not a pass over
the regions: at 10,000 regions the dispatcher asks several of them for each
job, and passes over the regions made scheduling, not tracking, the limit.
Only the reports for a stalled or ended run (`waiting_for`, `unfinished`,
`stopped_regions`) look at every region.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

FailurePolicy = Literal["skip", "stop_region", "abort"]


@dataclass(frozen=True)
class Job:
    """One tracking step to run.

    after_scan: the region's last committed scan (None: nothing committed yet).
    Scans between after_scan and scan failed and were skipped: the worker
    steps its tracker through them without data before running ``scan``.
    """

    region: int
    scan: int
    after_scan: int | None


@dataclass
class _Region:
    next_scan: int
    last_committed: int | None
    owner: int | None = None
    in_flight: bool = False
    stopped: bool = False


@dataclass
class Scheduler:
    """Scheduling state of one run.

    regions: region ids; first_scan/last_scan: inclusive range (last None: open-ended);
    committed: last committed scan per region (from the checkpoints, on resume).
    """

    regions: Iterable[int]
    first_scan: int
    last_scan: int | None
    committed: Mapping[int, int] = field(default_factory=dict)
    on_failure: FailurePolicy = "skip"

    def __post_init__(self) -> None:
        self._regions: dict[int, _Region] = {}
        for region in sorted(set(self.regions)):
            last = self.committed.get(region)
            start = self.first_scan if last is None else max(last + 1, self.first_scan)
            self._regions[region] = _Region(next_scan=start, last_committed=last)
        if not self._regions:
            raise ValueError("a run needs at least one region")
        self._complete: set[tuple[int, int]] = set()
        self._idle: list[int] = []
        self._busy: set[int] = set()
        self._aborted = False
        self._draining = False
        # Candidates for assign: (next scan, region) pushed when a region may have
        # become ready; entries that went stale are dropped when they come up.
        self._ready: list[tuple[int, int]] = []
        self._in_flight = 0
        # Owners of regions that are not stopped (for affinity), per worker.
        self._owners: Counter[int] = Counter()
        # Regions neither stopped nor past the last scan: the run is over at 0.
        self._open = sum(self._is_open(state) for state in self._regions.values())
        # Next scans of the regions that are not stopped, and the lowest of them
        # (it only grows: next scans grow and regions only leave).
        self._live = len(self._regions)
        self._live_next: Counter[int] = Counter(s.next_scan for s in self._regions.values())
        self._lowest_live = min(self._live_next)
        self._highest_next = max(self._live_next)
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
            if scan == state.next_scan:
                self._push_if_ready(region, state)

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
            self._stop(state)
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
        assigned: list[tuple[int, Job]] = []
        while self._ready and self._idle:
            scan, region = heapq.heappop(self._ready)
            state = self._regions[region]
            if scan != state.next_scan or not self._is_ready(region, state):
                continue  # stale: assigned, finished or stopped since it was pushed
            worker = state.owner if state.owner in self._idle else self._pick_idle()
            self._idle.remove(worker)
            self._busy.add(worker)
            state.in_flight = True
            self._in_flight += 1
            self._set_owner(state, worker)
            job = Job(region, state.next_scan, state.last_committed)
            self._complete.discard((region, state.next_scan))
            assigned.append((worker, job))
        return assigned

    def scans_completed(self) -> list[int]:
        """Scans newly finished for every region since the last call, in order; the
        first call includes the scans finished before this run."""
        done_through = (self._lowest_live_scan() if self._live else self._highest_next) - 1
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
        return self._in_flight

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
        return self._open == 0

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

    def _finish(self, job: Job, worker: int) -> _Region:
        state = self._regions[job.region]
        if not state.in_flight or state.next_scan != job.scan:
            raise ValueError(
                f"region {job.region} scan {job.scan} is not in flight "
                f"(region is at scan {state.next_scan})"
            )
        was_open = self._is_open(state)
        state.in_flight = False
        self._in_flight -= 1
        self._live_next[state.next_scan] -= 1
        state.next_scan = job.scan + 1
        self._live_next[state.next_scan] += 1
        self._highest_next = max(self._highest_next, state.next_scan)
        self._open += self._is_open(state) - was_open
        self._busy.discard(worker)
        self._push_if_ready(job.region, state)
        return state

    def _stop(self, state: _Region) -> None:
        """The region takes no more jobs (failure policy stop_region)."""
        self._open -= self._is_open(state)
        if state.owner is not None:
            self._owners[state.owner] -= 1
        self._live -= 1
        self._live_next[state.next_scan] -= 1
        state.stopped = True

    def _set_owner(self, state: _Region, worker: int) -> None:
        if state.owner is not None:
            self._owners[state.owner] -= 1
        state.owner = worker
        self._owners[worker] += 1

    def _push_if_ready(self, region: int, state: _Region) -> None:
        if self._is_ready(region, state):
            heapq.heappush(self._ready, (state.next_scan, region))

    def _is_ready(self, region: int, state: _Region) -> bool:
        return (
            not state.in_flight
            and not state.stopped
            and self._within_range(state.next_scan)
            and (region, state.next_scan) in self._complete
        )

    def _is_open(self, state: _Region) -> bool:
        return not state.stopped and self._within_range(state.next_scan)

    def _within_range(self, scan: int) -> bool:
        return self.last_scan is None or scan <= self.last_scan

    def _pick_idle(self) -> int:
        # Prefer an idle worker that owns no region with work pending soon, so
        # affinity survives; otherwise the longest-waiting worker.
        for worker in self._idle:
            if self._owners[worker] == 0:
                return worker
        return self._idle[0]

    def _lowest_live_scan(self) -> int:
        while self._live_next[self._lowest_live] <= 0:
            del self._live_next[self._lowest_live]
            self._lowest_live += 1
        return self._lowest_live
