"""The messages roles exchange and the links that carry them.

A link is the only thing a role loop knows about its peers; the loops never
import mpi4py or redis. Messages are small frozen dataclasses; over MPI they
are pickled, which is fine inside one MPI job (nothing from Redis, files or
the network is ever unpickled: the Redis transport encodes them as JSON).
A job may carry its region's volume (in-memory fan-out of detector frames,
docs/detector.md): over MPI that is a buffer send of the array after the job,
never pickled; the Redis links carry none (process mode reads frame files).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from mpitrack.schedule import Job


@dataclass(frozen=True)
class JobRequest:
    """A worker is idle and asks for a job."""

    worker: int


@dataclass(frozen=True)
class JobReport:
    """The outcome of one job.

    seconds: wall time of the whole job on the worker (load, track, commit);
    compute_seconds: the tracker's part of it;
    rejected: what detection refused (zingers, hot_pixels, masked_voxels).
    """

    worker: int
    job: Job
    ok: bool
    rows: int = 0
    seconds: float = 0.0
    compute_seconds: float = 0.0
    error: str | None = None
    file: str | None = None
    rejected: dict[str, int] = field(default_factory=dict)


WorkerMessage = JobRequest | JobReport


class DispatcherLink(Protocol):
    """The dispatcher's side: workers ask and report, the dispatcher answers."""

    @property
    def workers(self) -> Sequence[int]: ...

    def receive(self, timeout: float) -> list[WorkerMessage]:
        """Messages from workers, waiting up to ``timeout`` seconds for the first one."""
        ...

    def send_job(self, worker: int, job: Job, volume: np.ndarray | None = None) -> None:
        """Hand ``job`` to ``worker``, with its volume when rank 0 cut it in memory."""
        ...

    def send_stop(self, worker: int) -> None: ...

    def scan_complete(self, scan: int) -> None:
        """Tell the statistics role that ``scan`` is complete for all regions."""
        ...

    def close(self) -> None:
        """Tell the statistics role to finish."""
        ...


class WorkerLink(Protocol):
    def next_job(self) -> Job | None:
        """Ask for work and wait; None means stop."""
        ...

    def volume(self) -> np.ndarray | None:
        """The volume that came with the job ``next_job`` returned last; None: the
        worker loads the job's frames from files."""
        ...

    def report(self, report: JobReport) -> None: ...


class StatsLink(Protocol):
    def next_scan(self) -> int | None:
        """Wait for the next complete scan; None means stop."""
        ...
