"""The Dispatcher loop itself, without MPI or Redis: frames arrive through a scripted
feed, workers through a scripted link, and every dispatch is checked as it happens.

Readiness across the omega wrap (a window [F-3, 2] needs the end of the scan and
its beginning, of the same scan number), one job per region in flight, and the
order of jobs (a region's scans in order, older scans first).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from mpitrack.frames import FrameKey
from mpitrack.regions import omega_window
from mpitrack.registry import MemoryRegistry
from mpitrack.roles.dispatcher import Dispatcher, RunSummary
from mpitrack.schedule import Job, Scheduler
from mpitrack.transport.base import JobReport, JobRequest, WorkerMessage

FRAMES_PER_SCAN = 36
# Loops of the dispatcher after which a test gives up (a loop that never ends
# must fail, not hang).
MAX_LOOPS = 5_000


@dataclass
class ScriptedFeed:
    """A frame feed that hands out one batch per poll, in the order given."""

    batches: list[list[FrameKey]]
    delivered: list[FrameKey] = field(default_factory=list)

    def poll(self) -> list[FrameKey]:
        if not self.batches:
            return []
        batch = self.batches.pop(0)
        self.delivered.extend(batch)
        return batch


@dataclass(frozen=True)
class Dispatch:
    worker: int
    job: Job
    frames_seen: int  # how many frames the feed had delivered when the job was sent


class ScriptedLink:
    """A DispatcherLink whose workers are the test: every worker asks for work at the
    start; ``script`` runs before each receive and finishes jobs with `finish`."""

    def __init__(
        self,
        workers: tuple[int, ...],
        feed: ScriptedFeed,
        script: Callable[[ScriptedLink], None],
    ) -> None:
        self._workers = workers
        self.feed = feed
        self.script = script
        self.inbox: list[WorkerMessage] = [JobRequest(w) for w in workers]
        self.dispatches: list[Dispatch] = []
        self.outstanding: list[tuple[int, Job]] = []
        self.stopped: list[int] = []
        self.scans_completed: list[int] = []
        self.closed = False
        self.loops = 0

    @property
    def workers(self) -> tuple[int, ...]:
        return self._workers

    def receive(self, timeout: float) -> list[WorkerMessage]:
        self.loops += 1
        assert self.loops < MAX_LOOPS, f"the dispatcher did not finish: {self.dispatches}"
        self.script(self)
        messages, self.inbox = self.inbox, []
        return messages

    def send_job(self, worker: int, job: Job, volume=None) -> None:
        busy = [j for _, j in self.outstanding if j.region == job.region]
        assert not busy, f"{job} sent while {busy[0]} of the same region is in flight"
        self.dispatches.append(Dispatch(worker, job, len(self.feed.delivered)))
        self.outstanding.append((worker, job))

    def finish(self, ok: bool = True) -> None:
        """The worker of the oldest outstanding job reports it and asks again."""
        worker, job = self.outstanding.pop(0)
        self.inbox += [JobReport(worker, job, ok=ok), JobRequest(worker)]

    def send_stop(self, worker: int) -> None:
        self.stopped.append(worker)

    def scan_complete(self, scan: int) -> None:
        self.scans_completed.append(scan)

    def close(self) -> None:
        self.closed = True


def finish_everything(link: ScriptedLink) -> None:
    while link.outstanding:
        link.finish()


def run(
    windows: dict[int, tuple[int, ...]],
    batches: list[list[FrameKey]],
    last_scan: int,
    workers: tuple[int, ...],
    script: Callable[[ScriptedLink], None] = finish_everything,
) -> tuple[RunSummary, ScriptedLink]:
    feed = ScriptedFeed(batches)
    link = ScriptedLink(workers, feed, script)
    dispatcher = Dispatcher(
        scheduler=Scheduler(windows, 0, last_scan),
        registry=MemoryRegistry(),
        link=link,
        windows=windows,
        scanner=feed,
        poll_interval=0.0,  # poll the feed on every loop: one batch per loop
    )
    summary = dispatcher.run()
    return summary, link


def detector_order(windows: dict[int, tuple[int, ...]], scans: range) -> list[list[FrameKey]]:
    """One batch per detector frame, scan after scan: the keys of every region whose
    window holds that frame, as a producer writing frames in omega order makes them."""
    return [
        [FrameKey(region, frame, scan) for region, window in windows.items() if frame in window]
        for scan in scans
        for frame in range(FRAMES_PER_SCAN)
    ]


def frames_until(batches: list[list[FrameKey]], frame: int, scan: int) -> int:
    """Frames delivered once the batch of (frame, scan) has been delivered."""
    count = 0
    for batch in batches:
        count += len(batch)
        if batch and (batch[0].frame, batch[0].scan) == (frame, scan):
            return count
    raise AssertionError(f"frame {frame} of scan {scan} is never delivered")


def test_a_wrapping_region_is_ready_only_when_both_ends_of_its_scan_have_arrived() -> None:
    wrapping = omega_window(FRAMES_PER_SCAN - 3, 2, FRAMES_PER_SCAN)  # 33, 34, 35, 0, 1, 2
    plain = omega_window(10, 15, FRAMES_PER_SCAN)
    windows = {0: wrapping, 1: plain}
    batches = detector_order(windows, range(3))
    summary, link = run(windows, [list(b) for b in batches], last_scan=2, workers=(1, 2))
    assert summary.ok and summary.jobs_done == 6
    sent = {(d.job.region, d.job.scan): d.frames_seen for d in link.dispatches}
    for scan in range(3):
        # The plain region goes as soon as its last frame (15) is in.
        assert sent[(1, scan)] == frames_until(batches, 15, scan)
        # The wrapping one needs frame 35 of the same scan: frames 0..2 of the next
        # scan (which arrive later) or of this scan (earlier) are not enough.
        assert sent[(0, scan)] == frames_until(batches, FRAMES_PER_SCAN - 1, scan)
    assert [d.job for d in link.dispatches if d.job.region == 0] == [
        Job(0, 0, None),
        Job(0, 1, 0),
        Job(0, 2, 1),
    ]
    assert link.scans_completed == [0, 1, 2]


def test_a_wrapping_region_waits_for_a_missing_frame_at_the_start_of_its_window() -> None:
    """Frame 0 of scan 1 is late (it comes after the rest of scan 1): region 0's
    scan-1 job waits for it, although frame 0 of scans 0 and 2 is there."""
    wrapping = omega_window(FRAMES_PER_SCAN - 3, 2, FRAMES_PER_SCAN)
    windows = {0: wrapping}
    batches = detector_order(windows, range(3))
    late = FrameKey(0, 0, 1)
    batches = [[k for k in b if k != late] for b in batches] + [[late]]
    summary, link = run(windows, [list(b) for b in batches], last_scan=2, workers=(1,))
    assert summary.ok
    sent = {d.job.scan: d.frames_seen for d in link.dispatches}
    everything = sum(len(b) for b in batches)
    assert sent[1] == everything, "scan 1 was dispatched before its frame 0 arrived"
    assert sent[2] == everything, "scan 2 must wait for scan 1"
    assert sent[0] < everything


def test_one_job_per_region_in_flight_even_when_its_frames_are_registered_again() -> None:
    """Every frame is there from the start, three workers ask for work, and the frames
    are registered again and again while jobs are out (a listener and rank 0 both
    registering, a registry resynchronising): each region still gets one job at a
    time (ScriptedLink.send_job asserts it), its scans in order."""
    windows = {0: omega_window(0, 4, FRAMES_PER_SCAN), 1: omega_window(20, 24, FRAMES_PER_SCAN)}
    everything = [key for batch in detector_order(windows, range(4)) for key in batch]

    def one_report_every_other_loop(link: ScriptedLink) -> None:
        if link.loops % 2 == 0 and link.outstanding:
            link.finish()

    summary, link = run(
        windows, [everything] * 20, 3, workers=(1, 2, 3), script=one_report_every_other_loop
    )
    assert summary.ok and summary.jobs_done == 8
    registered = len(link.feed.delivered) / len(everything)
    assert registered >= 5, f"the frames were registered only {registered} times during the run"
    jobs = [d.job for d in link.dispatches]
    for region in windows:
        scans = [j for j in jobs if j.region == region]
        assert scans == [Job(region, s, None if s == 0 else s - 1) for s in range(4)]
    assert sorted(link.stopped) == [1, 2, 3] and link.closed
    assert link.scans_completed == [0, 1, 2, 3]


@pytest.mark.parametrize("ahead", [0, 1])
def test_a_ready_job_of_an_older_scan_goes_first(ahead: int) -> None:
    """One worker. Region ``ahead`` has run scans 0..2 when the other region's frames
    of scans 0..3 arrive together with its own scan 3: the worker gets the other
    region's scans 0..2 first (older), then the two scan-3 jobs, whichever region id
    is behind."""
    behind = 1 - ahead
    windows = {0: omega_window(0, 4, FRAMES_PER_SCAN), 1: omega_window(20, 24, FRAMES_PER_SCAN)}
    frames = {(r, s): [FrameKey(r, f, s) for f in windows[r]] for r in windows for s in range(4)}
    first = [k for s in range(3) for k in frames[(ahead, s)]]
    rest = [k for s in range(4) for k in frames[(behind, s)]] + frames[(ahead, 3)]

    def then_the_rest(link: ScriptedLink) -> None:
        finish_everything(link)
        if rest and [d.job.scan for d in link.dispatches] == [0, 1, 2]:
            link.feed.batches.append(list(rest))
            rest.clear()

    summary, link = run(windows, [first], 3, workers=(1,), script=then_the_rest)
    assert summary.ok and summary.jobs_done == 8
    order = [(d.job.region, d.job.scan) for d in link.dispatches]
    assert order[:6] == [(ahead, 0), (ahead, 1), (ahead, 2), (behind, 0), (behind, 1), (behind, 2)]
    assert sorted(order[6:]) == [(0, 3), (1, 3)]


@pytest.mark.parametrize("slow_region", [0, 1])
def test_a_slow_region_holds_back_only_its_own_scans(slow_region: int) -> None:
    """The fast region runs ahead while the slow region's job is out; the slow one's
    next job is sent only after its report, and scans complete only when both are
    through them."""
    windows = {0: omega_window(0, 4, FRAMES_PER_SCAN), 1: omega_window(20, 24, FRAMES_PER_SCAN)}
    everything = [key for batch in detector_order(windows, range(3)) for key in batch]
    held: list[int] = []

    def hold_the_slow_regions_first_job(link: ScriptedLink) -> None:
        fast_done = sum(1 for d in link.dispatches if d.job.region != slow_region) - sum(
            1 for _, j in link.outstanding if j.region != slow_region
        )
        for worker, job in list(link.outstanding):
            if job.region == slow_region and job.scan == 0 and fast_done < 3:
                held.append(len(link.scans_completed))
                continue
            link.outstanding.remove((worker, job))
            link.inbox += [JobReport(worker, job, ok=True), JobRequest(worker)]

    summary, link = run(windows, [everything], 2, (1, 2), hold_the_slow_regions_first_job)
    assert summary.ok and summary.jobs_done == 6
    order = [(d.job.region, d.job.scan) for d in link.dispatches]
    fast = 1 - slow_region
    assert order.index((fast, 2)) < order.index((slow_region, 1)), order
    assert held and set(held) == {0}, "a scan was complete while the slow region held scan 0"
    assert link.scans_completed == [0, 1, 2]
