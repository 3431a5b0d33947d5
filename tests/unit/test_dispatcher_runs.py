"""The dispatcher loop over an in-memory registry and a link that answers at once:
frames of unknown regions, scans completed before the run."""

from __future__ import annotations

import logging

import pytest

from mpitrack.frames import FrameKey
from mpitrack.registry import MemoryRegistry
from mpitrack.roles.dispatcher import Dispatcher
from mpitrack.schedule import Job, Scheduler
from mpitrack.transport.base import JobReport, JobRequest, WorkerMessage


class OneWorker:
    """A link to one worker that reports every job done at once."""

    workers = (1,)

    def __init__(self) -> None:
        self.inbox: list[WorkerMessage] = [JobRequest(1)]
        self.jobs: list[Job] = []
        self.scans: list[int] = []

    def receive(self, timeout: float) -> list[WorkerMessage]:
        messages, self.inbox = self.inbox, []
        return messages

    def send_job(self, worker: int, job: Job, volume=None) -> None:
        self.jobs.append(job)
        self.inbox += [JobReport(worker, job, ok=True), JobRequest(worker)]

    def send_stop(self, worker: int) -> None:
        pass

    def scan_complete(self, scan: int) -> None:
        self.scans.append(scan)

    def close(self) -> None:
        pass


def test_frames_of_a_region_not_in_the_config_are_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = MemoryRegistry()
    registry.add([FrameKey(0, f, s) for f in (1, 2) for s in (0, 1)])
    registry.add([FrameKey(7, 1, s) for s in (0, 1)])  # region 7: not configured
    link = OneWorker()
    dispatcher = Dispatcher(
        scheduler=Scheduler([0], 0, 1),
        registry=registry,
        link=link,
        windows={0: (1, 2)},
        poll_interval=0.01,
    )
    with caplog.at_level(logging.WARNING, logger="mpitrack.roles.dispatcher"):
        summary = dispatcher.run()
    assert summary.ok and [(j.region, j.scan) for j in link.jobs] == [(0, 0), (0, 1)]
    warnings = [r.getMessage() for r in caplog.records if "region 7" in r.getMessage()]
    assert len(warnings) == 1 and "config has no region 7" in warnings[0]


def test_scans_complete_before_the_run_are_announced_for_their_statistics() -> None:
    registry = MemoryRegistry()
    registry.add([FrameKey(r, 1, 3) for r in (0, 1)])
    link = OneWorker()
    dispatcher = Dispatcher(
        scheduler=Scheduler([0, 1], 0, 3, committed={0: 2, 1: 2}),
        registry=registry,
        link=link,
        windows={0: (1,), 1: (1,)},
        poll_interval=0.01,
    )
    assert dispatcher.run().ok
    assert link.scans == [0, 1, 2, 3]
