"""In-process link: every role in one process (MPI size 1, debugging, tiny data).

Sending a job runs it at once on the in-process worker; its report and its
next request are queued for the dispatcher's next receive.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np

from mpitrack.schedule import Job
from mpitrack.transport.base import JobReport, JobRequest, WorkerMessage

# The worker id of the one in-process worker.
LOCAL_WORKER = 1


class LocalLink:
    def __init__(
        self,
        run_job: Callable[[Job, np.ndarray | None], JobReport],
        stats: Callable[[int], None] | None,
    ) -> None:
        self.run_job = run_job
        self.stats = stats
        self._queue: list[WorkerMessage] = [JobRequest(LOCAL_WORKER)]

    @property
    def workers(self) -> Sequence[int]:
        return (LOCAL_WORKER,)

    def receive(self, timeout: float) -> list[WorkerMessage]:
        if not self._queue:
            time.sleep(timeout)  # nothing can arrive meanwhile: the worker is us
        messages, self._queue = self._queue, []
        return messages

    def send_job(self, worker: int, job: Job, volume: np.ndarray | None = None) -> None:
        self._queue.append(self.run_job(job, volume))
        self._queue.append(JobRequest(LOCAL_WORKER))

    def send_stop(self, worker: int) -> None:
        """Nothing to stop: the worker lives in this process."""

    def scan_complete(self, scan: int) -> None:
        if self.stats is not None:
            self.stats(scan)

    def close(self) -> None:
        """Nothing to close."""
