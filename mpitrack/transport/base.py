"""The messages roles exchange and the links that carry them.

A link is the only thing a role loop knows about its peers; the loops never
import mpi4py or redis. Messages are small frozen dataclasses; over MPI they
are pickled, which is fine inside one MPI job (nothing from Redis, files or
the network is ever unpickled: the Redis transport encodes them as JSON).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from mpitrack.schedule import Job


@dataclass(frozen=True)
class JobRequest:
    """A worker is idle and asks for a job."""

    worker: int


@dataclass(frozen=True)
class JobReport:
    """The outcome of one job.

    seconds: wall time of the whole job on the worker (load, track, commit);
    compute_seconds: the tracker's part of it.
    """

    worker: int
    job: Job
    ok: bool
    rows: int = 0
    seconds: float = 0.0
    compute_seconds: float = 0.0
    error: str | None = None
    file: str | None = None


WorkerMessage = JobRequest | JobReport


class DispatcherLink(Protocol):
    """The dispatcher's side: workers ask and report, the dispatcher answers."""

    @property
    def workers(self) -> Sequence[int]: ...

    def receive(self, timeout: float) -> list[WorkerMessage]:
        """Messages from workers, waiting up to ``timeout`` seconds for the first one."""
        ...

    def send_job(self, worker: int, job: Job) -> None: ...

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

    def report(self, report: JobReport) -> None: ...


class StatsLink(Protocol):
    def next_scan(self) -> int | None:
        """Wait for the next complete scan; None means stop."""
        ...
